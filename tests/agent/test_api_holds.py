"""Holds: points set aside for an order, consumed by a sale, released, or expired."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.agent.conftest import Agent, assert_error, line

HOLDS = "/pos/v1/holds"


async def hold(
    agent: Agent,
    card: str,
    amount: Any = 40,
    *,
    hold_id: str = "H-1",
    ttl_s: int = 3600,
    verify: bool = True,
) -> tuple[int, Any]:
    body: dict[str, Any] = {"hold_id": hold_id, "card": card, "amount": amount, "ttl_s": ttl_s}
    if verify:
        body["verification_id"] = await agent.redemption_code(card)
    return await agent.post(HOLDS, body)


async def test_a_hold_reduces_the_available_balance(agent: Agent, funded_card: str) -> None:
    status, body = await hold(agent, funded_card, "40.50")
    assert status == 200, body
    assert body["hold_id"] == "H-1"
    assert body["card"] == funded_card
    assert body["amount"] == 40.5
    assert body["state"] == "active"
    expires_at = agent.clock.now() + timedelta(hours=1)
    assert body["expires_at"] == expires_at.isoformat().replace("+00:00", "Z")
    assert body["balance"]["held"] == 40.5
    assert body["balance"]["available"] == 59.5
    balance = await agent.balance(funded_card)
    assert balance["available"] == 59.5
    assert balance["held"] == 40.5


async def test_releasing_a_hold_restores_the_balance(agent: Agent, funded_card: str) -> None:
    await hold(agent, funded_card, 40)
    status, body = await agent.delete(f"{HOLDS}/H-1")
    assert status == 200, body
    assert body["state"] == "released"
    assert body["balance"]["available"] == 100
    assert body["balance"]["held"] == 0
    assert await agent.available(funded_card) == 100
    # Releasing again answers the same.
    status, again = await agent.delete(f"{HOLDS}/H-1")
    assert status == 200
    assert again["state"] == "released"
    assert await agent.available(funded_card) == 100


async def test_a_sale_consumes_the_hold(agent: Agent, funded_card: str) -> None:
    await hold(agent, funded_card, 40)
    verification_id = await agent.redemption_code(funded_card)
    status, sale = await agent.sale(
        funded_card,
        [line("1", "1000")],
        redeem=40,
        hold_id="H-1",
        verification_id=verification_id,
    )
    assert status == 200, sale
    assert sale["redeemed"] == 40
    assert sale["balance"]["held"] == 0
    # 100 − 40 redeemed + 5 % of the 960 paid with money.
    assert sale["balance"]["available"] == 108
    status, body = await agent.delete(f"{HOLDS}/H-1")
    assert_error(status, body, "hold_resolved", 409)
    assert body["error"]["details"]["state"] == "consumed"
    # A second sale naming the same hold.
    status, body = await agent.sale(funded_card, hold_id="H-1")
    assert_error(status, body, "hold_resolved", 409)


async def test_a_sale_without_redemption_releases_its_hold(agent: Agent, funded_card: str) -> None:
    await hold(agent, funded_card, 40)
    status, sale = await agent.sale(funded_card, [line("1", "1000")], hold_id="H-1")
    assert status == 200, sale
    assert sale["balance"]["held"] == 0
    assert sale["balance"]["available"] == 150


async def test_unknown_holds(agent: Agent, funded_card: str) -> None:
    status, body = await agent.delete(f"{HOLDS}/H-NOPE")
    assert_error(status, body, "hold_not_found", 404)
    status, body = await agent.sale(funded_card, hold_id="H-NOPE")
    assert_error(status, body, "hold_not_found", 404)


async def test_a_hold_of_another_card_is_not_found(agent: Agent, funded_card: str) -> None:
    await hold(agent, funded_card, 40)
    other = await agent.new_card("+7 903 555 01 02")
    status, body = await agent.sale(other, hold_id="H-1")
    assert_error(status, body, "hold_not_found", 404)
    assert (await agent.balance(funded_card))["held"] == 40


async def test_a_hold_expires_after_its_ttl(agent: Agent, funded_card: str) -> None:
    await hold(agent, funded_card, 40, ttl_s=120)
    agent.clock.advance(119)
    assert await agent.available(funded_card) == 60
    agent.clock.advance(1)
    assert await agent.available(funded_card) == 100
    status, body = await agent.sale(funded_card, hold_id="H-1")
    assert_error(status, body, "hold_expired", 410)
    status, body = await agent.delete(f"{HOLDS}/H-1")
    assert status == 200, body
    assert body["state"] == "expired"


async def test_a_hold_above_the_available_balance(agent: Agent, funded_card: str) -> None:
    status, body = await hold(agent, funded_card, "100.01")
    assert_error(status, body, "insufficient_balance", 409)
    await hold(agent, funded_card, 60, hold_id="H-2")
    status, body = await hold(agent, funded_card, "40.01", hold_id="H-3")
    assert_error(status, body, "insufficient_balance", 409)
    status, body = await hold(agent, funded_card, 40, hold_id="H-4")
    assert status == 200, body
    assert body["balance"]["available"] == 0


async def test_a_hold_needs_a_fresh_sync_and_a_code(agent: Agent, funded_card: str) -> None:
    status, body = await hold(agent, funded_card, 10, verify=False)
    assert_error(status, body, "verification_required", 403)
    agent.clock.advance(3601)
    status, body = await hold(agent, funded_card, 10, verify=False)
    assert_error(status, body, "redemption_stale_sync", 409)
    assert body["error"]["message"] == "Списание бонусов невозможно по техническим причинам"


async def test_a_refused_hold_does_not_use_up_the_code(agent: Agent, funded_card: str) -> None:
    verification_id = await agent.redemption_code(funded_card)
    body = {"hold_id": "H-1", "card": funded_card, "ttl_s": 600, "verification_id": verification_id}
    status, answer = await agent.post(HOLDS, {**body, "amount": 500})
    assert_error(status, answer, "insufficient_balance", 409)
    status, answer = await agent.post(HOLDS, {**body, "amount": 50})
    assert status == 200, answer


@pytest.mark.parametrize(
    ("amount", "ttl_s"), [(0, 600), (-5, 600), (10, 59), (10, 8 * 86400), ("1.001", 600)]
)
async def test_malformed_holds(agent: Agent, funded_card: str, amount: Any, ttl_s: int) -> None:
    status, body = await hold(agent, funded_card, amount, ttl_s=ttl_s, verify=False)
    assert_error(status, body, "validation_error", 422)
