"""Online authorisation of redemptions: one card at two stores, against a real central server
(in-process, on SQLite), so that the second store cannot spend points the first has spent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

import central.api as central_api
from agent.app import SYNCER_KEY, create_app
from agent.clock import FakeClock
from agent.config import AgentConfig, ProviderConfig
from agent.routes import CTX_KEY
from central import schema
from central.api import DB_KEY
from central.app import create_app as create_central
from central.invariants import check_invariants
from central.program import set_settings
from central.stores import add_store
from tests.phonekeys import central_config, export_key_file

HEADERS = {"X-Register-Id": "till-1"}


def sale(
    receipt_id: str, card: str, amount: str, redeem: str = "0", **extra: Any
) -> dict[str, Any]:
    return {
        "receipt_id": receipt_id,
        "card": card,
        "lines": [{"line_id": "1", "sku": "A", "qty": 1, "price": amount, "amount": amount}],
        "redeem": redeem,
        **extra,
    }


class Till:
    def __init__(self, client: TestClient[Any, Any], messages: Path) -> None:
        self.client = client
        self.messages = messages

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        response = await self.client.post(path, json=body, headers=HEADERS)
        return response.status, await response.json()

    async def sync(self) -> None:
        await self.client.app[SYNCER_KEY].round()

    async def confirmed_code(self, card: str, phone: str) -> str:
        status, body = await self.post(
            "/pos/v1/verifications", {"card": card, "purpose": "redemption", "phone": phone}
        )
        assert status == 201, body
        code = json.loads(self.messages.read_text().splitlines()[-1])["code"]
        status, _ = await self.post(
            f"/pos/v1/verifications/{body['verification_id']}/confirm", {"code": code}
        )
        assert status == 200
        return str(body["verification_id"])


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[TestServer]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    await export_key_file(url, tmp_path / "phone-key")
    config = central_config(url)
    server = TestServer(create_central(config, run_expiry=False))
    await server.start_server()
    yield server
    await server.close()


async def _till(tmp_path: Path, central: TestServer, store_id: str) -> TestClient[Any, Any]:
    async with central.app[DB_KEY].write() as conn:
        token = await add_store(conn, store_id, store_id, datetime.now(UTC))
    config = AgentConfig(
        store_id=store_id,
        data_dir=tmp_path / store_id,
        central_url=str(central.make_url("")),
        central_token=token,
        sync_interval_s=3600,
        phone_key_file=tmp_path / "phone-key",
        provider=ProviderConfig(kind="file", file_path=tmp_path / store_id / "messages.jsonl"),
    )
    client = TestClient(TestServer(create_app(config, clock=FakeClock())))
    await client.start_server()
    return client


async def test_second_store_cannot_spend_points_the_first_spent(
    tmp_path: Path, central: TestServer
) -> None:
    a_client = await _till(tmp_path, central, "store-a")
    b_client = await _till(tmp_path, central, "store-b")
    try:
        a = Till(a_client, tmp_path / "store-a" / "messages.jsonl")
        b = Till(b_client, tmp_path / "store-b" / "messages.jsonl")
        status, registered = await a.post(
            "/pos/v1/customers", {"phone": "9161234567", "consents": {"personal_data": True}}
        )
        assert status == 201
        card = registered["card"]["number"]
        status, _ = await a.post("/pos/v1/receipts", sale("A-1", card, "2000"))  # +100 points
        assert status == 200
        await a.sync()
        await b.sync()

        # Store A redeems all 100 points with central authorisation.
        code_a = await a.confirmed_code(card, "9161234567")
        status, body = await a.post(
            "/pos/v1/receipts", sale("A-2", card, "200", "100", verification_id=code_a)
        )
        assert status == 200, body
        # Store B's replica still shows 100 (A's sale is not uploaded yet), but the central
        # server knows of A's authorisation and refuses B.
        status, found = await b.post("/pos/v1/cards/lookup", {"card": card})
        assert found["balance"]["available"] == 100
        code_b = await b.confirmed_code(card, "9161234567")
        status, body = await b.post(
            "/pos/v1/receipts", sale("B-1", card, "200", "100", verification_id=code_b)
        )
        assert status == 409, body
        assert body["error"]["code"] == "insufficient_balance"
        assert body["error"]["details"]["reason"] == "chain_wide_balance"
        # The refused sale did not use B's code: a smaller, covered redemption still fails
        # (nothing is left chain-wide), and a sale without redemption goes through.
        status, body = await b.post("/pos/v1/receipts", sale("B-2", card, "200"))
        assert status == 200

        await a.sync()
        await b.sync()
        async with central.app[DB_KEY].read() as conn:
            report = await check_invariants(conn)
        assert report.ok, report.problems
        assert report.debt_total_kop == 0
        status, found = await b.post("/pos/v1/cards/lookup", {"card": card})
        # 100 accrued − 100 redeemed at A + 5 % of 100 money-paid at A + 5 % of 200 at B.
        assert found["balance"]["available"] == pytest.approx(15.0)
        assert found["balance"]["held"] == 0
    finally:
        await a_client.close()
        await b_client.close()


async def test_without_central_the_store_redeems_under_its_own_rules(
    tmp_path: Path, central: TestServer
) -> None:
    a_client = await _till(tmp_path, central, "store-a")
    try:
        a = Till(a_client, tmp_path / "store-a" / "messages.jsonl")
        status, registered = await a.post(
            "/pos/v1/customers", {"phone": "9161234567", "consents": {"personal_data": True}}
        )
        card = registered["card"]["number"]
        await a.post("/pos/v1/receipts", sale("A-1", card, "2000"))
        await a.sync()
        code = await a.confirmed_code(card, "9161234567")
        await central.close()  # the central server goes away; the sync is still fresh
        status, body = await a.post(
            "/pos/v1/receipts", sale("A-2", card, "200", "50", verification_id=code)
        )
        assert status == 200, body
        assert body["redeemed"] == 50
    finally:
        await a_client.close()


async def test_a_stores_pending_hold_counts_against_the_chain_wide_balance(
    tmp_path: Path, central: TestServer
) -> None:
    a_client = await _till(tmp_path, central, "store-a")
    b_client = await _till(tmp_path, central, "store-b")
    try:
        a = Till(a_client, tmp_path / "store-a" / "messages.jsonl")
        b = Till(b_client, tmp_path / "store-b" / "messages.jsonl")
        async with central.app[DB_KEY].write() as conn:  # codes as often as the test asks
            await set_settings(
                conn, {"verification_resend_after_s": 0}, datetime.now(UTC), by="test"
            )
        status, registered = await a.post(
            "/pos/v1/customers", {"phone": "9161234567", "consents": {"personal_data": True}}
        )
        card = registered["card"]["number"]
        assert (await a.post("/pos/v1/receipts", sale("A-1", card, "2000")))[0] == 200
        await a.sync()
        await b.sync()
        # A sets 60 of the card's 100 points aside for an order; the hold is not uploaded yet.
        code = await a.confirmed_code(card, "9161234567")
        hold = {"hold_id": "H-1", "card": card, "amount": "60", "ttl_s": 3600}
        status, body = await a.post("/pos/v1/holds", {**hold, "verification_id": code})
        assert status == 200, body
        # B spends 30 (authorised, uploaded) and earns 8.50: 78.50 left centrally, 18.50 of
        # them not held by A.
        code_b = await b.confirmed_code(card, "9161234567")
        status, body = await b.post(
            "/pos/v1/receipts", sale("B-1", card, "200", "30", verification_id=code_b)
        )
        assert status == 200, body
        await b.sync()
        # A's replica still shows 40 usable beside its hold, but chain-wide only 18.50 are.
        code = await a.confirmed_code(card, "9161234567")
        status, body = await a.post(
            "/pos/v1/receipts", sale("A-2", card, "200", "40", verification_id=code)
        )
        assert status == 409, body
        assert body["error"]["details"]["reason"] == "chain_wide_balance"
        assert body["error"]["details"]["available"] == "18.50"
        # The order itself is sold from its hold: the hold is not counted against itself.
        status, body = await a.post(
            "/pos/v1/receipts", sale("A-3", card, "200", "60", hold_id="H-1")
        )
        assert status == 200, body
        await a.sync()
        await b.sync()
        async with central.app[DB_KEY].read() as conn:
            report = await check_invariants(conn)
        assert report.ok, report.problems
        assert report.debt_total_kop == 0
    finally:
        await a_client.close()
        await b_client.close()


async def test_points_accrued_here_before_a_sync_are_spent_after_one_quick_round(
    tmp_path: Path, central: TestServer
) -> None:
    """The central server counts none of a store's pending credits (a store could claim any),
    so a customer spending what they earned here a minute ago is declined at first; the store
    uploads its queue in a quick round and is asked again, and the sale goes through."""
    a_client = await _till(tmp_path, central, "store-a")
    try:
        a = Till(a_client, tmp_path / "store-a" / "messages.jsonl")
        status, registered = await a.post(
            "/pos/v1/customers", {"phone": "9161234567", "consents": {"personal_data": True}}
        )
        card = registered["card"]["number"]
        await a.sync()
        assert (await a.post("/pos/v1/receipts", sale("A-1", card, "2000")))[0] == 200  # +100
        rounds = a_client.app[SYNCER_KEY].rounds_completed
        code = await a.confirmed_code(card, "9161234567")
        status, body = await a.post(
            "/pos/v1/receipts", sale("A-2", card, "200", "100", verification_id=code)
        )
        assert status == 200, body
        assert body["redeemed"] == 100
        assert a_client.app[SYNCER_KEY].rounds_completed == rounds + 1
        async with central.app[DB_KEY].read() as conn:
            report = await check_invariants(conn)
        assert report.ok, report.problems
    finally:
        await a_client.close()


async def test_an_authorisation_answered_too_late_holds_nothing_once_the_sale_arrives(
    tmp_path: Path, central: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store stops waiting for the central server's answer and redeems under its own rules;
    the central server approved meanwhile and set the points aside.  The sale that follows ends
    that hold (it is named after the receipt): at the till at once, centrally when it arrives."""
    a_client = await _till(tmp_path, central, "store-a")
    b_client = await _till(tmp_path, central, "store-b")
    try:
        a = Till(a_client, tmp_path / "store-a" / "messages.jsonl")
        b = Till(b_client, tmp_path / "store-b" / "messages.jsonl")
        status, registered = await a.post(
            "/pos/v1/customers", {"phone": "9161234567", "consents": {"personal_data": True}}
        )
        card = registered["card"]["number"]
        assert (await a.post("/pos/v1/receipts", sale("A-1", card, "2000")))[0] == 200
        await a.sync()
        approve = central_api.authorize
        answered = asyncio.Event()

        async def late(*args: Any, **kwargs: Any) -> Any:
            decision = await approve(*args, **kwargs)  # committed: the points are set aside
            answered.set()
            await asyncio.sleep(0.5)  # the answer comes beyond the store's patience
            return decision

        monkeypatch.setattr(central_api, "authorize", late)
        a_client.app[CTX_KEY].config.online_authorization_timeout_s = 0.1
        code = await a.confirmed_code(card, "9161234567")
        status, body = await a.post(
            "/pos/v1/receipts", sale("A-2", card, "200", "100", verification_id=code)
        )
        assert status == 200, body  # redeemed under the offline rules
        await asyncio.wait_for(answered.wait(), 5)
        # Store B pulls the central server's hold before A's sale arrives: the points are spent.
        await b.sync()
        status, found = await b.post("/pos/v1/cards/lookup", {"card": card})
        assert found["balance"]["held"] == 100
        # Store A pulls it too, before uploading anything else: its own sale ended it.
        await a_client.app[SYNCER_KEY]._pull_until(0)
        status, found = await a.post("/pos/v1/cards/lookup", {"card": card})
        assert found["balance"]["held"] == 0
        assert found["balance"]["available"] == pytest.approx(5.0)
        # Once A's sale arrives the hold is consumed centrally and nobody shows it.
        await a.sync()
        await b.sync()
        for till in (a, b):
            status, found = await till.post("/pos/v1/cards/lookup", {"card": card})
            assert (found["balance"]["held"], found["balance"]["available"]) == (0, 5.0)
        async with central.app[DB_KEY].read() as conn:
            state = await conn.scalar(
                sa.select(schema.holds.c.state).where(schema.holds.c.hold_id == "auth:store-a:A-2")
            )
            report = await check_invariants(conn)
        assert state == "consumed"
        assert report.ok, report.problems
    finally:
        await a_client.close()
        await b_client.close()
