"""A store's token cannot mint points: the central server books what it derives from an
operation's inputs, never the figures a store claims, and counts a store's claims in an
authorisation only against the customer.

Each repro of issue 12 is a test here: a sale claiming an accrual of ten million roubles, a hold
of a negative amount, an authorisation with a pending credit of 10¹² kopecks, an honest store's
upload with its figures inflated on the wire.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from central import schema
from central.program import SETTINGS_GRACE
from shared.lots import add_months
from tests.central.conftest import Central, StoreOps, register_store

CARD = "1000000001"


def sale_line(op: dict[str, Any]) -> dict[str, Any]:
    line: dict[str, Any] = op["operation"]["lines"][0]
    return line


async def balance_of(central: Central, card: str = CARD) -> int:
    """Lot remainders less debt."""
    lots = await central.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(schema.lots.c.remaining_kop), 0)).where(
            schema.lots.c.card == card
        )
    )
    debt = await central.scalar(
        sa.select(schema.cards.c.debt_kop).where(schema.cards.c.number == card)
    )
    return int(lots) - int(debt)


async def registered(central: Central, s1: StoreOps, *cards: str) -> None:
    status, body = await central.upload(
        *(s1.register(card, f"916000000{index}") for index, card in enumerate(cards))
    )
    assert status == 200, body


async def test_a_sale_claiming_ten_million_roubles_of_accrual_books_its_five(
    central: Central, s1: StoreOps
) -> None:
    await registered(central, s1, CARD)
    op = s1.sale(CARD, accrued=500, receipt_id="R-1")  # a 100-rouble line: 5 % is 5.00
    assert sale_line(op)["amount_kop"] == 10_000
    sale_line(op)["accrued_kop"] = 1_000_000_000  # the store claims 10,000,000.00
    status, body = await central.upload(op)
    assert status == 200, body
    (result,) = body["results"]
    assert result["status"] == "applied"
    assert {d["field"]: (d["store"], d["central"]) for d in result["differences"]} == {
        "accrued_kop": (1_000_000_000, 500),
        "lines_differing": (0, 1),
    }
    assert await balance_of(central) == 500
    accruals = await central.rows(
        sa.select(schema.transactions.c.amount_kop).where(schema.transactions.c.kind == "accrual")
    )
    assert accruals == [(500,)]
    # The difference is recorded with the operation and counted for the store.
    recorded = await central.scalar(
        sa.select(schema.store_ops.c.differences).where(schema.store_ops.c.seq == op["seq"])
    )
    assert recorded[0]["field"] == "accrued_kop"
    assert await central.scalar(sa.select(schema.stores.c.ops_differing)) == 1
    report = await central.invariants()
    assert report.ok, report.problems


async def test_an_honest_stores_figures_inflated_on_the_wire_leave_the_ledger_consistent(
    central: Central, s1: StoreOps
) -> None:
    await registered(central, s1, CARD)
    ops = [s1.sale(CARD, accrued=accrued, receipt_id=f"R-{accrued}") for accrued in (5, 40, 300)]
    for op in ops:
        for line in op["operation"]["lines"]:
            line["accrued_kop"] *= 1_000_000
    status, body = await central.upload(*ops)
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == ["applied"] * 3
    assert await balance_of(central) == 345
    report = await central.invariants()
    assert report.ok, report.problems
    assert report.transactions_total_kop == report.remainders_total_kop == 345


async def test_a_redemption_beyond_the_receipts_cap_is_booked_at_the_cap(
    central: Central, s1: StoreOps
) -> None:
    await registered(central, s1, CARD)
    status, body = await central.upload(s1.sale(CARD, accrued=5_000, receipt_id="R-1"))
    assert status == 200, body
    # 50 roubles of goods, of which the store claims to have paid 1,000 with points.
    op = s1.sale(CARD, redeemed=5_000, receipt_id="R-2")
    op["operation"]["redeem_kop"] = 100_000
    sale_line(op)["redeemed_kop"] = 100_000
    status, body = await central.upload(op)
    assert status == 200, body
    (result,) = body["results"]
    assert result["status"] == "rejected"  # a line cannot have paid more than it cost
    assert result["reason"] == "impossible_lines"
    op = s1.sale(CARD, redeemed=5_000, receipt_id="R-3")
    op["operation"]["redeem_kop"] = 100_000  # asked for more than the lines allow
    _, body = await central.upload(op)
    (result,) = body["results"]
    assert result["status"] == "applied"
    assert {d["field"] for d in result["differences"]} == set()  # booked 5,000, as claimed
    assert await balance_of(central) == 0


async def test_a_hold_of_a_negative_amount_is_refused_and_makes_nothing_spendable(
    central: Central, s1: StoreOps
) -> None:
    await registered(central, s1, CARD)
    op = s1.hold(CARD, "H-1", 500, datetime.now(UTC) + timedelta(hours=1))
    op["operation"]["amount_kop"] = -100_000
    status, body = await central.upload(op)
    assert status == 422, body
    assert body["error"]["code"] == "validation_error"
    assert await central.scalar(sa.select(sa.func.count()).select_from(schema.holds)) == 0
    status, answer = await authorize(central, "A-1", amount=100_000)
    assert (status, answer["approved"], answer["available"]) == (200, False, 0)


async def authorize(central: Central, authorization_id: str, **fields: Any) -> tuple[int, Any]:
    response = await central.client.post(
        "/sync/v1/authorize",
        json={"authorization_id": authorization_id, "card": CARD, **fields},
        headers=central.headers(),
    )
    return response.status, await response.json()


async def test_an_authorisation_counts_a_stores_claims_only_against_the_customer(
    central: Central, s1: StoreOps
) -> None:
    await registered(central, s1, CARD)
    status, body = await central.upload(
        s1.sale(CARD, accrued=10_000, day=date.today(), receipt_id="R-1")
    )
    assert status == 200, body
    # A claimed pending credit of 10¹² kopecks counts as nothing.
    status, answer = await authorize(central, "s1:R-2", amount=3_000_000_000, pending_delta=10**12)
    assert status == 200, answer
    assert (answer["approved"], answer["available"]) == (False, 10_000)
    # A pending debit counts.
    status, answer = await authorize(central, "s1:R-3", amount=9_000, pending_delta=-2_000)
    assert (answer["approved"], answer["available"]) == (False, 8_000)
    # Another store's holds are not this store's to release.
    other_token = await _other_store(central)
    s2 = StoreOps("s2")
    status, body = await central.upload(
        s2.hold(CARD, "H-OTHER", 6_000, datetime.now(UTC) + timedelta(hours=1)),
        Authorization=f"Bearer {other_token}",
        **{"X-Store-Id": "s2"},
    )
    assert status == 200, body
    status, answer = await authorize(central, "s1:R-4", amount=6_000, releases=["H-OTHER"])
    assert (answer["approved"], answer["available"]) == (False, 4_000)
    # Nor to end by an upload of its own.
    status, body = await central.upload(s1.release(CARD, "H-OTHER"))
    assert status == 200, body
    state = await central.scalar(
        sa.select(schema.holds.c.state).where(schema.holds.c.hold_id == "H-OTHER")
    )
    assert state == "active"
    for amount in (10**13 + 1, -5, "500", 1.5):
        status, answer = await authorize(central, "s1:R-5", amount=amount)
        assert status == 422, (amount, answer)


async def _other_store(central: Central) -> str:
    return await register_store(central.url, "s2")


async def test_a_hold_id_another_store_used_is_rejected_not_a_failed_batch(
    central: Central, s1: StoreOps
) -> None:
    await registered(central, s1, CARD)
    status, body = await central.upload(s1.sale(CARD, accrued=1_000, receipt_id="R-1"))
    token = await _other_store(central)
    s2 = StoreOps("s2")
    later = datetime.now(UTC) + timedelta(hours=1)
    status, body = await central.upload(s1.hold(CARD, "ORDER-1", 100, later))
    assert body["results"][0]["status"] == "applied"
    status, body = await central.upload(
        s2.hold(CARD, "ORDER-1", 100, later), s2.sale(CARD, accrued=10, receipt_id="R-9"),
        Authorization=f"Bearer {token}", **{"X-Store-Id": "s2"},
    )  # fmt: skip
    assert status == 200, body
    assert [(r["status"], r["reason"]) for r in body["results"]] == [
        ("rejected", "hold_id_taken"),
        ("applied", None),
    ]
    # A hold longer than the program allows cannot have been placed.
    status, body = await central.upload(s1.hold(CARD, "ORDER-2", 100, later + timedelta(days=60)))
    assert [(r["status"], r["reason"]) for r in body["results"]] == [("rejected", "hold_too_long")]


async def test_a_settings_version_never_issued_is_rejected_and_a_stale_one_is_raised(
    central: Central, s1: StoreOps
) -> None:
    await registered(central, s1, CARD)
    op = s1.sale(CARD, accrued=500, receipt_id="R-1")
    op["operation"]["settings_version"] = 99
    _, body = await central.upload(op)
    assert [(r["status"], r["reason"]) for r in body["results"]] == [
        ("rejected", "settings_version_unknown")
    ]
    # Version 1 (5 % accrual, half a line by points) was superseded more than the grace ago:
    # a store claiming it now is booked with the oldest version it could still have had.
    await central.execute(
        schema.settings_versions.update().values(
            created_at=datetime.now(UTC) - SETTINGS_GRACE - timedelta(days=1)
        )
    )
    op = s1.sale(CARD, accrued=500, receipt_id="R-2")
    op["operation"]["settings_version"] = 1
    _, body = await central.upload(op)
    (result,) = body["results"]
    assert result["status"] == "applied"
    # Booked with version 4 (the test program in force: a ten-year accrual lifetime).
    assert {d["field"]: (d["store"], d["central"]) for d in result["differences"]} == {
        "settings_version": (1, 4),
        "accrual_expires_on": ("2026-11-01", "2036-05-01"),
    }


async def test_a_sale_day_after_the_central_servers_today_is_booked_today(
    central: Central, s1: StoreOps
) -> None:
    await registered(central, s1, CARD)
    ahead = date.today() + timedelta(days=400)
    _, body = await central.upload(s1.sale(CARD, accrued=500, day=ahead, receipt_id="R-1"))
    (result,) = body["results"]
    assert result["status"] == "applied"
    fields = {d["field"]: (d["store"], d["central"]) for d in result["differences"]}
    assert fields["day"][0] == ahead.isoformat()
    booked = date.fromisoformat(fields["day"][1])
    assert booked <= date.today() + timedelta(days=1)
    lot = (await central.rows(sa.select(schema.lots.c.created_on, schema.lots.c.expires_on)))[0]
    assert (lot.created_on, lot.expires_on) == (booked, add_months(booked, 6))


async def test_a_line_id_twice_on_one_receipt_is_rejected(central: Central, s1: StoreOps) -> None:
    await registered(central, s1, CARD)
    op = s1.sale(CARD, accrued=500, receipt_id="R-1")
    op["operation"]["lines"] = [sale_line(op), sale_line(op)]
    _, body = await central.upload(op)
    assert [(r["status"], r["reason"]) for r in body["results"]] == [
        ("rejected", "impossible_lines")
    ]
    assert await balance_of(central) == 0
