"""Zeroing (обнуление бонусов): the date boundary, non-expiring points only, one debit per card,
and a cancel that gives back exactly what was taken."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from tests.office.conftest import Office, assert_error

BOUNDARY = date(2025, 3, 10)
#: Last purchase on the boundary day itself; the day before; two purchases before; none at all.
ON_DAY, DAY_BEFORE, TWO_LOTS, NEVER = (
    "7100000000011",
    "7100000000028",
    "7100000000035",
    "7100000000042",
)


def _zeroing(zeroing_id: str, selection: dict[str, Any], before: date = BOUNDARY) -> Any:
    return {
        "zeroing_id": zeroing_id,
        "before_date": before.isoformat(),
        "note": "неактивные карты",
        "selection": selection,
    }


async def _sums(office: Office) -> dict[str, tuple[int, int, int]]:
    """Per card: non-expiring, expiring, debt (kopecks), as the card search shows them."""
    answer = await office.ok("GET", "/admin/v1/cards", params={"limit": 500})
    return {
        c["number"]: (c["non_expiring_kop"], c["expiring_kop"], c["debt_kop"])
        for c in answer["cards"]
    }


async def test_zeroing_takes_non_expiring_points_of_inactive_cards(office: Office) -> None:
    await office.user()
    store = await office.store()
    for i, number in enumerate((ON_DAY, DAY_BEFORE, TWO_LOTS, NEVER)):
        await store.register(number, f"92600000{i:02d}")
    expires = date.today() + timedelta(days=90)
    await store.sale(ON_DAY, "R-1", day=BOUNDARY, accrued_kop=1_000)
    await store.sale(DAY_BEFORE, "R-2", day=BOUNDARY - timedelta(days=1), accrued_kop=2_000)
    # An expiring accrual is not the zeroing's business.
    await store.sale(
        DAY_BEFORE, "R-3", day=BOUNDARY - timedelta(days=1), accrued_kop=500, expires_on=expires
    )
    await store.sale(TWO_LOTS, "R-4", day=BOUNDARY - timedelta(days=40), accrued_kop=700)
    await store.sale(TWO_LOTS, "R-5", day=BOUNDARY - timedelta(days=20), accrued_kop=800)
    await office.ok(
        "POST",
        "/admin/v1/campaigns",
        {"campaign_id": "gift", "amount": 3, "note": "подарок", "selection": {"cards": [NEVER]}},
    )
    await office.check()
    before = await _sums(office)
    assert before == {
        ON_DAY: (1_000, 0, 0),
        DAY_BEFORE: (2_000, 500, 0),
        TWO_LOTS: (1_500, 0, 0),
        NEVER: (300, 0, 0),
    }

    result = await office.ok("POST", "/admin/v1/zeroings", _zeroing("z1", {"filter": {}}))
    assert (result["kind"], result["state"]) == ("zeroing", "done")
    assert (result["cards"], result["total_kop"]) == (3, 2_000 + 1_500 + 300)
    assert result["before_date"] == BOUNDARY.isoformat()
    await office.check()
    assert await _sums(office) == {
        ON_DAY: (1_000, 0, 0),
        DAY_BEFORE: (0, 500, 0),
        TWO_LOTS: (0, 0, 0),
        NEVER: (0, 0, 0),
    }
    # One debit per card, naming every lot it took from.
    rows = await office.journal(kind="zeroing")
    assert sorted((r["card"], r["amount_kop"], r["campaign_id"]) for r in rows) == sorted(
        [(DAY_BEFORE, -2_000, "z1"), (TWO_LOTS, -1_500, "z1"), (NEVER, -300, "z1")]
    )
    two = next(r for r in rows if r["card"] == TWO_LOTS)
    assert sorted(amount for _lot, amount in two["lots"]) == [700, 800]
    assert all(r["note"] == "неактивные карты" for r in rows)

    # Idempotent on its id; the same id with another body is refused.
    assert await office.ok("POST", "/admin/v1/zeroings", _zeroing("z1", {"filter": {}})) == result
    status, answer = await office.call(
        "POST", "/admin/v1/zeroings", _zeroing("z1", {"filter": {}}, BOUNDARY + timedelta(days=1))
    )
    assert_error(status, answer, "idempotency_conflict", 409)
    assert len(await office.journal(kind="zeroing")) == 3

    cancelled = await office.ok("POST", "/admin/v1/zeroings/z1/cancel")
    assert cancelled["state"] == "cancelled"
    assert cancelled["cancel_result"] == {"returned_kop": 3_800, "cards": 3}
    await office.check()
    assert await _sums(office) == before
    rows = await office.journal(kind="zeroing_cancel")
    assert sorted((r["card"], r["amount_kop"]) for r in rows) == sorted(
        [(DAY_BEFORE, 2_000), (TWO_LOTS, 1_500), (NEVER, 300)]
    )
    # Given back as non-expiring points.
    page = await office.card(TWO_LOTS)
    back = [lot for lot in page["lots"] if lot["source"] == "zeroing_cancel"]
    assert [(lot["amount_kop"], lot["remaining_kop"], lot["expires_on"]) for lot in back] == [
        (1_500, 1_500, None)
    ]
    assert await office.ok("POST", "/admin/v1/zeroings/z1/cancel") == cancelled
    assert len(await office.journal(kind="zeroing_cancel")) == 3
    await office.check()

    status, answer = await office.call("POST", "/admin/v1/zeroings/gift/cancel")
    assert_error(status, answer, "not_found", 404)


async def test_zeroing_of_a_selection_and_a_card_in_debt(office: Office) -> None:
    await office.user()
    store = await office.store()
    for i, number in enumerate((ON_DAY, DAY_BEFORE, TWO_LOTS)):
        await store.register(number, f"92700000{i:02d}")
    old = BOUNDARY - timedelta(days=100)
    await store.sale(DAY_BEFORE, "R-1", day=old, accrued_kop=2_000)
    await store.sale(TWO_LOTS, "R-2", day=old, accrued_kop=900)
    await store.sale(TWO_LOTS, "R-3", day=old, redeemed_kop=900)
    await store.sale(TWO_LOTS, "R-4", day=old, redeemed_kop=400)  # 4 roubles of debt
    await store.sale(ON_DAY, "R-5", day=old, accrued_kop=100)
    await office.check()
    before = await _sums(office)
    assert before[TWO_LOTS] == (0, 0, 400)

    # Only the listed cards; a card with nothing non-expiring gets no debit at all.
    result = await office.ok(
        "POST", "/admin/v1/zeroings", _zeroing("z2", {"cards": [DAY_BEFORE, TWO_LOTS]})
    )
    assert (result["cards"], result["total_kop"]) == (1, 2_000)
    after = await _sums(office)
    assert after[DAY_BEFORE] == (0, 0, 0)
    assert after[TWO_LOTS] == (0, 0, 400)
    assert after[ON_DAY] == (100, 0, 0)
    await office.check()
    await office.ok("POST", "/admin/v1/zeroings/z2/cancel")
    assert await _sums(office) == before
    await office.check()

    # A filter on the non-expiring sum narrows the selection.
    result = await office.ok(
        "POST", "/admin/v1/zeroings", _zeroing("z3", {"filter": {"non_expiring_min": "10"}})
    )
    assert (result["cards"], result["total_kop"]) == (1, 2_000)
    assert [r["card"] for r in await office.journal(campaign_id="z3")] == [DAY_BEFORE]
    await office.check()
