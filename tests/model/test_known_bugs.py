"""The product bugs the ledger model test found, each as a small deterministic reproduction.

Each test states the intended behaviour.  An open bug's test is marked ``xfail(strict=True)``: it
fails today, and once the bug is fixed it passes, which fails the suite until the marker goes and
the bug's name joins ``tests.model.model.FIXED_BUGS`` (then the model test checks that case too).
A fixed bug's test stays, unmarked, as a regression test.

Same system as the model test: a central server and two agents in-process (``harness.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from central import schema
from central.campaigns import run_campaign
from central.selection import CardFilter, Selection
from tests.model.harness import System, Till, kop

START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PHONE = "9161234567"


def _line(amount: str) -> list[dict[str, Any]]:
    return [{"line_id": "1", "sku": "SKU-1", "qty": 1, "price": amount, "amount": amount}]


def _sale(receipt_id: str, card: str, amount: str, redeem: str = "0", **extra: Any) -> Any:
    return {
        "receipt_id": receipt_id,
        "card": card,
        "lines": _line(amount),
        "redeem": redeem,
        **extra,
    }


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    system = System(tmp_path, ("store-a", "store-b"), START)
    await system.start()
    try:
        await system.set_program(
            verification_resend_after_s=0, verification_codes_per_phone_hour_max=100
        )
        for till in system.tills.values():
            assert await till.sync()
        yield system
    finally:
        await system.close()


async def _campaign(system: System, campaign_id: str, amount_kop: int, days: int | None) -> None:
    await run_campaign(
        system.db,
        campaign_id=campaign_id,
        amount_kop=amount_kop,
        expires_on=None if days is None else START.date() + timedelta(days=days),
        note=campaign_id,
        selection=Selection(filter=CardFilter()),
        today=START.date(),
        now=START,
        login=None,
    )


async def _card_with_points(system: System, points_kop: int = 10_000) -> str:
    """A card registered at store A with a campaign's points, known to both stores."""
    a, b = system.tills["store-a"], system.tills["store-b"]
    status, body = await a.call(
        "POST", "/pos/v1/customers", {"phone": PHONE, "consents": {"personal_data": True}}
    )
    assert status == 201, body
    card = str(body["card"]["number"])
    assert await a.sync()
    await _campaign(system, "W", points_kop, None)
    assert await a.sync()
    assert await b.sync()
    return card


async def _redeem(till: Till, receipt_id: str, card: str, amount: str, redeem: str) -> Any:
    code = await till.confirmed_code(card, PHONE)
    return await till.call(
        "POST", "/pos/v1/receipts", _sale(receipt_id, card, amount, redeem, verification_id=code)
    )


async def test_a_return_of_an_offline_overspend_does_not_stop_the_store_syncing(
    system: System,
) -> None:
    a, b = system.tills["store-a"], system.tills["store-b"]
    card = await _card_with_points(system)
    # Both stores are offline within the hour; each redeems the card's 100 points.
    system.set_online("store-a", False)
    system.set_online("store-b", False)
    assert (await _redeem(a, "A-1", card, "400", "100"))[0] == 200
    assert (await _redeem(b, "B-1", card, "400", "100"))[0] == 200
    # Store A's customer brings the goods back.
    status, body = await a.call(
        "POST", "/pos/v1/returns", {"return_id": "RA-1", "receipt_id": "A-1"}
    )
    assert status == 200, body
    system.set_online("store-a", True)
    system.set_online("store-b", True)
    assert await b.sync()  # B's redemption takes the points; A's becomes debt centrally
    # Today the central server answers 500 (an AssertionError in refund_allocations) to every
    # upload of A's queue: the store never syncs again.
    assert await a.sync()


async def test_a_sale_consumes_its_own_hold_while_online(system: System) -> None:
    a = system.tills["store-a"]
    card = await _card_with_points(system)
    code = await a.confirmed_code(card, PHONE)
    hold = {"hold_id": "H-1", "card": card, "amount": "100", "ttl_s": 3600, "verification_id": code}
    status, body = await a.call("POST", "/pos/v1/holds", hold)
    assert status == 200, body
    assert await a.sync()  # the hold reaches the central server, as it does within minutes
    # Today: 409 insufficient_balance, reason chain_wide_balance (the hold counts against itself).
    status, body = await a.call(
        "POST", "/pos/v1/receipts", _sale("A-1", card, "400", "50", hold_id="H-1")
    )
    assert status == 200, body


async def test_a_second_redemption_before_the_upload_sees_the_real_balance(
    system: System,
) -> None:
    a = system.tills["store-a"]
    card = await _card_with_points(system)
    status, body = await _redeem(a, "A-1", card, "400", "40")
    assert status == 200, body
    status, found = await a.call("POST", "/pos/v1/cards/lookup", {"card": card})
    assert kop(found["balance"]["available"]) == 7_800  # 100 − 40 + 18 accrued
    # Today: refused chain-wide with 38.00 available (the first redemption counted twice).
    status, body = await _redeem(a, "A-2", card, "400", "40")
    assert status == 200, body


