"""Annulment (аннулирование бонусов чека): the accrual goes, the redemption stays, what was spent
becomes debt, and a later return does not reverse the accrual a second time."""

from __future__ import annotations

from datetime import date

from tests.office.conftest import Office, assert_error

CARD = "7300000000011"
D0, D1, D2, D3 = date(2025, 4, 1), date(2025, 4, 2), date(2025, 4, 3), date(2025, 4, 4)


async def test_annulment_of_a_receipts_accrual(office: Office) -> None:
    await office.user()
    store = await office.store()
    await store.register(CARD, "9400000001")
    await store.sale(CARD, "R-0", day=D0, accrued_kop=300)
    # R-1 pays 2 roubles with points and earns 10.
    lot = await store.sale(CARD, "R-1", day=D1, redeemed_kop=200, accrued_kop=1_000)
    # R-2 spends 6 roubles: the last rouble of R-0 and 5 of R-1's accrual.
    await store.sale(CARD, "R-2", day=D2, redeemed_kop=600)
    await office.check()
    before = await office.card(CARD)
    assert before["balance"]["usable_kop"] == 500
    assert before["balance"]["debt_kop"] == 0

    result = await office.ok(
        "POST", "/admin/v1/receipts/store-1/R-1/annul", {"note": "неверная матрица начисления"}
    )
    assert result == {
        "receipt_id": "R-1",
        "store_id": "store-1",
        "annulled_kop": 1_000,
        "debt_added_kop": 500,
        "already": False,
    }
    await office.check()
    page = await office.card(CARD)
    assert page["balance"]["usable_kop"] == 0
    assert page["balance"]["debt_kop"] == 500
    lots = {lot_["lot_id"]: lot_ for lot_ in page["lots"]}
    assert lots[lot]["remaining_kop"] == 0
    rows = await office.journal(receipt_id="R-1")
    kinds = sorted((r["kind"], r["amount_kop"]) for r in rows)
    # The redemption stays; the accrual is taken back in full.
    assert kinds == [("accrual", 1_000), ("annulment", -1_000), ("redemption", -200)]
    annulment = next(r for r in rows if r["kind"] == "annulment")
    assert annulment["store_id"] == "store-1"
    assert annulment["note"] == "неверная матрица начисления"
    assert annulment["lots"] == [[lot, 500]]

    # Idempotent: nothing more is taken.
    again = await office.ok("POST", "/admin/v1/receipts/store-1/R-1/annul", {})
    assert again["already"] is True
    assert again["annulled_kop"] == 0
    assert len(await office.journal(receipt_id="R-1", kind="annulment")) == 1
    assert (await office.card(CARD))["balance"]["debt_kop"] == 500
    await office.check()

    # The store later takes the whole receipt back: its redemption is refunded, its accrual is
    # not reversed a second time.
    await store.return_all(CARD, "R-1", day=D3, lot=lot)
    await office.check()
    rows = await office.journal(receipt_id="R-1")
    kinds = sorted((r["kind"], r["amount_kop"]) for r in rows)
    assert kinds == [
        ("accrual", 1_000),
        ("annulment", -1_000),
        ("redemption", -200),
        ("redemption_refund", 200),
    ]
    page = await office.card(CARD)
    assert page["balance"]["usable_kop"] == 200
    assert page["balance"]["debt_kop"] == 500


async def test_annulment_after_a_partial_return_and_unknown_receipts(office: Office) -> None:
    await office.user()
    store = await office.store()
    await store.register(CARD, "9400000002")
    lot = await store.sale(CARD, "R-1", day=D1, accrued_kop=800)
    await store.return_all(CARD, "R-1", day=D2, lot=lot)
    await office.check()
    # Everything was already reversed by the return: nothing left to annul.
    result = await office.ok("POST", "/admin/v1/receipts/store-1/R-1/annul", {})
    assert (result["annulled_kop"], result["debt_added_kop"]) == (0, 0)
    assert await office.journal(kind="annulment") == []
    await office.check()

    for path in ("/admin/v1/receipts/store-1/R-404/annul", "/admin/v1/receipts/store-9/R-1/annul"):
        status, answer = await office.call("POST", path, {})
        assert_error(status, answer, "receipt_not_found", 404)
    status, answer = await office.call(
        "POST", "/admin/v1/receipts/store-1/R-1/annul", {"reason": "x"}
    )
    assert_error(status, answer, "validation_error", 422)
