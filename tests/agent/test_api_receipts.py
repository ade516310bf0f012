"""Receipt calculation and sales: accrual, redemption, the one-hour rule and confirmation codes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from tests.agent.conftest import Agent, assert_error, line

CALCULATE = "/pos/v1/receipts/calculate"
STALE_MESSAGE = "Списание бонусов невозможно по техническим причинам"


def dec(value: object) -> Decimal:
    return Decimal(str(value))


# --- calculate ----------------------------------------------------------------------------------


async def test_calculate_accrues_1_percent_on_vital_and_5_on_others(
    agent: Agent, card: str
) -> None:
    lines = [line("v", "1000", vital=True), line("o", "1000"), line("c", "333.33", qty=3)]
    status, body = await agent.post(CALCULATE, {"card": card, "lines": lines})
    assert status == 200, body
    by_line = {item["line_id"]: item for item in body["lines"]}
    assert dec(by_line["v"]["accrued"]) == Decimal("10")
    assert dec(by_line["o"]["accrued"]) == Decimal("50")
    # 5 % of 333.33 is 16.6665: the receipt's accrual is rounded down to the kopeck once.
    assert dec(body["accrued"]) == Decimal("76.66")
    assert sum(dec(item["accrued"]) for item in body["lines"]) == dec(body["accrued"])
    # Half of each line may be paid with points.
    assert dec(by_line["v"]["max_redeem"]) == Decimal("500")
    assert dec(by_line["c"]["max_redeem"]) == Decimal("166.66")
    assert body["max_redeem"] == 0  # no points yet
    assert body["verification_required"] is True


async def test_calculate_clamps_the_redemption_and_has_no_side_effects(
    agent: Agent, funded_card: str
) -> None:
    before = await agent.balance(funded_card)
    status, transactions_before = await agent.get(f"/pos/v1/cards/{funded_card}/transactions")
    body = {"card": funded_card, "lines": [line("1", "150")], "redeem": "90"}
    status, answer = await agent.post(CALCULATE, body)
    assert status == 200, answer
    assert answer["max_redeem"] == 75  # half of 150, below the balance of 100
    assert answer["redeem"] == 75
    assert answer["lines"][0]["redeemed"] == 75
    assert dec(answer["accrued"]) == Decimal("3.75")  # 5 % of the 75 paid with money
    assert answer["balance"] == before
    assert answer["redemption_allowed"] is True
    for _ in range(3):
        await agent.post(CALCULATE, body)
    assert await agent.balance(funded_card) == before
    status, transactions_after = await agent.get(f"/pos/v1/cards/{funded_card}/transactions")
    assert transactions_after == transactions_before


async def test_calculate_when_stale_offers_no_redemption(agent: Agent, card: str) -> None:
    await agent.credit(card, 100)
    status, body = await agent.post(CALCULATE, {"card": card, "lines": [line()], "redeem": 50})
    assert status == 200, body
    assert body["redemption_allowed"] is False
    assert body["redemption_refusal"] == {"code": "redemption_stale_sync", "message": STALE_MESSAGE}
    assert body["max_redeem"] == 0
    assert body["redeem"] == 0
    assert body["accrued"] == 100  # accrual works offline
    assert body["balance"]["available"] == 100


async def test_calculate_for_an_unknown_card(agent: Agent) -> None:
    status, body = await agent.post(CALCULATE, {"card": "5555", "lines": [line()]})
    assert_error(status, body, "card_not_found", 404)


# --- sale: accrual ------------------------------------------------------------------------------


async def test_a_sale_accrues_and_updates_the_balance(agent: Agent, card: str) -> None:
    lines = [line("v", "1000", vital=True), line("o", "1000")]
    status, body = await agent.sale(card, lines, receipt_id="R-1", cashier="Иванова")
    assert status == 200, body
    assert body["receipt_id"] == "R-1"
    assert body["operation_id"]
    assert body["accrued"] == 60
    assert body["redeemed"] == 0
    assert {item["line_id"]: item["accrued"] for item in body["lines"]} == {"v": 10, "o": 50}
    assert body["balance"]["available"] == 60
    assert await agent.available(card) == 60


async def test_credit_helper_gives_5_percent(agent: Agent, card: str) -> None:
    await agent.credit(card, 100)  # a 2000-rouble non-vital sale
    assert await agent.available(card) == 100


async def test_a_sale_for_an_unknown_card(agent: Agent) -> None:
    status, body = await agent.sale("5555")
    assert_error(status, body, "card_not_found", 404)


# --- sale: redemption and the one-hour rule -----------------------------------------------------


async def test_never_synced_refuses_redemption_with_the_cashiers_message(
    agent: Agent, card: str
) -> None:
    await agent.credit(card, 100)
    status, body = await agent.sale(card, redeem=50)
    assert_error(status, body, "redemption_stale_sync", 409)
    assert body["error"]["message"] == STALE_MESSAGE
    assert body["error"]["details"]["reason"] == "never_synced"
    assert body["error"]["details"]["sync_age_s"] is None
    assert await agent.available(card) == 100


async def test_redemption_after_a_sync(agent: Agent, funded_card: str) -> None:
    verification_id = await agent.redemption_code(funded_card)
    status, body = await agent.sale(
        funded_card, [line("1", "1000")], redeem="40.50", verification_id=verification_id
    )
    assert status == 200, body
    assert dec(body["redeemed"]) == Decimal("40.5")
    # 5 % of the 959.50 paid with money.
    assert dec(body["accrued"]) == Decimal("47.97")
    assert dec(body["balance"]["available"]) == Decimal("100") - Decimal("40.5") + Decimal("47.97")
    assert await agent.available(funded_card) == dec(body["balance"]["available"])


@pytest.mark.parametrize(("after_s", "fresh"), [(3599, True), (3600, True), (3601, False)])
async def test_redemption_needs_a_sync_at_most_an_hour_old(
    agent: Agent, card: str, after_s: int, fresh: bool
) -> None:
    await agent.credit(card, 100)
    await agent.make_fresh()
    agent.clock.advance(after_s - 5)
    verification_id = await agent.redemption_code(card)
    agent.clock.advance(5)
    status, body = await agent.sale(card, redeem=10, verification_id=verification_id)
    if fresh:
        assert status == 200, body
    else:
        assert_error(status, body, "redemption_stale_sync", 409)
        assert body["error"]["message"] == STALE_MESSAGE
        assert body["error"]["details"]["reason"] == "sync_stale"
        assert body["error"]["details"]["sync_age_s"] == pytest.approx(after_s)
        assert body["error"]["details"]["sync_age_max_s"] == 3600


async def test_setting_the_wall_clock_back_does_not_make_a_stale_sync_fresh(
    agent: Agent, funded_card: str
) -> None:
    synced_at = agent.clock.now()
    agent.clock.advance(3601)
    status, body = await agent.sale(funded_card, redeem=10)
    assert_error(status, body, "redemption_stale_sync", 409)
    # Someone sets the store's clock back to the moment of the sync: nothing changes.
    agent.clock.set_wall(synced_at)
    status, body = await agent.sale(funded_card, redeem=10)
    assert_error(status, body, "redemption_stale_sync", 409)
    status, found = await agent.post("/pos/v1/cards/lookup", {"card": funded_card})
    assert found["redemption_allowed"] is False
    # Even a clock set back before the sync.
    agent.clock.set_wall(synced_at - timedelta(hours=5))
    status, body = await agent.sale(funded_card, redeem=10)
    assert_error(status, body, "redemption_stale_sync", 409)


async def test_a_new_sync_allows_redemption_again(agent: Agent, funded_card: str) -> None:
    agent.clock.advance(3601)
    status, body = await agent.sale(funded_card, redeem=10)
    assert_error(status, body, "redemption_stale_sync", 409)
    await agent.make_fresh()
    verification_id = await agent.redemption_code(funded_card)
    status, body = await agent.sale(funded_card, redeem=10, verification_id=verification_id)
    assert status == 200, body


async def test_sales_and_accruals_keep_working_when_stale(agent: Agent, card: str) -> None:
    await agent.credit(card, 100)  # never synced
    await agent.make_fresh()
    agent.clock.advance(7200)
    status, body = await agent.sale(card, [line("1", "1000", vital=True)])
    assert status == 200, body
    assert body["accrued"] == 10
    assert await agent.available(card) == 110


# --- sale: confirmation codes -------------------------------------------------------------------


async def test_redemption_needs_a_confirmed_code(agent: Agent, funded_card: str) -> None:
    status, body = await agent.sale(funded_card, redeem=10)
    assert_error(status, body, "verification_required", 403)
    # A code that was sent but not confirmed.
    status, pending = await agent.ask_code(funded_card)
    status, body = await agent.sale(
        funded_card, redeem=10, verification_id=pending["verification_id"]
    )
    assert_error(status, body, "verification_required", 403)
    # A code nobody sent.
    status, body = await agent.sale(funded_card, redeem=10, verification_id="no-such-code")
    assert_error(status, body, "verification_required", 403)
    assert await agent.available(funded_card) == 100


async def test_a_code_authorises_one_operation_only(agent: Agent, funded_card: str) -> None:
    verification_id = await agent.redemption_code(funded_card)
    status, body = await agent.sale(funded_card, redeem=10, verification_id=verification_id)
    assert status == 200, body
    status, body = await agent.sale(funded_card, redeem=10, verification_id=verification_id)
    assert_error(status, body, "verification_required", 403)


@pytest.mark.parametrize(
    ("amount", "redeem", "code", "http_status"),
    [
        ("150", "75.01", "redemption_exceeds_max", 422),  # above half of the line
        ("2000", "100.01", "insufficient_balance", 409),  # above the balance of 100
    ],
)
async def test_a_refused_sale_does_not_use_up_the_code(
    agent: Agent, funded_card: str, amount: str, redeem: str, code: str, http_status: int
) -> None:
    verification_id = await agent.redemption_code(funded_card)
    status, body = await agent.sale(
        funded_card,
        [line("1", amount)],
        redeem=redeem,
        verification_id=verification_id,
        receipt_id="R-A",
    )
    assert_error(status, body, code, http_status)
    assert await agent.available(funded_card) == 100
    status, body = await agent.sale(
        funded_card, redeem="100", verification_id=verification_id, receipt_id="R-B"
    )
    assert status == 200, body
    assert body["redeemed"] == 100


async def test_redemption_above_the_receipts_cap(agent: Agent, funded_card: str) -> None:
    verification_id = await agent.redemption_code(funded_card)
    status, body = await agent.sale(
        funded_card, [line("1", "100")], redeem="50.01", verification_id=verification_id
    )
    assert_error(status, body, "redemption_exceeds_max", 422)
    assert body["error"]["details"]["max_redeem"] == "50.00"


async def test_a_code_of_another_card_is_refused(agent: Agent, funded_card: str) -> None:
    other = await agent.new_card("+7 903 555 01 02")
    verification_id = await agent.redemption_code(other, phone="+7 903 555 01 02")
    status, body = await agent.sale(funded_card, redeem=10, verification_id=verification_id)
    assert_error(status, body, "verification_required", 403)


async def test_a_registration_code_does_not_authorise_redemption(
    agent: Agent, funded_card: str
) -> None:
    agent.clock.advance(61)
    status, asked = await agent.ask_code(funded_card, "registration")
    assert status == 201, asked
    await agent.confirm(asked["verification_id"])
    status, body = await agent.sale(
        funded_card, redeem=10, verification_id=asked["verification_id"]
    )
    assert_error(status, body, "verification_required", 403)


async def test_an_expired_code_is_refused(agent: Agent, funded_card: str) -> None:
    verification_id = await agent.redemption_code(funded_card)
    agent.clock.advance(301)
    status, body = await agent.sale(funded_card, redeem=10, verification_id=verification_id)
    assert_error(status, body, "verification_expired", 410)


async def test_without_confirmation_in_the_settings_no_code_is_needed(
    agent: Agent, funded_card: str
) -> None:
    agent.set_settings(redemption_confirmation="none")
    status, body = await agent.sale(funded_card, redeem=10)
    assert status == 200, body
    status, answer = await agent.post(CALCULATE, {"card": funded_card, "lines": [line()]})
    assert answer["verification_required"] is False


async def test_redemption_spreads_over_lines_within_their_caps(
    agent: Agent, funded_card: str
) -> None:
    verification_id = await agent.redemption_code(funded_card)
    lines = [line("a", "100"), line("b", "300", vital=True), line("c", "0.01")]
    status, body = await agent.sale(
        funded_card, lines, redeem="100", verification_id=verification_id
    )
    assert status == 200, body
    redeemed = {item["line_id"]: dec(item["redeemed"]) for item in body["lines"]}
    assert sum(redeemed.values()) == Decimal("100")
    assert redeemed == {"a": Decimal("25"), "b": Decimal("75"), "c": Decimal("0")}
    for item in body["lines"]:
        assert dec(item["redeemed"]) <= dec(item["max_redeem"])


async def test_offline_caps_bound_a_redemption_without_central_authorisation(
    agent: Agent, funded_card: str
) -> None:
    # This agent has no central server configured: every redemption is an offline one.
    agent.set_settings(offline_redemption_max_kop=5000)
    verification_id = await agent.redemption_code(funded_card)
    status, body = await agent.sale(funded_card, redeem="50.01", verification_id=verification_id)
    assert_error(status, body, "redemption_offline_limit", 409)
    assert body["error"]["details"]["limit"] == "per_redemption"
    # The refusal did not use the code up.
    status, body = await agent.sale(funded_card, redeem=50, verification_id=verification_id)
    assert status == 200, body
