"""Office mass operations run in chunks of cards, each a short transaction of its own: a store's
upload goes through while a campaign is still running, an operation stopped half-way is carried
on without applying a card twice, and the result is the one of an operation done at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from central import campaigns, office_ops, schema
from central.campaigns import carry_on
from central.db import next_cursor
from tests.honest import honest_sale
from tests.office.conftest import Office, assert_error

DAY = date(2025, 3, 10)
CARDS = [f"70000{index:08d}" for index in range(1, 61)]


async def _ledger_cards(office: Office, numbers: list[str]) -> None:
    """Cards already in the ledger (as if migrated), at one feed cursor."""
    async with office.db.write() as conn:
        cursor = await next_cursor(conn)
        await conn.execute(
            schema.cards.insert(),
            [
                {"number": n, "status": "active", "cursor": cursor, "created_at": datetime.now(UTC)}
                for n in numbers
            ],
        )


async def _credited(office: Office, campaign_id: str) -> dict[str, int]:
    async with office.db.read() as conn:
        rows = await conn.execute(
            sa.select(schema.lots.c.card, sa.func.count())
            .where(schema.lots.c.source_ref == campaign_id)
            .group_by(schema.lots.c.card)
        )
        return {card: int(n) for card, n in rows.all()}


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHUNK_CARDS", "CHUNK_CARDS_MIN", "CHUNK_CARDS_MAX"):
        monkeypatch.setattr(office_ops, name, 7)


async def test_a_campaign_in_chunks_credits_every_card_once(office: Office) -> None:
    await office.user()
    await _ledger_cards(office, CARDS)
    result = await office.ok(
        "POST",
        "/admin/v1/campaigns",
        {"campaign_id": "big", "amount": "2.50", "note": "всем", "selection": {"cards": CARDS}},
    )
    assert (result["state"], result["cards"], result["total_kop"]) == ("done", 60, 15_000)
    assert await _credited(office, "big") == dict.fromkeys(CARDS, 1)
    cancel = await office.ok("POST", "/admin/v1/campaigns/big/cancel", {})
    assert cancel["state"] == "cancelled"
    assert cancel["cancel_result"] == {"debited_kop": 15_000, "spent_kop": 0, "cards_with_spent": 0}
    await office.check()


async def test_a_stores_upload_goes_through_while_a_campaign_runs(office: Office) -> None:
    await office.user()
    store = await office.store()
    await store.register("7100000000017", "9160000001")
    await _ledger_cards(office, CARDS)
    started = asyncio.Event()
    carry = campaigns.credit_set

    async def slow_chunk(*args: object, **kwargs: object) -> tuple[int, int]:
        started.set()
        await asyncio.sleep(0.05)  # a chunk of a big campaign takes a while
        return await carry(*args, **kwargs)  # type: ignore[arg-type]

    campaigns.credit_set = slow_chunk  # type: ignore[assignment]
    try:
        campaign = asyncio.create_task(
            office.ok(
                "POST",
                "/admin/v1/campaigns",
                {
                    "campaign_id": "slow",
                    "amount": "1",
                    "note": "всем",
                    "selection": {"cards": CARDS},
                },
            )
        )
        await started.wait()
        await store.send(
            store.op(honest_sale("7100000000017", "R-1", day=DAY, accrued_kop=100, version=2))
        )
        async with office.db.read() as conn:
            state = await conn.scalar(
                sa.select(schema.campaigns.c.state).where(schema.campaigns.c.campaign_id == "slow")
            )
        assert state == "running"  # the sale did not wait for the whole campaign
        result = await campaign
    finally:
        campaigns.credit_set = carry  # type: ignore[assignment]
    assert result["cards"] == 60
    await office.check()


async def test_an_operation_stopped_half_way_is_carried_on_without_doubling(
    office: Office,
) -> None:
    await office.user()
    await _ledger_cards(office, CARDS)
    calls = 0
    carry = campaigns.credit_set

    async def dies_on_the_third(*args: object, **kwargs: object) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ConnectionError("the server went down")
        return await carry(*args, **kwargs)  # type: ignore[arg-type]

    campaigns.credit_set = dies_on_the_third  # type: ignore[assignment]
    try:
        status, _ = await office.call(
            "POST",
            "/admin/v1/campaigns",
            {"campaign_id": "cut", "amount": "1", "note": "всем", "selection": {"cards": CARDS}},
        )
    finally:
        campaigns.credit_set = carry  # type: ignore[assignment]
    assert status == 500  # the request failed; two chunks (14 cards) are in the ledger
    assert len(await _credited(office, "cut")) == 14
    listing = await office.ok("GET", "/admin/v1/campaigns")
    (item,) = listing["items"]
    assert (item["state"], item["cards"]) == ("running", 14)
    status, body = await office.call("POST", "/admin/v1/campaigns/cut/cancel", {})
    assert_error(status, body, "operation_in_progress", 409)
    await office.check()

    assert await carry_on(office.db) == 1  # what the housekeeping does after a restart
    assert await _credited(office, "cut") == dict.fromkeys(CARDS, 1)
    again = await office.ok(
        "POST",
        "/admin/v1/campaigns",
        {"campaign_id": "cut", "amount": "1", "note": "всем", "selection": {"cards": CARDS}},
    )
    assert (again["state"], again["cards"], again["total_kop"]) == ("done", 60, 6_000)
    await office.check()


async def test_a_zeroing_and_its_cancel_in_chunks(office: Office) -> None:
    await office.user()
    store = await office.store()
    numbers = CARDS[:20]
    for index, number in enumerate(numbers):
        await store.register(number, f"92600{index:05d}")
        await store.sale(number, f"R-{index}", day=DAY, accrued_kop=100 + index)
    zeroing = await office.ok(
        "POST",
        "/admin/v1/zeroings",
        {
            "zeroing_id": "sleep",
            "before_date": "2025-04-01",
            "note": "неактивные",
            "selection": {"filter": {"non_expiring_min": "1"}},
        },
    )
    expected = sum(100 + index for index in range(20))
    assert (zeroing["state"], zeroing["cards"], zeroing["total_kop"]) == ("done", 20, expected)
    cancel = await office.ok("POST", "/admin/v1/zeroings/sleep/cancel", {})
    assert cancel["state"] == "cancelled"
    assert cancel["cancel_result"] == {"returned_kop": expected, "cards": 20}
    await office.check()


async def test_a_filtered_campaign_in_chunks_credits_exactly_the_cards_it_means(
    office: Office,
) -> None:
    # Chunks are ranges of the ledger's cards; the filter's sums are taken chunk by chunk.
    await office.user()
    store = await office.store()
    buyers = CARDS[:20:2]
    for index, number in enumerate(buyers):
        await store.register(number, f"92700{index:05d}")
        await store.sale(number, f"R-{index}", day=DAY, accrued_kop=100 + 5 * index)
    await _ledger_cards(office, [number for number in CARDS if number not in buyers])
    result = await office.ok(
        "POST",
        "/admin/v1/campaigns",
        {
            "campaign_id": "loyal",
            "amount": "1",
            "note": "активным",
            "selection": {"filter": {"non_expiring_min": "1.20"}},
        },
    )
    meant = [number for index, number in enumerate(buyers) if 100 + 5 * index >= 120]
    assert (result["cards"], result["total_kop"]) == (len(meant), 100 * len(meant))
    assert await _credited(office, "loyal") == dict.fromkeys(meant, 1)
    await office.check()


@pytest.mark.parametrize(
    ("size", "elapsed_s", "expected"),
    [
        (1000, 0.05, 2000),  # fast: at most doubles
        (1000, 0.2, 1250),  # aimed at CHUNK_SECONDS
        (1000, 2.5, 100),  # slow: shrinks, not below the floor
        (20_000, 0.01, 20_000),  # never above the ceiling
    ],
)
def test_a_chunk_is_sized_from_how_long_the_last_took(
    monkeypatch: pytest.MonkeyPatch, size: int, elapsed_s: float, expected: int
) -> None:
    monkeypatch.setattr(office_ops, "CHUNK_CARDS_MIN", 100)
    monkeypatch.setattr(office_ops, "CHUNK_CARDS_MAX", 20_000)
    assert office_ops.next_size(size, elapsed_s) == expected
