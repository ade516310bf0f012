"""Card lookup, registration and a card's transactions, through the till API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agent.routes import CTX_KEY
from tests.agent.conftest import PHONE, PHONE10, Agent, assert_error, line

LOOKUP = "/pos/v1/cards/lookup"
CUSTOMERS = "/pos/v1/customers"
STALE_MESSAGE = "Списание бонусов невозможно по техническим причинам"


def luhn_ok(number: str) -> bool:
    """An independent Luhn check (not the implementation's)."""
    digits = [int(ch) for ch in number]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


async def replica_card(agent: Agent, number: str, *, barcode: str | None = None) -> None:
    """A card that reached the replica from the central server (with a barcode, say)."""
    ctx = agent.app[CTX_KEY]
    phone_hash = await ctx.hash_phone("9035550101")
    await ctx.db.write(
        lambda conn: conn.execute(
            "INSERT INTO cards (number, barcode, phone_hash, phone_last4, verified) "
            "VALUES (?, ?, ?, ?, 1)",
            (number, barcode, phone_hash, "0101"),
        )
    )


async def block(agent: Agent, number: str) -> None:
    """The central server blocked the card (it arrives with the sync)."""
    await agent.app[CTX_KEY].db.write(
        lambda conn: conn.execute("UPDATE cards SET status = 'blocked' WHERE number = ?", (number,))
    )


# --- lookup -------------------------------------------------------------------------------------


@pytest.mark.parametrize("phone", [PHONE, "89161234567", "9161234567", "+7-916-123-45-67"])
async def test_lookup_by_phone_in_any_spelling(agent: Agent, card: str, phone: str) -> None:
    status, body = await agent.post(LOOKUP, {"phone": phone})
    assert status == 200, body
    assert body["card"] == {
        "number": card,
        "status": "active",
        "phone_last4": PHONE10[-4:],
        "verified": True,
    }
    assert body["balance"] == {
        "available": 0,
        "non_expiring": 0,
        "expiring": [],
        "held": 0,
        "debt": 0,
        "pending": 0,
    }


async def test_lookup_by_card_number_with_spaces_and_dashes(agent: Agent, card: str) -> None:
    spaced = f"{card[:4]} {card[4:8]}-{card[8:]}"
    status, body = await agent.post(LOOKUP, {"card": spaced})
    assert status == 200, body
    assert body["card"]["number"] == card


async def test_lookup_by_barcode(agent: Agent) -> None:
    await replica_card(agent, "7000123", barcode="2900000071234")
    status, body = await agent.post(LOOKUP, {"card": "2900000071234"})
    assert status == 200, body
    assert body["card"]["number"] == "7000123"


@pytest.mark.parametrize(
    "query",
    [
        {"card": "2900000099999"},  # a barcode nobody has
        {"card": "5555"},  # a well-formed number nobody has
        {"card": "12"},  # too short to be a card
        {"card": "9900000000001"},  # a virtual number with a wrong check digit
        {"phone": "+7 999 000-00-00"},  # a valid phone without a card
    ],
)
async def test_lookup_of_an_unknown_card(agent: Agent, card: str, query: dict[str, str]) -> None:
    status, body = await agent.post(LOOKUP, query)
    assert_error(status, body, "card_not_found", 404)
    assert body["error"]["message"] == "Карта не найдена"


@pytest.mark.parametrize("phone", ["12345", "+1 212 555 01 99 77", "телефон", "891612345"])
async def test_lookup_with_an_invalid_phone(agent: Agent, phone: str) -> None:
    status, body = await agent.post(LOOKUP, {"phone": phone})
    assert_error(status, body, "phone_invalid", 422)


@pytest.mark.parametrize("query", [{}, {"phone": PHONE, "card": "5555"}])
async def test_lookup_needs_exactly_one_key(agent: Agent, query: dict[str, str]) -> None:
    status, body = await agent.post(LOOKUP, query)
    assert_error(status, body, "validation_error", 422)


async def test_a_blocked_card_is_not_found_for_sales(agent: Agent, card: str) -> None:
    await block(agent, card)
    for query in ({"card": card}, {"phone": PHONE}):
        status, body = await agent.post(LOOKUP, query)
        assert_error(status, body, "card_blocked", 403)
    status, body = await agent.sale(card)
    assert_error(status, body, "card_blocked", 403)


async def test_lookup_tells_whether_redemption_is_allowed(agent: Agent, card: str) -> None:
    status, body = await agent.post(LOOKUP, {"card": card})
    assert status == 200
    assert body["redemption_allowed"] is False
    assert body["redemption_refusal"] == {
        "code": "redemption_stale_sync",
        "message": STALE_MESSAGE,
    }
    await agent.make_fresh()
    status, body = await agent.post(LOOKUP, {"card": card})
    assert body["redemption_allowed"] is True
    assert body["redemption_refusal"] is None


async def test_lookup_shows_expiring_points_by_date(agent: Agent, card: str) -> None:
    await agent.credit(card, 100)
    balance = await agent.balance(card)
    # A purchase accrual lives 6 calendar months (FakeClock starts on 2026-11-23).
    assert balance["expiring"] == [{"date": "2027-05-23", "amount": 100}]
    assert balance["available"] == 100
    assert balance["non_expiring"] == 0


# --- registration -------------------------------------------------------------------------------


async def test_registration_issues_a_virtual_card_and_sends_a_code(agent: Agent) -> None:
    status, body = await agent.post(
        CUSTOMERS,
        {
            "phone": PHONE,
            "profile": {"first_name": "Анна", "birth_date": "1990-04-01", "sex": "female"},
            "consents": {"personal_data": True, "advertising": False},
        },
    )
    assert status == 201, body
    number = body["card"]["number"]
    assert len(number) == 13
    assert number.startswith("99")
    assert luhn_ok(number)
    assert body["created"] is True
    assert body["card"]["verified"] is False
    assert body["card"]["phone_last4"] == "4567"
    verification = body["verification"]
    assert verification["channel"] == "sms"
    assert verification["resend_after_s"] == 60
    assert verification["skip_after_s"] == 30
    expires_at = agent.clock.now() + timedelta(minutes=5)
    assert verification["expires_at"] == expires_at.isoformat().replace("+00:00", "Z")
    [message] = agent.messages()
    assert message["request_id"] == verification["verification_id"]
    assert message["purpose"] == "registration"
    assert message["phone"] == "7" + PHONE10
    assert message["code"].isdigit()
    assert message["code"] in message["text"]

    status, confirmed = await agent.confirm(verification["verification_id"])
    assert status == 200, confirmed
    assert confirmed["confirmed"] is True
    status, found = await agent.post(LOOKUP, {"card": number})
    assert found["card"]["verified"] is True


async def test_every_virtual_card_has_a_valid_check_digit(agent: Agent) -> None:
    numbers = set()
    for index in range(12):
        answer = await agent.register(f"+7 916 000-00-{index:02d}", confirm=False)
        numbers.add(answer["card"]["number"])
    assert len(numbers) == 12
    assert all(luhn_ok(number) and number.startswith("99") for number in numbers)


async def test_registering_a_known_phone_returns_its_card(agent: Agent, card: str) -> None:
    status, body = await agent.post(
        CUSTOMERS, {"phone": "8 916 123 45 67", "consents": {"personal_data": True}}
    )
    assert status == 200, body
    assert body["created"] is False
    assert body["card"]["number"] == card
    # The phone was confirmed at the first registration: no new code.
    assert body["verification"] is None
    assert len(agent.messages()) == 1


async def test_a_known_unconfirmed_phone_is_asked_again(agent: Agent) -> None:
    first = await agent.register(confirm=False)
    agent.clock.advance(61)
    status, body = await agent.post(
        CUSTOMERS, {"phone": PHONE, "consents": {"personal_data": True}}
    )
    assert status == 200, body
    assert body["created"] is False
    assert body["card"]["number"] == first["card"]["number"]
    assert body["verification"] is not None
    assert body["verification"]["verification_id"] != first["verification"]["verification_id"]


async def test_a_code_refused_by_the_limits_still_registers(agent: Agent) -> None:
    await agent.register(confirm=False)
    # Asked again within the resend limit: the card is returned with the reason for no code.
    status, body = await agent.post(
        CUSTOMERS, {"phone": PHONE, "consents": {"personal_data": True}}
    )
    assert status == 200, body
    assert body["verification"] is None
    assert body["verification_error"]["code"] == "verification_rate_limited"


async def test_registration_with_a_physical_card(agent: Agent) -> None:
    status, body = await agent.post(
        CUSTOMERS,
        {"phone": PHONE, "card": "2000 0000 0001 7", "consents": {"personal_data": True}},
    )
    assert status == 201, body
    assert body["card"]["number"] == "2000000000017"
    status, found = await agent.post(LOOKUP, {"phone": PHONE})
    assert found["card"]["number"] == "2000000000017"


async def test_a_taken_physical_card_is_refused(agent: Agent) -> None:
    await agent.register(PHONE, card="2000000000017")
    status, body = await agent.post(
        CUSTOMERS,
        {"phone": "+7 903 555 01 02", "card": "2000000000017", "consents": {"personal_data": True}},
    )
    assert_error(status, body, "card_exists", 409)


@pytest.mark.parametrize(
    "consents", [{"personal_data": False}, {"personal_data": False, "advertising": True}]
)
async def test_registration_needs_the_personal_data_consent(
    agent: Agent, consents: dict[str, Any]
) -> None:
    status, body = await agent.post(CUSTOMERS, {"phone": PHONE, "consents": consents})
    assert_error(status, body, "consent_required", 422)
    assert agent.messages() == []


async def test_registration_without_consents_is_a_validation_error(agent: Agent) -> None:
    status, body = await agent.post(CUSTOMERS, {"phone": PHONE})
    assert_error(status, body, "validation_error", 422)


async def test_registration_with_an_invalid_phone(agent: Agent) -> None:
    status, body = await agent.post(
        CUSTOMERS, {"phone": "123", "consents": {"personal_data": True}}
    )
    assert_error(status, body, "phone_invalid", 422)


async def test_registration_with_a_bad_profile(agent: Agent) -> None:
    status, body = await agent.post(
        CUSTOMERS,
        {"phone": PHONE, "profile": {"email": "not-mail"}, "consents": {"personal_data": True}},
    )
    assert_error(status, body, "validation_error", 422)


# --- transactions -------------------------------------------------------------------------------


async def test_transactions_newest_first(agent: Agent, card: str) -> None:
    await agent.credit(card, 100)
    agent.clock.advance(60)
    status, sale = await agent.sale(card, [line("1", "1000", vital=True)], receipt_id="R-LAST")
    assert status == 200, sale
    status, body = await agent.get(f"/pos/v1/cards/{card}/transactions")
    assert status == 200, body
    assert body["card"] == card
    kinds = [entry["kind"] for entry in body["transactions"]]
    assert kinds == ["sale", "sale", "verify", "register"]
    newest = body["transactions"][0]
    assert newest["receipt_id"] == "R-LAST"
    assert newest["operation_id"] == sale["operation_id"]
    assert newest["accrued"] == 10
    assert newest["amount"] == 10
    assert newest["synced"] is False
    times = [entry["at"] for entry in body["transactions"]]
    assert times == sorted(times, reverse=True)


async def test_transactions_of_an_unknown_card(agent: Agent) -> None:
    status, body = await agent.get("/pos/v1/cards/5555/transactions")
    assert_error(status, body, "card_not_found", 404)