async def test_a_refused_sale_leaves_no_points_held(system: System) -> None:
    a, b = system.tills["store-a"], system.tills["store-b"]
    card = await _card_with_points(system)
    # 100 points on a receipt of 100 roubles: the cap is 50, the store refuses.
    status, body = await _redeem(a, "A-1", card, "100", "100")
    assert body["error"]["code"] == "redemption_exceeds_max", body
    # Today the central server approved first and holds the 100 points for two minutes: the
    # other store is refused chain-wide.
    status, body = await _redeem(b, "B-1", card, "400", "100")
    assert status == 200, body


async def test_a_retried_receipt_is_authorised_for_its_new_amount(system: System) -> None:
    a, b = system.tills["store-a"], system.tills["store-b"]
    card = await _card_with_points(system)
    # Store B spends every point and uploads; store A has not pulled since.
    assert (await _redeem(b, "B-1", card, "400", "100"))[0] == 200
    assert await b.sync()
    # A: one kopeck with a code not yet confirmed: approved centrally, refused by the store.
    status, sent = await a.call(
        "POST", "/pos/v1/verifications", {"card": card, "purpose": "redemption", "phone": PHONE}
    )
    assert status == 201, sent
    body = _sale("A-1", card, "400", "0.01", verification_id=sent["verification_id"])
    status, refused = await a.call("POST", "/pos/v1/receipts", body)
    assert refused["error"]["code"] == "verification_required", refused
    # The same receipt again for 100: today approved without a check, and the store, whose
    # replica still shows 100, redeems points the card no longer has (debt at the upload).
    status, body = await _redeem(a, "A-1", card, "400", "100")
    assert body.get("error", {}).get("code") == "insufficient_balance", body
    assert await a.sync()
    async with system.db.read() as conn:
        debt = await conn.scalar(
            sa.select(schema.cards.c.debt_kop).where(schema.cards.c.number == card)
        )
    assert debt == 0


async def test_a_hold_on_a_card_merged_later_can_be_sold(system: System) -> None:
    a, b = system.tills["store-a"], system.tills["store-b"]
    status, body = await a.call(
        "POST", "/pos/v1/customers", {"phone": PHONE, "consents": {"personal_data": True}}
    )
    first = body["card"]["number"]
    assert await a.sync()
    # Store B has not pulled the card: the same phone makes a second card there.
    status, body = await b.call(
        "POST", "/pos/v1/customers", {"phone": PHONE, "consents": {"personal_data": True}}
    )
    assert status == 201, body
    second = body["card"]["number"]
    assert (await b.call("POST", "/pos/v1/receipts", _sale("B-1", second, "2000")))[0] == 200
    code = await b.confirmed_code(second, PHONE)
    hold = {
        "hold_id": "H-1",
        "card": second,
        "amount": "50",
        "ttl_s": 3600,
        "verification_id": code,
    }
    assert (await b.call("POST", "/pos/v1/holds", hold))[0] == 200
    assert await b.sync()  # the central server merges the second card into the first
    status, found = await b.call("POST", "/pos/v1/cards/lookup", {"card": second})
    assert found["card"]["number"] == first
    # Today: 404 hold_not_found (the hold names the second card, the sale resolves to the first).
    status, body = await b.call(
        "POST", "/pos/v1/receipts", _sale("B-2", second, "400", "50", hold_id="H-1")
    )
    assert status == 200, body


async def test_a_return_after_the_central_server_took_other_lots(system: System) -> None:
    a = system.tills["store-a"]
    card = await _card_with_points(system)  # 100 non-expiring points
    status, body = await _redeem(a, "A-1", card, "400", "50")  # the store takes them from W
    assert status == 200, body
    await _campaign(system, "E", 10_000, 10)  # 100 points expiring in ten days
    # The upload: the central server takes the 50 from E, which expires first; the store pulls
    # W whole again.
    assert await a.sync()
    # Today: 500 internal_error (the refund overfills W in the store's transaction).
    status, body = await a.call(
        "POST", "/pos/v1/returns", {"return_id": "RA-1", "receipt_id": "A-1"}
    )
    assert status == 200, body


async def test_a_code_confirmed_before_a_merge_still_authorises(system: System) -> None:
    a, b = system.tills["store-a"], system.tills["store-b"]
    status, body = await a.call(
        "POST", "/pos/v1/customers", {"phone": PHONE, "consents": {"personal_data": True}}
    )
    assert await a.sync()
    status, body = await b.call(
        "POST", "/pos/v1/customers", {"phone": PHONE, "consents": {"personal_data": True}}
    )
    second = body["card"]["number"]
    assert (await b.call("POST", "/pos/v1/receipts", _sale("B-1", second, "2000")))[0] == 200
    code = await b.confirmed_code(second, PHONE)
    assert await b.sync()  # the central server merges the second card into the first
    # Today: 403 verification_required, "no such confirmation" (the code names the second card).
    status, body = await b.call(
        "POST", "/pos/v1/receipts", _sale("B-2", second, "400", "10", verification_id=code)
    )
    assert status == 200, body
