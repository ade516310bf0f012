"""Idempotency: a retried request gets the first answer; a different one under the same key is
refused. Sales are keyed by receipt_id, returns by return_id, holds by hold_id."""

from __future__ import annotations

from typing import Any

import pytest

from tests.agent.conftest import Agent, assert_error, line


def sale_body(card: str, **changes: Any) -> dict[str, Any]:
    return {
        "receipt_id": "R-1",
        "card": card,
        "lines": [line("1", "2000"), line("2", "300", vital=True)],
        "redeem": 0,
        **changes,
    }


async def test_a_retried_sale_answers_exactly_the_same(agent: Agent, card: str) -> None:
    status, first = await agent.post("/pos/v1/receipts", sale_body(card))
    assert status == 200, first
    balance = await agent.balance(card)
    for _ in range(3):
        status, again = await agent.post("/pos/v1/receipts", sale_body(card))
        assert status == 200
        assert again == first
    assert await agent.balance(card) == balance
    status, history = await agent.get(f"/pos/v1/cards/{card}/transactions")
    assert [entry["operation_id"] for entry in history["transactions"]].count(
        first["operation_id"]
    ) == 1


async def test_a_retried_redemption_does_not_redeem_twice(agent: Agent, funded_card: str) -> None:
    verification_id = await agent.redemption_code(funded_card)
    body = sale_body(funded_card, redeem=50, verification_id=verification_id)
    status, first = await agent.post("/pos/v1/receipts", body)
    assert status == 200, first
    balance = await agent.balance(funded_card)
    # The retry comes even after the sync went stale and the code expired: the first answer.
    agent.clock.advance(3601)
    status, again = await agent.post("/pos/v1/receipts", body)
    assert status == 200, again
    assert again == first
    assert await agent.balance(funded_card) == balance


@pytest.mark.parametrize(
    "changes",
    [
        {"lines": [line("1", "2000")]},
        {"lines": [line("1", "2000"), line("2", "300", vital=False)]},
        {"lines": [line("1", "2000", qty=2), line("2", "300", vital=True)]},
        {"cashier": "Петрова"},
    ],
)
async def test_a_different_sale_under_the_same_receipt_id_is_refused(
    agent: Agent, card: str, changes: dict[str, Any]
) -> None:
    status, _ = await agent.post("/pos/v1/receipts", sale_body(card))
    assert status == 200
    balance = await agent.balance(card)
    status, body = await agent.post("/pos/v1/receipts", sale_body(card, **changes))
    assert_error(status, body, "idempotency_conflict", 409)
    assert body["error"]["details"] == {"kind": "sale", "key": "R-1"}
    assert await agent.balance(card) == balance


async def test_a_sale_for_another_card_under_the_same_receipt_id(agent: Agent, card: str) -> None:
    other = await agent.new_card("+7 903 555 01 02")
    await agent.post("/pos/v1/receipts", sale_body(card))
    status, body = await agent.post("/pos/v1/receipts", sale_body(other))
    assert_error(status, body, "idempotency_conflict", 409)
    assert await agent.available(other) == 0


@pytest.mark.parametrize(
    ("first", "retry"),
    [
        (100, "100"),
        ("100", "100.00"),
        (100, "100.00"),
        ("100.5", "100.50"),
        ("100.50", 100.5),
        (" 100 ", 100),
    ],
)
async def test_amounts_written_differently_are_the_same_request(
    agent: Agent, card: str, first: Any, retry: Any
) -> None:
    status, answer = await agent.sale(card, [line("1", first, price=first)], receipt_id="R-1")
    assert status == 200, answer
    status, again = await agent.sale(card, [line("1", retry, price=retry)], receipt_id="R-1")
    assert status == 200, again
    assert again == answer


@pytest.mark.parametrize(("first", "retry"), [(1, "1.0"), ("2", "2.000"), ("0.5", "0.500")])
async def test_quantities_written_differently_are_the_same_request(
    agent: Agent, card: str, first: Any, retry: Any
) -> None:
    status, answer = await agent.sale(card, [line("1", "100", qty=first)], receipt_id="R-1")
    assert status == 200, answer
    status, again = await agent.sale(card, [line("1", "100", qty=retry)], receipt_id="R-1")
    assert status == 200, again
    assert again == answer


async def test_a_retry_after_a_refusal_is_judged_anew(agent: Agent, funded_card: str) -> None:
    # A refused request records nothing: the same receipt id may be used once it is right.
    status, body = await agent.post("/pos/v1/receipts", sale_body(funded_card, redeem=10))
    assert_error(status, body, "verification_required", 403)
    status, body = await agent.post("/pos/v1/receipts", sale_body(funded_card))
    assert status == 200, body


# --- returns ------------------------------------------------------------------------------------


async def test_returns_are_idempotent_on_return_id(agent: Agent, card: str) -> None:
    status, sale = await agent.sale(card, [line("1", "2000", qty=4, price="500")])
    body = {
        "return_id": "RET-1",
        "receipt_id": sale["receipt_id"],
        "lines": [{"line_id": "1", "qty": 1}],
    }
    status, first = await agent.post("/pos/v1/returns", body)
    assert status == 200, first
    balance = await agent.balance(card)
    status, again = await agent.post(
        "/pos/v1/returns", {**body, "lines": [{"line_id": "1", "qty": "1.000"}]}
    )
    assert status == 200, again
    assert again == first
    assert await agent.balance(card) == balance
    status, conflict = await agent.post(
        "/pos/v1/returns", {**body, "lines": [{"line_id": "1", "qty": 2}]}
    )
    assert_error(status, conflict, "idempotency_conflict", 409)
    status, conflict = await agent.post(
        "/pos/v1/returns", {"return_id": "RET-1", "receipt_id": sale["receipt_id"]}
    )
    assert_error(status, conflict, "idempotency_conflict", 409)
    assert await agent.balance(card) == balance


# --- holds --------------------------------------------------------------------------------------


async def test_holds_are_idempotent_on_hold_id(agent: Agent, funded_card: str) -> None:
    verification_id = await agent.redemption_code(funded_card)
    body = {
        "hold_id": "H-1",
        "card": funded_card,
        "amount": "30",
        "ttl_s": 600,
        "verification_id": verification_id,
    }
    status, first = await agent.post("/pos/v1/holds", body)
    assert status == 200, first
    # The same hold again, the amount written differently: the first answer, one hold only.
    status, again = await agent.post("/pos/v1/holds", {**body, "amount": 30.0})
    assert status == 200, again
    assert again == first
    assert (await agent.balance(funded_card))["held"] == 30
    status, conflict = await agent.post("/pos/v1/holds", {**body, "amount": 31})
    assert_error(status, conflict, "idempotency_conflict", 409)
    status, conflict = await agent.post("/pos/v1/holds", {**body, "ttl_s": 601})
    assert_error(status, conflict, "idempotency_conflict", 409)
    assert (await agent.balance(funded_card))["held"] == 30
