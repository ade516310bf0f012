"""A store not yet upgraded speaks protocol 1: the central server reads its uploads as the typed
operations an upgraded store sends, and books them the same; it tells the store to upgrade before
it follows the change feed, so such a store stops redeeming within the hour but loses no sale.

The operations are the ones release v0.1.0 recorded and never uploaded
(``tests/fixtures/v0_1_0``), over the central database that release wrote.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from central import schema
from central.api import DB_KEY
from central.app import create_app
from central.config import CentralConfig
from central.db import Database
from central.invariants import check_invariants
from shared.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION, STORE_HEADER, Op
from shared.protocol_v1 import operation_from_v1
from tests.central.conftest import ClientFactory
from tests.e2e.test_upgrade_v0_1_0 import FIXTURE, restore


def unsent_v1_ops(tmp_path: Path) -> list[dict[str, Any]]:
    """The release's operations after its acknowledged ones, as it would upload them."""
    path = tmp_path / "agent.sqlite3"
    restore("agent.sql", path)
    with sqlite3.connect(path) as conn:
        (acked,) = conn.execute("SELECT value FROM meta WHERE key = 'acked_seq'").fetchone()
        rows = conn.execute(
            "SELECT seq, op_id, kind, card, created_at, payload FROM journal WHERE seq > ? "
            "ORDER BY seq",
            (json.loads(acked),),
        ).fetchall()
    return [
        {
            "seq": seq,
            "op_id": op_id,
            "kind": kind,
            "card": card,
            "created_at": created_at,
            "payload": json.loads(payload),
        }
        for seq, op_id, kind, card, created_at, payload in rows
    ]


async def central_of_release(tmp_path: Path, name: str, aiohttp_client: ClientFactory) -> Any:
    path = tmp_path / name / "central.sqlite3"
    restore("central.sql", path)
    config = CentralConfig(database_url=f"sqlite+aiosqlite:///{path}")
    return await aiohttp_client(create_app(config, run_expiry=False))


def headers(version: int) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {(FIXTURE / 'token.txt').read_text().strip()}",
        STORE_HEADER: "s1",
        PROTOCOL_HEADER: str(version),
    }


async def lots_of(client: Any) -> list[tuple[str, int, int]]:
    async with _db(client).read() as conn:
        rows = await conn.execute(
            sa.select(
                schema.lots.c.card, schema.lots.c.amount_kop, schema.lots.c.remaining_kop
            ).order_by(schema.lots.c.lot_id)
        )
        return [tuple(row) for row in rows.all()]


def _db(client: Any) -> Database:
    return client.app[DB_KEY]


async def test_protocol_1_uploads_are_booked_as_an_upgraded_store_would_be(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    ops = unsent_v1_ops(tmp_path)
    assert [op["kind"] for op in ops] == [
        "sale", "return", "hold", "hold", "hold_release", "register", "sale",
    ]  # fmt: skip
    old = await central_of_release(tmp_path, "v1", aiohttp_client)

    hello = await old.get("/sync/v1/hello", headers=headers(1))
    body = await hello.json()
    assert hello.status == 200, body
    assert set(body) == {  # protocol 1's greeting, field for field
        "protocol_min", "protocol_max", "server_time", "store_id", "phone_key",
        "last_applied_seq", "head_cursor",
    }  # fmt: skip
    assert body["last_applied_seq"] == 4

    answer = await old.post("/sync/v1/upload", json={"ops": ops}, headers=headers(1))
    result = await answer.json()
    assert answer.status == 200, result
    assert result["acked_seq"] == 11
    assert [(r["seq"], r["status"]) for r in result["results"]] == [
        (op["seq"], "applied") for op in ops
    ]
    # Protocol 1's result, without the fields it does not know.
    assert {key for r in result["results"] for key in r} == {
        "seq", "op_id", "status", "reason", "debt_added_kop",
    }  # fmt: skip

    # The change feed is for the current protocol: such a store is told to upgrade.
    feed = await old.get("/sync/v1/changes", params={"cursor": "0"}, headers=headers(1))
    refused = await feed.json()
    assert feed.status == 426, refused
    assert refused["error"]["code"] == "protocol_version"

    # The same operations as an upgraded store sends them: the same ledger.
    new = await central_of_release(tmp_path, "v2", aiohttp_client)
    typed = [
        Op(
            seq=op["seq"],
            op_id=op["op_id"],
            created_at=op["created_at"],
            operation=operation_from_v1(op["kind"], op["payload"]),
        ).model_dump(mode="json")
        for op in ops
    ]
    answer = await new.post(
        "/sync/v1/upload", json={"ops": typed}, headers=headers(PROTOCOL_VERSION)
    )
    result = await answer.json()
    assert answer.status == 200, result
    assert all(not r["differences"] for r in result["results"]), result
    assert await lots_of(old) == await lots_of(new)
    for client in (old, new):
        async with _db(client).read() as conn:
            report = await check_invariants(conn)
        assert report.ok, report.problems


async def test_a_protocol_1_operation_that_cannot_be_read_is_refused_naming_it(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    ops = unsent_v1_ops(tmp_path)
    del ops[0]["payload"]["day"]
    client = await central_of_release(tmp_path, "v1", aiohttp_client)
    answer = await client.post("/sync/v1/upload", json={"ops": ops}, headers=headers(1))
    body = await answer.json()
    assert answer.status == 422, body
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"]["seq"] == 5
    assert body["error"]["details"]["errors"][0]["field"] == "day"
    async with _db(client).read() as conn:
        applied = await conn.scalar(
            sa.select(schema.stores.c.last_applied_seq).where(schema.stores.c.store_id == "s1")
        )
    assert applied == 4  # nothing of the batch
