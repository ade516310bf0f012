"""Confirmation codes: sending, confirming, attempts, expiry and the sending limits."""

from __future__ import annotations

import asyncio

import pytest

from agent.routes import CTX_KEY
from tests.agent.conftest import PHONE, Agent, assert_error

VERIFICATIONS = "/pos/v1/verifications"


def wrong(code: str) -> str:
    """A code that is surely not this one."""
    return "".join(str((int(ch) + 1) % 10) for ch in code)


async def test_a_code_is_sent_and_confirmed(agent: Agent, card: str) -> None:
    status, body = await agent.ask_code(card, "redemption", receipt_id="R-1")
    assert status == 201, body
    assert body["channel"] == "sms"
    assert body["resend_after_s"] == 60
    assert body["skip_after_s"] is None
    message = agent.messages()[-1]
    assert message["request_id"] == body["verification_id"]
    assert message["purpose"] == "redemption"
    status, confirmed = await agent.confirm(body["verification_id"])
    assert status == 200, confirmed
    assert confirmed == {"verification_id": body["verification_id"], "confirmed": True}
    # Confirming again answers the same (a till retrying after a lost answer).
    status, again = await agent.confirm(body["verification_id"])
    assert status == 200
    assert again == confirmed


async def test_the_phone_remembered_from_lookup_is_used(agent: Agent, card: str) -> None:
    status, _ = await agent.post("/pos/v1/cards/lookup", {"phone": PHONE})
    assert status == 200
    status, body = await agent.post(VERIFICATIONS, {"card": card, "purpose": "redemption"})
    assert status == 201, body


async def test_without_a_known_phone_the_till_must_give_it(agent: Agent, card: str) -> None:
    # Phones are kept in memory for an hour only (the replica stores a keyed hash).
    agent.clock.advance(3601)
    status, body = await agent.post(VERIFICATIONS, {"card": card, "purpose": "redemption"})
    assert_error(status, body, "validation_error", 422)
    assert body["error"]["details"]["field"] == "phone"


async def test_a_phone_that_is_not_the_cards(agent: Agent, card: str) -> None:
    status, body = await agent.ask_code(card, phone="+7 903 000 00 00")
    assert_error(status, body, "phone_invalid", 422)
    assert len(agent.messages()) == 1  # the registration code only


async def test_a_code_for_an_unknown_card(agent: Agent) -> None:
    status, body = await agent.ask_code("5555")
    assert_error(status, body, "card_not_found", 404)


async def test_wrong_codes_count_down_then_the_code_is_refused(agent: Agent, card: str) -> None:
    status, body = await agent.ask_code(card)
    verification_id = body["verification_id"]
    code = agent.code_of(verification_id)
    for left in (4, 3, 2, 1, 0):
        status, answer = await agent.confirm(verification_id, wrong(code))
        assert_error(status, answer, "verification_invalid", 422)
        assert answer["error"]["details"]["attempts_left"] == left
    # Out of attempts: even the right code is refused now.
    status, answer = await agent.confirm(verification_id, code)
    assert_error(status, answer, "verification_invalid", 422)
    assert answer["error"]["details"]["attempts_left"] == 0


async def test_a_wrong_code_then_the_right_one(agent: Agent, card: str) -> None:
    status, body = await agent.ask_code(card)
    verification_id = body["verification_id"]
    status, answer = await agent.confirm(verification_id, wrong(agent.code_of(verification_id)))
    assert answer["error"]["details"]["attempts_left"] == 4
    status, answer = await agent.confirm(verification_id)
    assert status == 200, answer


@pytest.mark.parametrize(("after_s", "expired"), [(299, False), (300, True), (301, True)])
async def test_a_code_lives_five_minutes(
    agent: Agent, card: str, after_s: int, expired: bool
) -> None:
    status, body = await agent.ask_code(card)
    agent.clock.advance(after_s)
    status, answer = await agent.confirm(body["verification_id"])
    if expired:
        assert_error(status, answer, "verification_expired", 410)
    else:
        assert status == 200, answer


async def test_an_unknown_verification(agent: Agent, card: str) -> None:
    status, body = await agent.confirm("01a2-no-such-id", "1234")
    assert_error(status, body, "verification_not_found", 404)


@pytest.mark.parametrize("code", ["abcd", "12", "123456789", "", 1234])
async def test_a_malformed_code(agent: Agent, card: str, code: object) -> None:
    status, body = await agent.ask_code(card)
    status, answer = await agent.post(
        f"{VERIFICATIONS}/{body['verification_id']}/confirm", {"code": code}
    )
    assert_error(status, answer, "validation_error", 422)


async def test_resend_only_after_60_seconds(agent: Agent, card: str) -> None:
    status, first = await agent.ask_code(card)
    assert status == 201
    status, body = await agent.ask_code(card)
    assert_error(status, body, "verification_rate_limited", 429)
    assert body["error"]["details"]["retry_after_s"] == 61
    agent.clock.advance(40)
    status, body = await agent.ask_code(card)
    assert_error(status, body, "verification_rate_limited", 429)
    assert 1 <= body["error"]["details"]["retry_after_s"] <= 21
    agent.clock.advance(20)
    status, second = await agent.ask_code(card)
    assert status == 201, second
    assert second["verification_id"] != first["verification_id"]
    # Only the two codes that were allowed went out (plus the registration's).
    assert len(agent.messages()) == 3


async def test_the_resend_limit_is_per_purpose(agent: Agent) -> None:
    # Registration just sent a code; a redemption code may still be asked at once.
    answer = await agent.register(confirm=False)
    status, body = await agent.ask_code(answer["card"]["number"], "redemption")
    assert status == 201, body


async def test_ten_codes_an_hour_per_phone(agent: Agent, card: str) -> None:
    # The registration sent the first code of the hour.
    for _ in range(9):
        agent.clock.advance(61)
        status, body = await agent.ask_code(card)
        assert status == 201, body
    agent.clock.advance(61)
    status, body = await agent.ask_code(card)
    assert_error(status, body, "verification_rate_limited", 429)
    assert len(agent.messages()) == 10
    # An hour after the registration's code the phone may get one again.
    agent.clock.advance(3600 - 10 * 61 + 1)
    status, body = await agent.ask_code(card)
    assert status == 201, body


async def test_concurrent_requests_cannot_pass_the_limits_together(agent: Agent, card: str) -> None:
    answers = await asyncio.gather(*(agent.ask_code(card) for _ in range(4)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201, 429, 429, 429], answers
    assert len(agent.messages()) == 2


async def test_confirming_a_registration_marks_the_card_verified(agent: Agent) -> None:
    answer = await agent.register(confirm=False)
    number = answer["card"]["number"]
    _, found = await agent.post("/pos/v1/cards/lookup", {"card": number})
    assert found["card"]["verified"] is False
    await agent.confirm(answer["verification"]["verification_id"])
    _, found = await agent.post("/pos/v1/cards/lookup", {"card": number})
    assert found["card"]["verified"] is True


async def test_only_a_keyed_hash_of_the_code_is_stored(agent: Agent, card: str) -> None:
    _, body = await agent.ask_code(card)
    code = agent.code_of(body["verification_id"])
    conn = agent.app[CTX_KEY].db.reader
    stored = [row[0] for row in conn.execute("SELECT code_hash FROM verifications")]
    assert len(stored) == 2
    assert all(code != value and len(value) == 64 for value in stored)
