"""Returns: whole and partial, repeated, refunds of redeemed points, debt, and offline."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.agent.conftest import Agent, assert_error, line

RETURNS = "/pos/v1/returns"


def dec(value: object) -> Decimal:
    return Decimal(str(value))


async def return_(
    agent: Agent, return_id: str, receipt_id: str, lines: list[dict[str, Any]] | None = None
) -> tuple[int, Any]:
    body: dict[str, Any] = {"return_id": return_id, "receipt_id": receipt_id}
    if lines is not None:
        body["lines"] = lines
    return await agent.post(RETURNS, body)


async def test_a_whole_return_reverses_the_accrual(agent: Agent, card: str) -> None:
    await agent.credit(card, 10)
    before = await agent.balance(card)
    status, sale = await agent.sale(card, [line("1", "1000"), line("2", "500", vital=True)])
    assert status == 200, sale
    status, body = await return_(agent, "RET-1", sale["receipt_id"])
    assert status == 200, body
    assert body["return_id"] == "RET-1"
    assert body["receipt_id"] == sale["receipt_id"]
    assert body["operation_id"]
    assert body["accrual_reversed"] == 55
    assert body["redemption_refunded"] == 0
    assert body["debt_added"] == 0
    assert {item["line_id"]: item["qty"] for item in body["lines"]} == {"1": "1", "2": "1"}
    assert body["balance"] == before
    assert await agent.balance(card) == before


async def test_partial_returns_never_exceed_the_sale(agent: Agent, card: str) -> None:
    status, sale = await agent.sale(card, [line("1", "2000", qty=2, price="1000")])
    assert sale["accrued"] == 100
    status, first = await return_(agent, "RET-1", sale["receipt_id"], [{"line_id": "1", "qty": 1}])
    assert status == 200, first
    assert first["accrual_reversed"] == 50
    assert await agent.available(card) == 50
    status, second = await return_(
        agent, "RET-2", sale["receipt_id"], [{"line_id": "1", "qty": "1"}]
    )
    assert status == 200, second
    assert second["accrual_reversed"] == 50
    assert await agent.available(card) == 0
    status, body = await return_(agent, "RET-3", sale["receipt_id"], [{"line_id": "1", "qty": 1}])
    assert_error(status, body, "return_exceeds_sale", 422)
    status, body = await return_(agent, "RET-4", sale["receipt_id"])
    assert_error(status, body, "return_exceeds_sale", 422)


async def test_a_return_of_more_than_was_sold(agent: Agent, card: str) -> None:
    status, sale = await agent.sale(card, [line("1", "2000", qty=2, price="1000")])
    status, body = await return_(agent, "RET-1", sale["receipt_id"], [{"line_id": "1", "qty": 3}])
    assert_error(status, body, "return_exceeds_sale", 422)
    status, body = await return_(
        agent, "RET-2", sale["receipt_id"], [{"line_id": "1", "qty": "1.5"}]
    )
    assert status == 200, body  # a fractional quantity (a blister of a pack) is fine
    status, body = await return_(
        agent, "RET-3", sale["receipt_id"], [{"line_id": "1", "qty": "0.501"}]
    )
    assert_error(status, body, "return_exceeds_sale", 422)
    assert await agent.available(card) == 25


async def test_a_return_of_a_line_not_on_the_receipt(agent: Agent, card: str) -> None:
    status, sale = await agent.sale(card)
    status, body = await return_(agent, "RET-1", sale["receipt_id"], [{"line_id": "9", "qty": 1}])
    assert_error(status, body, "return_exceeds_sale", 422)
    assert await agent.available(card) == 100


async def test_a_return_of_an_unknown_receipt(agent: Agent, card: str) -> None:
    status, body = await return_(agent, "RET-1", "R-NOPE")
    assert_error(status, body, "receipt_not_found", 404)


async def test_a_repeated_return_answers_the_same(agent: Agent, card: str) -> None:
    status, sale = await agent.sale(card, [line("1", "2000", qty=2, price="1000")])
    request = [{"line_id": "1", "qty": 1}]
    status, first = await return_(agent, "RET-1", sale["receipt_id"], request)
    status, again = await return_(agent, "RET-1", sale["receipt_id"], request)
    assert status == 200
    assert again == first
    assert await agent.available(card) == 50


async def test_partials_then_the_rest_reverse_exactly(agent: Agent, funded_card: str) -> None:
    card = funded_card
    before = await agent.balance(card)
    verification_id = await agent.redemption_code(card)
    lines = [
        line("a", "999.99", qty=3, price="333.33"),
        line("b", "77.77", qty=7, price="11.11", vital=True),
        line("c", "10.01"),
    ]
    status, sale = await agent.sale(card, lines, redeem="33.33", verification_id=verification_id)
    assert status == 200, sale
    receipt = sale["receipt_id"]
    reversed_kop = Decimal(0)
    refunded = Decimal(0)
    partials = [
        [{"line_id": "a", "qty": 1}],
        [{"line_id": "b", "qty": 3}, {"line_id": "a", "qty": "0.5"}],
        [{"line_id": "b", "qty": 2}],
    ]
    for index, partial in enumerate(partials):
        status, body = await return_(agent, f"RET-{index}", receipt, partial)
        assert status == 200, body
        reversed_kop += dec(body["accrual_reversed"])
        refunded += dec(body["redemption_refunded"])
    status, rest = await return_(agent, "RET-REST", receipt)
    assert status == 200, rest
    assert {item["line_id"]: item["qty"] for item in rest["lines"]} == {
        "a": "1.5",
        "b": "2",
        "c": "1",
    }
    reversed_kop += dec(rest["accrual_reversed"])
    refunded += dec(rest["redemption_refunded"])
    assert reversed_kop == dec(sale["accrued"])
    assert refunded == dec(sale["redeemed"]) == Decimal("33.33")
    assert await agent.balance(card) == before


async def test_a_return_refunds_redeemed_points(agent: Agent, funded_card: str) -> None:
    before = await agent.balance(funded_card)
    verification_id = await agent.redemption_code(funded_card)
    status, sale = await agent.sale(
        funded_card, [line("1", "1000")], redeem=80, verification_id=verification_id
    )
    assert status == 200, sale
    assert dec(sale["balance"]["available"]) == Decimal("20") + Decimal("46")
    status, body = await return_(agent, "RET-1", sale["receipt_id"])
    assert status == 200, body
    assert body["redemption_refunded"] == 80
    assert body["accrual_reversed"] == 46
    # The refunded points go back to their lot, with its expiry.
    assert body["balance"] == before


async def test_a_return_of_spent_points_becomes_debt(agent: Agent, card: str) -> None:
    status, first = await agent.sale(card, [line("1", "2000")])  # 100 points
    await agent.make_fresh()
    verification_id = await agent.redemption_code(card)
    status, spend = await agent.sale(
        card, [line("1", "1000")], redeem=100, verification_id=verification_id
    )
    assert status == 200, spend
    assert spend["balance"]["available"] == 45
    status, body = await return_(agent, "RET-1", first["receipt_id"])
    assert status == 200, body
    assert body["accrual_reversed"] == 100
    assert body["debt_added"] == 100
    assert body["balance"]["debt"] == 100
    # 45 points are left in the second sale's lot, 100 are owed: nothing can be redeemed.
    assert body["balance"]["available"] == 0
    assert body["balance"]["expiring"] == [{"date": "2027-05-23", "amount": 45}]
    # The next credit pays the debt first.
    await agent.credit(card, 60)
    balance = await agent.balance(card)
    assert balance["debt"] == 40
    assert dec(balance["available"]) == Decimal("5")


async def test_returns_work_when_stale(agent: Agent, card: str) -> None:
    status, sale = await agent.sale(card)
    assert status == 200  # never synced
    status, body = await return_(agent, "RET-1", sale["receipt_id"], [{"line_id": "1", "qty": 1}])
    assert status == 200, body
    await agent.make_fresh()
    status, sale = await agent.sale(card)
    agent.clock.advance(7200)
    status, body = await return_(agent, "RET-2", sale["receipt_id"])
    assert status == 200, body
    assert await agent.available(card) == 0


@pytest.mark.parametrize(
    "lines",
    [[], [{"line_id": "1", "qty": 0}], [{"line_id": "1", "qty": 1}, {"line_id": "1", "qty": 1}]],
)
async def test_malformed_return_lines(agent: Agent, card: str, lines: list[dict[str, Any]]) -> None:
    status, sale = await agent.sale(card, [line("1", "2000", qty=2, price="1000")])
    status, body = await return_(agent, "RET-1", sale["receipt_id"], lines)
    assert 400 <= status < 500, body
    assert body["error"]["code"] in {"validation_error", "return_exceeds_sale"}
    assert await agent.available(card) == 100
