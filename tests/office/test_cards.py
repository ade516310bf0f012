"""Cards as the office sees them: search with filters, sorting, paging and the total; a card's page."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from central import schema
from shared.journal import HoldPlaced
from tests.office.conftest import Office, assert_error

#: card → (phone, non-expiring kopecks, expiring kopecks, last purchase)
CARDS: dict[str, tuple[str, int, int, date | None]] = {
    "7400000000011": ("9500000001", 10_000, 0, date(2025, 1, 10)),
    "7400000000028": ("9500000002", 2_500, 700, date(2025, 2, 10)),
    "7400000000035": ("9500000003", 0, 1_500, date(2025, 3, 10)),
    "7400000000042": ("9500000004", 500, 0, date(2025, 4, 10)),
    "7400000000059": ("9500000005", 0, 0, None),
}
N1, N2, N3, N4, N5 = CARDS


async def _seed(office: Office) -> None:
    store = await office.store()
    expires = date.today() + timedelta(days=60)
    for number, (phone, non_expiring, expiring, day) in CARDS.items():
        await store.register(number, phone)
        if day is None:
            continue
        if non_expiring:
            await store.sale(number, f"R-{number}-n", day=day, accrued_kop=non_expiring)
        if expiring:
            await store.sale(
                number, f"R-{number}-e", day=day, accrued_kop=expiring, expires_on=expires
            )
    async with office.db.write() as conn:
        await conn.execute(
            schema.cards.update().where(schema.cards.c.number == N4).values(status="blocked")
        )


async def _search(office: Office, **params: Any) -> tuple[int, list[str]]:
    answer = await office.ok("GET", "/admin/v1/cards", params=params)
    return answer["total"], [c["number"] for c in answer["cards"]]


async def test_card_search_filters(office: Office) -> None:
    await office.user()
    await _seed(office)
    assert await _search(office) == (5, [N1, N2, N3, N4, N5])
    # Non-expiring sum range, in roubles.
    assert await _search(office, non_expiring_min="25") == (2, [N1, N2])
    assert await _search(office, non_expiring_min="5", non_expiring_max="25.00") == (2, [N2, N4])
    assert await _search(office, non_expiring_max="0") == (2, [N3, N5])
    # Expiring sum.
    assert await _search(office, expiring_min="7") == (2, [N2, N3])
    assert await _search(office, expiring_min="7.01") == (1, [N3])
    # Last purchase: strictly before (cards that never bought count), on or after.
    assert await _search(office, last_purchase_before="2025-02-10") == (2, [N1, N5])
    assert await _search(office, last_purchase_after="2025-03-10") == (2, [N3, N4])
    assert await _search(
        office, last_purchase_after="2025-02-01", last_purchase_before="2025-04-01"
    ) == (2, [N2, N3])
    # Status.
    assert await _search(office, status="blocked") == (1, [N4])
    assert await _search(office, status="active") == (4, [N1, N2, N3, N5])
    # By number or phone, as an office worker types it.
    assert await _search(office, query=N3) == (1, [N3])
    assert await _search(office, query="+7 (950) 000-00-02") == (1, [N2])
    assert await _search(office, query="89500000005") == (1, [N5])
    assert await _search(office, query="nothing") == (0, [])
    # Combined.
    assert await _search(office, non_expiring_min="1", status="active", expiring_max="0") == (
        1,
        [N1],
    )

    for bad in (
        {"non_expiring_min": "1.001"},
        {"non_expiring_min": "-1"},
        {"last_purchase_before": "2025-13-01"},
        {"status": "lost"},
        {"sort": "phone"},
        {"limit": "-1"},
        {"unknown": "1"},
    ):
        status, answer = await office.call("GET", "/admin/v1/cards", params=bad)
        assert_error(status, answer, "validation_error", 422)


async def test_card_search_sorting_paging_and_sums(office: Office) -> None:
    await office.user()
    await _seed(office)
    answer = await office.ok("GET", "/admin/v1/cards", params={"query": N2})
    (card,) = answer["cards"]
    assert card == {
        "number": N2,
        "barcode": None,
        "status": "active",
        "phone_last4": "0002",
        "non_expiring_kop": 2_500,
        "expiring_kop": 700,
        "debt_kop": 0,
        "last_purchase_on": "2025-02-10",
    }
    assert await _search(office, sort="non_expiring", desc="true") == (5, [N1, N2, N4, N3, N5])
    assert await _search(office, sort="expiring", desc="1") == (5, [N3, N2, N1, N4, N5])
    # A card that never bought counts as the least recent, on both databases.
    assert await _search(office, sort="last_purchase_on", desc="true") == (
        5,
        [N4, N3, N2, N1, N5],
    )
    assert await _search(office, sort="last_purchase_on") == (5, [N5, N1, N2, N3, N4])
    assert await _search(office, sort="number", desc="true") == (5, [N5, N4, N3, N2, N1])
    # Paging keeps the total of the whole selection.
    pages = [
        await _search(office, sort="non_expiring", desc="true", limit=2, offset=offset)
        for offset in (0, 2, 4, 6)
    ]
    assert pages == [(5, [N1, N2]), (5, [N4, N3]), (5, [N5]), (5, [])]


async def test_card_page_shows_lots_holds_debt_transactions(office: Office) -> None:
    await office.user()
    store = await office.store()
    number = "7400000000066"
    await store.register(number, "9500000006")
    expires = date.today() + timedelta(days=30)
    accrual = await store.sale(number, "R-1", day=date(2025, 5, 1), accrued_kop=1_500)
    await office.ok(
        "POST",
        "/admin/v1/campaigns",
        {
            "campaign_id": "page",
            "amount": "2.50",
            "expires_on": expires.isoformat(),
            "note": "акция",
            "selection": {"cards": [number]},
        },
    )
    hold_expires = datetime.now(UTC) + timedelta(minutes=30)
    await store.send(
        store.op(
            HoldPlaced(card=number, hold_id="order-1", amount_kop=400, expires_at=hold_expires)
        )
    )
    await office.check()

    page = await office.card(number)
    assert page["number"] == number
    assert page["status"] == "active"
    assert page["phone"] == "9500000006"
    assert page["client"]["first_name"] == "Анна"
    assert page["client"]["consent_personal_data"] is True
    assert page["last_purchase_on"] == "2025-05-01"
    lots = {lot["source"]: lot for lot in page["lots"]}
    assert lots["purchase"]["lot_id"] == accrual
    assert (lots["purchase"]["amount_kop"], lots["purchase"]["expires_on"]) == (1_500, None)
    assert (lots["campaign"]["amount_kop"], lots["campaign"]["expires_on"]) == (
        250,
        expires.isoformat(),
    )
    assert lots["campaign"]["source_ref"] == "page"
    assert [(h["hold_id"], h["amount_kop"], h["store_id"]) for h in page["holds"]] == [
        ("order-1", 400, "store-1")
    ]
    assert page["balance"] == {
        "available_kop": 1_500 + 250 - 400,
        "usable_kop": 1_750,
        "held_kop": 400,
        "debt_kop": 0,
    }
    assert [(t["kind"], t["amount_kop"]) for t in page["transactions"]] == [
        ("campaign", 250),
        ("accrual", 1_500),
    ]

    # A card in debt.
    await store.sale(number, "R-2", day=date.today(), redeemed_kop=2_000)
    page = await office.card(number)
    assert page["balance"]["debt_kop"] == 250
    assert page["balance"]["available_kop"] == 0
    await office.check()

    status, answer = await office.call("GET", "/admin/v1/cards/7499999999999")
    assert_error(status, answer, "card_not_found", 404)
    async with office.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(schema.cards)) == 1
