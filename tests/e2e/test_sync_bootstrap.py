"""A new store bootstraps from the snapshot, then follows the change feed."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.system import System, add_cards, campaign, invariants, ledger_balances
from tests.e2e.till import kop

pytestmark = pytest.mark.slow

#: More cards than one snapshot chunk (5000) and than one page of changes (2000).
BULK_CARDS = 6000
CUSTOMERS = {"9167000001": "2000", "9167000002": "999.99", "9167000003": "35"}


def replica_cards_with_lot(db_path: Path, lot_prefix: str) -> int:
    """How many cards of a store's replica hold a lot of this campaign (read-only)."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM cards WHERE wallet LIKE ?", (f"%{lot_prefix}%",)
        ).fetchone()
    return int(row[0])


async def test_a_new_store_bootstraps_then_follows_the_feed(system: System) -> None:
    await system.prepare(["s1", "s2"])
    await system.central.start()
    started = datetime.now(UTC)
    await system.start_agents("s1")
    s1 = system.till("s1")
    await s1.wait_synced(started)  # the chain's phone key first
    cards = {phone: await s1.register(phone) for phone in CUSTOMERS}
    for phone, amount in CUSTOMERS.items():
        await s1.sold(cards[phone], amount)
    await system.wait_acked("s1")
    bulk_phones = [f"95{index:08d}" for index in range(BULK_CARDS)]
    bulk = await add_cards(system.database_url, bulk_phones)
    welcome = await campaign(system.database_url, "welcome", 100)
    assert welcome["cards"] == BULK_CARDS + len(CUSTOMERS)

    # Store 2 starts with an empty replica and takes everything from the snapshot.
    started = datetime.now(UTC)
    await system.start_agents("s2")
    s2 = system.till("s2")
    status = await s2.wait_synced(started)
    assert status["cards"] == BULK_CARDS + len(CUSTOMERS)
    assert status["redemption_allowed"]
    assert f"bootstrapped {BULK_CARDS + len(CUSTOMERS)} cards" in system.agents["s2"].log_tail()
    central = await ledger_balances(system.database_url)
    for phone, card in cards.items():
        found = await s2.found(phone=phone)
        assert found["card"]["number"] == card
        assert found["card"]["phone_last4"] == phone[-4:]
        assert kop(found["balance"]["available"]) == central[card]
    for index in (0, 4999, 5000, BULK_CARDS - 1):
        found = await s2.found(phone=bulk_phones[index])
        assert found["card"]["number"] == bulk[index]
        assert found["balance"]["available"] == 1
    s2_db = system.agents["s2"].data_dir / "agent.sqlite3"
    assert await asyncio.to_thread(replica_cards_with_lot, s2_db, "welcome:c:") == len(central)

    # Then it follows the feed: a sale at store 1, and a campaign to every card at one cursor
    # (pages of 2000 within one cursor: the (cursor, card) keyset).
    customer = next(iter(CUSTOMERS))
    await s1.sold(cards[customer], "100")  # +5.00
    spring = await campaign(system.database_url, "spring", 200)
    assert spring["cards"] == len(central)
    await system.settle("s1", "s2")
    central = await ledger_balances(system.database_url)
    found = await s2.found(phone=customer)
    assert kop(found["balance"]["available"]) == central[cards[customer]] == 10000 + 500 + 300
    assert await asyncio.to_thread(replica_cards_with_lot, s2_db, "spring:c:") == len(central)
    for index in (0, 2000, 4001, BULK_CARDS - 1):
        assert (await s2.found(card=bulk[index]))["balance"]["available"] == 3
    report = await invariants(system.database_url)
    assert report.ok, report.problems
