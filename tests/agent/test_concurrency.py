"""Tills racing for one card: the agent never redeems more than the balance."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from tests.agent.conftest import PHONE, Agent, line

TILLS = 8


def dec(value: object) -> Decimal:
    return Decimal(str(value))


async def codes_for(agent: Agent, card: str, count: int) -> list[str]:
    """One confirmed redemption code per till (the settings allow sending them back to back)."""
    agent.set_settings(verification_resend_after_s=0)
    return [await agent.redemption_code(card, PHONE) for _ in range(count)]


async def race(
    agent: Agent, card: str, redeem: Decimal, verification_ids: list[str]
) -> list[tuple[int, Any]]:
    # This agent has no central server, so every redemption is an offline one; the race is
    # about the balance, not the offline caps (tested in test_api_receipts.py).
    agent.set_settings(
        offline_redemption_max_kop=None,
        offline_redemption_store_total_max_kop=None,
        offline_redemptions_per_card_day_max=None,
    )

    async def till(index: int) -> tuple[int, Any]:
        return await agent.post(
            "/pos/v1/receipts",
            {
                "receipt_id": f"R-TILL-{index}",
                "card": card,
                "lines": [line("1", "1000")],
                "redeem": str(redeem),
                "verification_id": verification_ids[index],
            },
            register_id=f"till-{index}",
        )

    return await asyncio.gather(*(till(index) for index in range(len(verification_ids))))


def check(results: list[tuple[int, Any]], initial: Decimal, final: Decimal) -> list[dict[str, Any]]:
    won = [body for status, body in results if status == 200]
    for status, body in results:
        assert status < 500, body
        if status != 200:
            assert body["error"]["code"] in {"insufficient_balance", "redemption_exceeds_max"}
    assert final >= 0
    redeemed = sum((dec(body["redeemed"]) for body in won), Decimal(0))
    accrued = sum((dec(body["accrued"]) for body in won), Decimal(0))
    assert redeemed <= initial
    assert final == initial - redeemed + accrued
    return won


async def test_eight_tills_redeeming_almost_the_whole_balance(
    agent: Agent, funded_card: str
) -> None:
    initial = await agent.available(funded_card)
    assert initial == 100
    verification_ids = await codes_for(agent, funded_card, TILLS)
    await agent.make_fresh()
    results = await race(agent, funded_card, Decimal("99.99"), verification_ids)
    final = await agent.available(funded_card)
    won = check(results, initial, final)
    # After one redemption only 0.01 + its accrual is left: exactly one till succeeds.
    assert len(won) == 1
    assert final == Decimal("0.01") + Decimal("45.00")


@pytest.mark.parametrize(("redeem", "fit"), [("30", 3), ("12.5", 8)])
async def test_as_many_as_fit_succeed(agent: Agent, card: str, redeem: str, fit: int) -> None:
    await agent.credit(card, 100)
    # No accrual on the racing sales, so that the arithmetic is about the redemptions alone.
    agent.set_settings(accrual_rate_other_pct=Decimal(0))
    initial = await agent.available(card)
    verification_ids = await codes_for(agent, card, TILLS)
    await agent.make_fresh()
    results = await race(agent, card, Decimal(redeem), verification_ids)
    final = await agent.available(card)
    won = check(results, initial, final)
    assert len(won) == fit
    assert final == initial - fit * Decimal(redeem)


async def test_one_code_raced_by_eight_tills_pays_once(agent: Agent, funded_card: str) -> None:
    verification_id = await agent.redemption_code(funded_card)
    results = await race(agent, funded_card, Decimal("10"), [verification_id] * TILLS)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [403] * (TILLS - 1), results
    assert await agent.available(funded_card) == 100 - 10 + Decimal("49.50")


async def test_the_same_receipt_from_eight_tills_is_recorded_once(
    agent: Agent, funded_card: str
) -> None:
    body = {"receipt_id": "R-SAME", "card": funded_card, "lines": [line("1", "2000")]}
    results = await asyncio.gather(
        *(agent.post("/pos/v1/receipts", body, register_id=f"till-{i}") for i in range(TILLS))
    )
    assert all(status == 200 for status, _ in results), results
    assert len({answer["operation_id"] for _, answer in results}) == 1
    assert await agent.available(funded_card) == 200


async def test_concurrent_holds_never_hold_more_than_the_balance(
    agent: Agent, funded_card: str
) -> None:
    verification_ids = await codes_for(agent, funded_card, TILLS)
    await agent.make_fresh()

    async def till(index: int) -> tuple[int, Any]:
        return await agent.post(
            "/pos/v1/holds",
            {
                "hold_id": f"H-{index}",
                "card": funded_card,
                "amount": "40",
                "ttl_s": 600,
                "verification_id": verification_ids[index],
            },
            register_id=f"till-{index}",
        )

    results = await asyncio.gather(*(till(index) for index in range(TILLS)))
    assert sorted(status for status, _ in results) == [200, 200] + [409] * (TILLS - 2)
    balance = await agent.balance(funded_card)
    assert balance["held"] == 80
    assert balance["available"] == 20
