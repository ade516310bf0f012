"""Campaigns (бонус-акции): the arithmetic of crediting, paying debt, idempotency and cancelling."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

from central.campaigns import CAMPAIGN_ID_CHARS_MAX
from tests.office.conftest import Office, Store, assert_error

DAY = date(2025, 3, 10)
A, B, C, D = "7000000000011", "7000000000028", "7000000000035", "7000000000042"


async def _cards(store: Store, *numbers: str) -> None:
    for i, number in enumerate(numbers):
        await store.register(number, f"91600000{i:02d}")


def _campaign(campaign_id: str, amount: Any, selection: dict[str, Any], **extra: Any) -> Any:
    return {
        "campaign_id": campaign_id,
        "amount": amount,
        "note": "День аптекаря",
        "selection": selection,
        **extra,
    }


async def test_campaign_to_a_filter_and_to_a_list(office: Office) -> None:
    await office.user()
    store = await office.store()
    await _cards(store, A, B, C)
    await store.sale(A, "R-1", day=DAY, accrued_kop=500)
    await office.check()

    result = await office.ok(
        "POST",
        "/admin/v1/campaigns",
        _campaign("spring", "12.34", {"filter": {"non_expiring_min": "1"}}),
    )
    assert result["cards"] == 1
    assert result["total_kop"] == 1234
    assert result["amount_kop"] == 1234
    assert result["state"] == "done"
    assert result["kind"] == "campaign"
    assert result["created_by"] == "admin"
    assert result["expires_on"] is None

    # Visible in the journal at once, one credit per card.
    rows = await office.journal(campaign_id="spring")
    assert [(r["card"], r["kind"], r["amount_kop"]) for r in rows] == [(A, "campaign", 1234)]
    assert rows[0]["note"] == "День аптекаря"
    page = await office.card(A)
    lots = [lot for lot in page["lots"] if lot["source"] == "campaign"]
    assert [(lot["amount_kop"], lot["remaining_kop"], lot["expires_on"]) for lot in lots] == [
        (1234, 1234, None)
    ]
    assert page["balance"]["available_kop"] == 500 + 1234
    await office.check()

    # An explicit list: unknown numbers are simply not credited.
    result = await office.ok(
        "POST",
        "/admin/v1/campaigns",
        _campaign("list", 5, {"cards": [B, C, "7999999999999"]}),
    )
    assert (result["cards"], result["total_kop"]) == (2, 1000)
    rows = await office.journal(kind="campaign", campaign_id="list")
    assert sorted((r["card"], r["amount_kop"]) for r in rows) == [(B, 500), (C, 500)]
    assert (await office.card(A))["balance"]["available_kop"] == 1734
    await office.check()


async def test_campaign_is_idempotent_on_its_id(office: Office) -> None:
    await office.user()
    store = await office.store()
    await _cards(store, A, B)
    body = _campaign("once", "10.00", {"cards": [A, B]})
    first = await office.ok("POST", "/admin/v1/campaigns", body)
    # The same amount written differently is the same request.
    again = await office.ok("POST", "/admin/v1/campaigns", {**body, "amount": 10})
    assert again == first
    assert len(await office.journal(campaign_id="once")) == 2
    assert (await office.card(A))["balance"]["available_kop"] == 1000

    for changed in (
        {**body, "amount": "11"},
        {**body, "note": "другое"},
        {**body, "selection": {"cards": [A]}},
        {**body, "expires_on": (date.today() + timedelta(days=30)).isoformat()},
    ):
        status, answer = await office.call("POST", "/admin/v1/campaigns", changed)
        assert_error(status, answer, "idempotency_conflict", 409)
    assert len(await office.journal(campaign_id="once")) == 2
    assert (await office.card(A))["balance"]["available_kop"] == 1000
    await office.check()


async def test_campaign_refuses_bad_amounts_and_dates(office: Office) -> None:
    await office.user()
    store = await office.store()
    await _cards(store, A)
    yesterday = (date.today() - timedelta(days=2)).isoformat()
    for amount, extra in (
        (0, {}),
        ("0.00", {}),
        (-5, {}),
        ("1.234", {}),
        (1.005, {}),
        ("abc", {}),
        (5, {"expires_on": yesterday}),
    ):
        status, answer = await office.call(
            "POST", "/admin/v1/campaigns", _campaign("bad", amount, {"cards": [A]}, **extra)
        )
        assert_error(status, answer, "validation_error", 422)
    # Neither or both of cards and filter.
    for selection in ({}, {"cards": [A], "filter": {}}):
        status, answer = await office.call(
            "POST", "/admin/v1/campaigns", _campaign("bad", 5, selection)
        )
        assert_error(status, answer, "validation_error", 422)
    assert await office.journal(kind="campaign") == []


async def test_campaign_pays_debt_first(office: Office) -> None:
    await office.user()
    store = await office.store()
    await _cards(store, A, B)
    # Redeemed offline beyond the chain-wide balance: debt.
    await store.sale(A, "R-1", day=DAY, redeemed_kop=300)
    await store.sale(B, "R-2", day=DAY, redeemed_kop=1500)
    assert (await office.card(A))["balance"]["debt_kop"] == 300
    await office.check()

    await office.ok("POST", "/admin/v1/campaigns", _campaign("debt", 10, {"cards": [A, B]}))
    page_a, page_b = await office.card(A), await office.card(B)
    assert page_a["balance"]["debt_kop"] == 0
    assert page_a["balance"]["available_kop"] == 700
    (lot_a,) = [lot for lot in page_a["lots"] if lot["source"] == "campaign"]
    assert (lot_a["amount_kop"], lot_a["remaining_kop"]) == (1000, 700)
    assert page_b["balance"]["debt_kop"] == 500
    assert page_b["balance"]["available_kop"] == 0
    (lot_b,) = [lot for lot in page_b["lots"] if lot["source"] == "campaign"]
    assert (lot_b["amount_kop"], lot_b["remaining_kop"]) == (1000, 0)
    # The journal shows the whole credit; the debt it paid is the card's business.
    rows = await office.journal(campaign_id="debt")
    assert sorted(r["amount_kop"] for r in rows) == [1000, 1000]
    await office.check()


async def test_cancel_debits_what_remains_and_reports_what_was_spent(office: Office) -> None:
    await office.user()
    store = await office.store()
    await _cards(store, A, B, C, D)
    await store.sale(C, "R-C", day=DAY, redeemed_kop=300)  # C is in debt before the campaign
    expires = date.today() + timedelta(days=30)
    result = await office.ok(
        "POST",
        "/admin/v1/campaigns",
        _campaign("autumn", 100, {"cards": [A, B, C, D]}, expires_on=expires.isoformat()),
    )
    assert result["expires_on"] == expires.isoformat()
    assert (result["cards"], result["total_kop"]) == (4, 40_000)
    await office.check()
    # After the campaign: A spends part of it, D spends all of it and goes into debt.
    await store.sale(A, "R-A", day=date.today(), redeemed_kop=4_000)
    await store.sale(D, "R-D", day=date.today(), redeemed_kop=12_000)
    assert (await office.card(D))["balance"]["debt_kop"] == 2_000
    await office.check()

    before = await office.ok("GET", "/admin/v1/campaigns/autumn/cards")
    assert {c["card"]: (c["remaining_kop"], c["spent_kop"]) for c in before["cards"]} == {
        A: (6_000, 4_000),
        B: (10_000, 0),
        C: (9_700, 300),
        D: (0, 10_000),
    }

    cancelled = await office.ok("POST", "/admin/v1/campaigns/autumn/cancel")
    assert cancelled["state"] == "cancelled"
    assert cancelled["cancelled_by"] == "admin"
    assert cancelled["cancel_result"] == {
        "debited_kop": 6_000 + 10_000 + 9_700,
        "spent_kop": 4_000 + 300 + 10_000,
        "cards_with_spent": 3,
    }
    await office.check()
    report = await office.ok("GET", "/admin/v1/campaigns/autumn/cards")
    assert {c["card"]: c for c in report["cards"]} == {
        A: {
            "card": A,
            "amount_kop": 10_000,
            "remaining_kop": 0,
            "spent_kop": 4_000,
            "debited_kop": 6_000,
        },
        B: {
            "card": B,
            "amount_kop": 10_000,
            "remaining_kop": 0,
            "spent_kop": 0,
            "debited_kop": 10_000,
        },
        C: {
            "card": C,
            "amount_kop": 10_000,
            "remaining_kop": 0,
            "spent_kop": 300,
            "debited_kop": 9_700,
        },
        D: {
            "card": D,
            "amount_kop": 10_000,
            "remaining_kop": 0,
            "spent_kop": 10_000,
            "debited_kop": 0,
        },
    }
    spent = await office.ok(
        "GET", "/admin/v1/campaigns/autumn/cards", params={"spent_only": "true"}
    )
    assert [c["card"] for c in spent["cards"]] == sorted([A, C, D])
    # Paging by card number, one at a time, with only the cards that had spent.
    seen: list[str] = []
    after = ""
    while True:
        page = await office.ok(
            "GET",
            "/admin/v1/campaigns/autumn/cards",
            params={"spent_only": "1", "limit": 1, **({"after": after} if after else {})},
        )
        if not page["cards"]:
            break
        seen += [c["card"] for c in page["cards"]]
        after = seen[-1]
    assert seen == sorted([A, C, D])

    # The cancel never adds debt: D keeps its own, the others have none.
    for number, debt in ((A, 0), (B, 0), (C, 0), (D, 2_000)):
        page = await office.card(number)
        assert page["balance"]["debt_kop"] == debt, number
        assert page["balance"]["usable_kop"] == 0, number
    rows = await office.journal(campaign_id="autumn", kind="campaign_cancel")
    assert sorted((r["card"], r["amount_kop"]) for r in rows) == sorted(
        [(A, -6_000), (B, -10_000), (C, -9_700)]
    )

    # Cancelling again changes nothing and answers the same.
    assert await office.ok("POST", "/admin/v1/campaigns/autumn/cancel") == cancelled
    assert len(await office.journal(campaign_id="autumn", kind="campaign_cancel")) == 3
    await office.check()

    status, answer = await office.call("POST", "/admin/v1/campaigns/nothing/cancel")
    assert_error(status, answer, "not_found", 404)


async def test_campaigns_and_zeroings_are_listed_with_state_counts_totals(office: Office) -> None:
    await office.user()
    store = await office.store()
    await _cards(store, A, B)
    await store.sale(A, "R-1", day=DAY, accrued_kop=700)
    await office.ok("POST", "/admin/v1/campaigns", _campaign("first", 3, {"cards": [A, B]}))
    await office.ok(
        "POST",
        "/admin/v1/zeroings",
        {
            "zeroing_id": "sleepers",
            "before_date": (DAY + timedelta(days=1)).isoformat(),
            "note": "давно не покупали",
            "selection": {"cards": [A]},
        },
    )
    await office.ok("POST", "/admin/v1/campaigns/first/cancel")

    listing = await office.ok("GET", "/admin/v1/campaigns")
    assert listing["total"] == 2
    by_id = {item["campaign_id"]: item for item in listing["items"]}
    first, sleepers = by_id["first"], by_id["sleepers"]
    assert (first["kind"], first["state"], first["cards"], first["total_kop"]) == (
        "campaign",
        "cancelled",
        2,
        600,
    )
    # B's 3 roubles; A's were zeroed and count as spent for the campaign.
    assert first["cancel_result"] == {"debited_kop": 300, "spent_kop": 300, "cards_with_spent": 1}
    assert (sleepers["kind"], sleepers["state"], sleepers["cards"], sleepers["total_kop"]) == (
        "zeroing",
        "done",
        1,
        700 + 300,
    )
    assert sleepers["before_date"] == (DAY + timedelta(days=1)).isoformat()
    assert sleepers["note"] == "давно не покупали"

    only = await office.ok("GET", "/admin/v1/campaigns", params={"kind": "zeroing"})
    assert (only["total"], [i["campaign_id"] for i in only["items"]]) == (1, ["sleepers"])
    paged = await office.ok("GET", "/admin/v1/campaigns", params={"limit": 1, "offset": 1})
    assert paged["total"] == 2
    assert len(paged["items"]) == 1
    status, answer = await office.call("GET", "/admin/v1/campaigns", params={"kind": "other"})
    assert_error(status, answer, "validation_error", 422)
    await office.check()


async def test_longest_ids_and_card_numbers(office: Office) -> None:
    await office.user()
    store = await office.store()
    card = "7" * 40
    await store.register(card, "9160000099")
    await store.sale(card, "R-1", day=DAY, accrued_kop=100)
    # The longest ids the API takes fit the lots' names on both databases.
    campaign_id, zeroing_id = "c" * CAMPAIGN_ID_CHARS_MAX, "z" * CAMPAIGN_ID_CHARS_MAX
    await office.ok("POST", "/admin/v1/campaigns", _campaign(campaign_id, 1, {"cards": [card]}))
    zeroing = {"before_date": "2026-01-01", "note": "n", "selection": {"cards": [card]}}
    await office.ok("POST", "/admin/v1/zeroings", {"zeroing_id": zeroing_id, **zeroing})
    await office.ok("POST", f"/admin/v1/zeroings/{zeroing_id}/cancel")
    await office.ok("POST", f"/admin/v1/campaigns/{campaign_id}/cancel")
    await office.check()
    # A longer one is refused with a clear error, never a database failure.
    status, answer = await office.call(
        "POST", "/admin/v1/campaigns", _campaign("c" * 33, 1, {"cards": [card]})
    )
    assert_error(status, answer, "validation_error", 422)
    status, answer = await office.call(
        "POST", "/admin/v1/zeroings", {"zeroing_id": "z" * 33, **zeroing}
    )
    assert_error(status, answer, "validation_error", 422)


async def test_simultaneous_resubmission(office: Office) -> None:
    # A double click: the same campaign twice at once gets one credit and the same answer.
    await office.user()
    store = await office.store()
    await _cards(store, A, B)
    body = _campaign("double-click", 7, {"cards": [A, B]})
    answers = await asyncio.gather(
        *(office.call("POST", "/admin/v1/campaigns", body) for _ in range(3))
    )
    assert [status for status, _ in answers] == [201, 201, 201], answers
    assert answers[0][1] == answers[1][1] == answers[2][1]
    assert len(await office.journal(campaign_id="double-click")) == 2
    await office.check()


async def test_simultaneous_cancels(office: Office) -> None:
    # Cancels clicked twice at once debit or give back once, and both answer.
    await office.user()
    store = await office.store()
    await _cards(store, A, B)
    await store.sale(A, "R-1", day=DAY, accrued_kop=100)
    await office.ok("POST", "/admin/v1/campaigns", _campaign("c2", 7, {"cards": [A, B]}))
    await office.ok(
        "POST",
        "/admin/v1/zeroings",
        {
            "zeroing_id": "z2",
            "before_date": "2026-01-01",
            "note": "n",
            "selection": {"cards": [A, B]},
        },
    )
    for path in ("/admin/v1/campaigns/c2/cancel", "/admin/v1/zeroings/z2/cancel"):
        answers = await asyncio.gather(*(office.call("POST", path) for _ in range(3)))
        assert [status for status, _ in answers] == [200, 200, 200], answers
        await office.check()
