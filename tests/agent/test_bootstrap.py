"""A new store's bootstrap from the snapshot: the fast path stores exactly what the pages of
changes store, refuses malformed lines cleanly, and a round retries until the snapshot is good."""

from __future__ import annotations

import gzip
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent import store
from agent.bootstrap import (
    DateCheck,
    SnapshotError,
    drop_phone_index,
    parse_card,
    store_snapshot_lines,
)
from agent.clock import FakeClock
from agent.context import AgentContext
from agent.db import PHONE_INDEX_SQL, Database
from agent.replica import apply_card_states, base_wallet
from agent.routes import CTX_KEY
from agent.sync import CentralClient, Syncer, SyncError
from central import schema
from central.api import DB_KEY
from central.app import create_app as create_central
from central.db import next_cursor
from central.stores import add_store
from shared.codec import wallet_from_json
from shared.protocol import PROTOCOL_VERSION, CardState, Hello, SnapshotHeader
from shared.settings import ProgramSettings
from tests.agent.conftest import PHONE, Agent, make_config
from tests.phonekeys import central_config

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def state(number: str, **changes: Any) -> CardState:
    """A central card state with two lots, one spent, unless changed."""
    fields: dict[str, Any] = {
        "number": number,
        "barcode": None,
        "status": "active",
        "phone_hash": f"{int(number):064x}",
        "phone_last4": number[-4:],
        "verified": True,
        "debt": 0,
        "lots": [
            {
                "id": f"{number}:a",
                "amount": 1500,
                "remaining": 1500,
                "created_on": "2026-10-01",
                "expires_on": "2027-04-01",
                "active_from": None,
                "source": "purchase",
                "ref": "R-1",
            },
            {
                "id": f"{number}:b",
                "amount": 700,
                "remaining": 0,
                "created_on": "2026-09-01",
                "expires_on": None,
                "active_from": "2026-09-15",
                "source": "campaign",
                "ref": None,
            },
        ],
        "holds": [],
        "last_purchase_on": "2026-10-01",
        "cursor": 7,
    }
    fields.update(changes)
    return CardState.model_validate(fields)


def line(card: CardState, **changes: Any) -> bytes:
    data = card.model_dump(mode="json")
    data.update(changes)
    return json.dumps(data).encode()


def cards_table(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return list(conn.execute("SELECT * FROM cards ORDER BY number"))


async def test_the_fast_path_stores_what_the_pages_of_changes_store(agent: Agent) -> None:
    # A card registered here with a sale not yet uploaded: its pending operations are rebased.
    local = await agent.new_card()
    await agent.credit(local, 20)
    states = [
        state(local, phone_hash=None, phone_last4=None),
        state("2000000001"),
        state(
            "2000000002",
            barcode="B-2",
            status="merged",
            merged_into="2000000001",
            phone_hash=None,
            debt=250,
            lots=[],
            holds=[{"id": "auth:1", "amount": 300, "expires_at": "2026-11-23T09:02:00Z"}],
        ),
        state("2000000003", verified=False, last_purchase_on=None),
    ]
    # Names and references as a store may type them: quotes, backslashes, Cyrillic, a tab.
    states[1].lots[0].ref = 'чек "№1"\\\t'
    ctx = agent.app[CTX_KEY]

    def tables(apply: Callable[[sqlite3.Connection], None]) -> list[tuple[Any, ...]]:
        def write(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            apply(conn)
            return cards_table(conn)

        return write  # type: ignore[return-value]

    acked = 0
    by_models = await ctx.db.write(
        tables(
            lambda conn: apply_card_states(
                conn, states, acked, ctx.clock.now(), ctx.config.store_id
            )
        )
    )
    lines = [state.model_dump_json().encode() for state in states]
    by_lines = await ctx.db.write(
        tables(
            lambda conn: store_snapshot_lines(
                conn, lines, DateCheck(), ctx.clock.now(), ctx.config.store_id
            )
        )
    )
    assert by_lines == by_models
    rows = {row[0]: row for row in by_lines}  # number, …, base (6), wallet (7), …
    # The local sale's accrual is on top of the central lots until the central server has it.
    assert json.loads(rows[local][7]) != json.loads(rows[local][6])
    assert await agent.available(local) == 15 + 20
    assert wallet_from_json(json.loads(rows["2000000002"][6])) == base_wallet(states[2])


BAD_LINES: dict[str, bytes] = {
    "not JSON": b'{"number": "1"',
    "empty": b"",
    "two objects": line(state("2000000001")) + b"," + line(state("2000000002")),
    "an array": b"[]",
    "an unknown field": line(state("2000000001"), points=5),
    "a missing field": line(state("2000000001"), cursor=None).replace(b', "cursor": null', b""),
    "a text debt": line(state("2000000001"), debt="much"),
    "a fractional debt": line(state("2000000001"), debt=1.5),
    "an unknown status": line(state("2000000001"), status="deleted"),
    "lots not a list": line(state("2000000001"), lots={}),
    "a lot without its amount": line(
        state("2000000001"), lots=[{"id": "x", "remaining": 1, "created_on": "2026-01-01"}]
    ),
    "a lot of an unknown source": line(
        state("2000000001"),
        lots=[{**state("2000000001").lots[0].model_dump(), "source": "gift"}],
    ),
    "a lot with a wrong date": line(
        state("2000000001"),
        lots=[{**state("2000000001").lots[0].model_dump(), "expires_on": "2026-02-30"}],
    ),
    "a hold with a wrong time": line(
        state("2000000001"), holds=[{"id": "h", "amount": 1, "expires_at": "soon"}]
    ),
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_a_malformed_line_is_refused(case: str) -> None:
    with pytest.raises(SnapshotError):
        parse_card(BAD_LINES[case], DateCheck())


async def test_a_batch_with_a_malformed_line_stores_nothing(agent: Agent) -> None:
    ctx = agent.app[CTX_KEY]
    lines = [line(state("2000000001")), BAD_LINES["an unknown field"], line(state("2000000003"))]
    with pytest.raises(SnapshotError, match="points"):
        await ctx.db.write(
            lambda conn: store_snapshot_lines(
                conn, lines, DateCheck(), ctx.clock.now(), ctx.config.store_id
            )
        )
    assert store.count_cards(ctx.db.reader) == 0


def test_a_line_may_leave_out_what_the_message_has_a_default_for() -> None:
    data = state("2000000001").model_dump(mode="json")
    del data["merged_into"]
    assert parse_card(json.dumps(data).encode(), DateCheck())["number"] == "2000000001"


def test_dates_are_taken_as_the_wallet_reads_them() -> None:
    card = parse_card(
        line(
            state("2000000001"),
            lots=[{**state("2000000001").lots[0].model_dump(), "expires_on": ""}],
            holds=[{"id": "h", "amount": 1, "expires_at": "2026-11-23T09:02:00Z"}],
        ),
        DateCheck(),
    )
    assert card["lots"][0]["expires_on"] is None
    assert card["holds"][0]["expires_at"] == "2026-11-23T09:02:00+00:00"


# --- a round against a central server -----------------------------------------------------------


class FakeCentral:
    """Answers hello, the snapshot (whatever bytes it is given) and an empty feed."""

    def __init__(self) -> None:
        self.snapshot = b""
        self.snapshots_served = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/sync/v1/hello", self.hello)
        app.router.add_get("/sync/v1/snapshot", self.serve_snapshot)
        app.router.add_get("/sync/v1/changes", self.changes)
        return app

    async def hello(self, request: web.Request) -> web.Response:
        hello = Hello(
            protocol_min=PROTOCOL_VERSION,
            protocol_max=PROTOCOL_VERSION,
            server_time=NOW,
            store_id="s1",
            phone_key_id="0badc0de",
            last_applied_seq=0,
            head_cursor=40,
        )
        return web.json_response(text=hello.model_dump_json())

    async def serve_snapshot(self, request: web.Request) -> web.StreamResponse:
        self.snapshots_served += 1
        response = web.StreamResponse(headers={"Content-Encoding": "gzip"})
        await response.prepare(request)
        await response.write(self.snapshot)
        await response.write_eof()
        return response

    async def changes(self, request: web.Request) -> web.Response:
        cursor = int(request.query["cursor"])
        return web.json_response(
            {
                "cards": [],
                "settings": None,
                "next_cursor": cursor,
                "next_card": None,
                "more": False,
                "head_cursor": cursor,
                "server_time": NOW.isoformat(),
            }
        )


def snapshot_bytes(lines: list[bytes], cursor: int = 40) -> bytes:
    header = SnapshotHeader(
        cursor=cursor,
        settings=ProgramSettings(version=3),
        cards=len(lines),
        server_time=NOW,
    )
    return gzip.compress(b"\n".join([header.model_dump_json().encode(), *lines]) + b"\n")


@asynccontextmanager
async def syncer_for(tmp_path: Path, url: str, token: str) -> AsyncIterator[Syncer]:
    """A store's sync machinery without the app (no background loop)."""
    config = make_config(tmp_path / "agent", store_id="s1", central_url=url, central_token=token)
    db = Database(config.db_path)
    await db.open()
    ctx = AgentContext(config=config, db=db, clock=FakeClock())
    await ctx.load()
    try:
        async with aiohttp.ClientSession() as session:
            yield Syncer(ctx, CentralClient(ctx, session))
    finally:
        await db.close()


async def test_a_refused_snapshot_fails_the_round_and_the_next_round_bootstraps(
    tmp_path: Path,
) -> None:
    fake = FakeCentral()
    server = TestServer(fake.app())
    await server.start_server()
    good = [line(state(f"20000000{index:02d}")) for index in range(30)]
    try:
        async with syncer_for(tmp_path, str(server.make_url("")), "token") as syncer:
            ctx = syncer.ctx
            for broken, reason in (
                (
                    snapshot_bytes([*good[:20], BAD_LINES["a text debt"], *good[20:]]),
                    "snapshot card 21 refused: debt",
                ),
                (snapshot_bytes(good)[:-30], "ended before its end"),  # cut short
                (b"not gzip at all", "snapshot failed"),
            ):
                fake.snapshot = broken
                with pytest.raises(SyncError, match=reason):
                    await syncer.round()
                assert reason in (ctx.last_download_error or "")
                assert store.get_meta(ctx.db.reader, "cursor") is None  # not bootstrapped
                assert phone_index(ctx.db.reader) is not None
                assert not ctx.bootstrapping
            fake.snapshot = snapshot_bytes(good)
            await syncer.round()
            assert fake.snapshots_served == 4
            assert ctx.last_download_error is None
            assert store.get_meta(ctx.db.reader, "cursor") == 40
            assert store.count_cards(ctx.db.reader) == 30
            assert ctx.settings.version == 3
            assert phone_index(ctx.db.reader) is not None
            assert not ctx.bootstrapping
            card = store.find_card(ctx.db.reader, "2000000029")
            assert card is not None
            assert card.wallet == base_wallet(state("2000000029"))
    finally:
        await server.close()


async def seed_central_cards(server: TestServer, count: int) -> None:
    """Cards with 0 to 3 lots (some spent, some expired), a few with debt or a hold."""
    rng = random.Random(7)
    today = date(2026, 11, 23)
    cards, lots, holds = [], [], []
    for index in range(count):
        number = f"7{index:09d}"
        cards.append(
            {
                "number": number,
                "phone": f"916{index:07d}",
                "phone_hash": f"{index:064x}",
                "debt_kop": rng.choice((0,) * 20 + (rng.randint(1, 999),)),
                "created_at": NOW,
            }
        )
        for k in range(rng.randint(0, 3)):
            amount = rng.randint(1, 50_000)
            created = today - timedelta(days=rng.randint(0, 300))
            lots.append(
                {
                    "lot_id": f"{number}-{k}",
                    "card": number,
                    "amount_kop": amount,
                    "remaining_kop": rng.choice((amount, amount // 3, 0)),
                    "created_on": created,
                    "expires_on": created + timedelta(days=183) if k < 2 else None,
                    "source": "purchase",
                    "source_ref": f"R-{index}-{k}",
                }
            )
        if index % 1000 == 0:
            holds.append(
                {
                    "hold_id": f"h-{number}",
                    "card": number,
                    "store_id": "s1",
                    "amount_kop": 100,
                    "expires_at": NOW + timedelta(minutes=2),
                    "state": "active",
                }
            )
    async with server.app[DB_KEY].write() as conn:
        cursor = await next_cursor(conn)
        for start in range(0, count, 5000):
            await conn.execute(
                schema.cards.insert(),
                [{**c, "cursor": cursor} for c in cards[start : start + 5000]],
            )
        for start in range(0, len(lots), 5000):
            await conn.execute(schema.lots.insert(), lots[start : start + 5000])
        await conn.execute(schema.holds.insert(), holds)


async def test_a_large_snapshot_applies_with_exact_wallets(tmp_path: Path) -> None:
    count = 25_000  # more than two batches of the agent and of the central server
    server = TestServer(
        create_central(
            central_config(f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"),
            run_expiry=False,
        )
    )
    await server.start_server()
    try:
        async with server.app[DB_KEY].write() as conn:
            token = await add_store(conn, "s1", "s1", NOW)
        await seed_central_cards(server, count)
        async with syncer_for(tmp_path, str(server.make_url("")), token) as syncer:
            await syncer.round()
            reader = syncer.ctx.db.reader
            assert store.count_cards(reader) == count
            stored = {
                number: (wallet_from_json(json.loads(base)), json.loads(wallet) == json.loads(base))
                for number, base, wallet in reader.execute("SELECT number, base, wallet FROM cards")
            }
        # Every wallet is the one the pages of changes would give, kopeck for kopeck.
        async with server.app[DB_KEY].read() as conn:
            lots = (
                await conn.execute(
                    sa.select(schema.lots.c.card, sa.func.sum(schema.lots.c.remaining_kop))
                    .where(schema.lots.c.remaining_kop > 0)
                    .group_by(schema.lots.c.card)
                )
            ).all()
            debts = dict(
                (
                    await conn.execute(sa.select(schema.cards.c.number, schema.cards.c.debt_kop))
                ).all()
            )
        remaining = dict(lots)
        for number, (wallet, same) in stored.items():
            assert same
            assert sum(lot.remaining_kop for lot in wallet.lots) == remaining.get(number, 0)
            assert wallet.debt_kop == debts[number]
        assert sum(len(wallet.holds) for wallet, _ in stored.values()) == count // 1000
    finally:
        await server.close()


# --- the phone index ----------------------------------------------------------------------------


def phone_index(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'cards_phone'").fetchone()
    return None if row is None else str(row[0])


async def test_the_phone_index_is_the_migrations_and_comes_back_at_start(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite3"
    db = Database(path)
    await db.open()
    created = phone_index(db.reader)
    assert created is not None
    assert PHONE_INDEX_SQL.replace("IF NOT EXISTS ", "") == created
    await db.write(drop_phone_index)  # as an interrupted bootstrap leaves it
    await db.close()
    db = Database(path)
    await db.open()
    assert phone_index(db.reader) == created
    await db.close()


async def test_lookups_by_phone_work_while_the_index_is_down(agent: Agent) -> None:
    card = await agent.new_card()
    ctx = agent.app[CTX_KEY]
    ctx.bootstrapping = True
    await ctx.db.write(drop_phone_index)
    status, found = await agent.post("/pos/v1/cards/lookup", {"phone": PHONE})
    assert status == 200, found
    assert found["card"]["number"] == card
    # Registering the same phone again finds the card too (the writer scans).
    assert (await agent.register(PHONE))["card"]["number"] == card
