"""Stable error codes: a Russian message and a 4xx status for each, the codes the till relies on."""

from __future__ import annotations

import re

import pytest

from shared.errors import HTTP_STATUS, MESSAGES_RU, BonusError, ErrorCode

#: The codes docs/pos-api.md ("Stable error codes (at least)") promises the till.
POS_API_CODES = (
    "validation_error",
    "unauthorized",
    "card_not_found",
    "card_blocked",
    "phone_invalid",
    "redemption_stale_sync",
    "redemption_exceeds_max",
    "insufficient_balance",
    "verification_required",
    "verification_invalid",
    "verification_expired",
    "verification_rate_limited",
    "idempotency_conflict",
    "receipt_not_found",
    "return_exceeds_sale",
    "hold_not_found",
    "hold_expired",
)
CYRILLIC = re.compile("[А-Яа-яЁё]")


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_every_code_has_a_russian_message(code: ErrorCode) -> None:
    message = MESSAGES_RU[code]
    assert message.strip() == message
    assert CYRILLIC.search(message), message
    assert not re.search("[A-Za-z]", message), message


#: Faults of the service itself, never an answer to bad input (pos-api.md: bad input is a 4xx).
SERVER_FAULT_CODES = frozenset({"internal_error"})


@pytest.mark.parametrize("code", [code for code in ErrorCode if code not in SERVER_FAULT_CODES])
def test_error_every_code_a_caller_can_cause_is_a_4xx(code: ErrorCode) -> None:
    assert 400 <= HTTP_STATUS[code] <= 499


def test_error_only_the_service_fault_is_a_5xx() -> None:
    fives = {code.value for code in ErrorCode if HTTP_STATUS[code] >= 500}
    assert fives <= SERVER_FAULT_CODES
    assert all(HTTP_STATUS[code] in range(400, 600) for code in ErrorCode)


def test_error_tables_cover_exactly_the_codes() -> None:
    assert set(MESSAGES_RU) == set(ErrorCode)
    assert set(HTTP_STATUS) == set(ErrorCode)


def test_error_codes_are_unique_snake_case() -> None:
    values = [code.value for code in ErrorCode]
    assert len(values) == len(set(values))
    for value in values:
        assert re.fullmatch("[a-z]+(_[a-z]+)*", value), value


@pytest.mark.parametrize("code", POS_API_CODES)
def test_error_codes_of_the_pos_api_exist(code: str) -> None:
    assert ErrorCode(code).value == code


def test_error_stale_sync_message_is_the_one_the_till_shows() -> None:
    expected = "Списание бонусов невозможно по техническим причинам"
    assert MESSAGES_RU[ErrorCode.REDEMPTION_STALE_SYNC] == expected


def test_error_bonus_error_renders_code_message_and_details() -> None:
    error = BonusError(ErrorCode.RETURN_EXCEEDS_SALE, line_id="3", left_qty="1")
    assert error.code is ErrorCode.RETURN_EXCEEDS_SALE
    assert error.message == MESSAGES_RU[ErrorCode.RETURN_EXCEEDS_SALE]
    assert error.http_status == 422
    assert error.to_body() == {
        "error": {
            "code": "return_exceeds_sale",
            "message": "Возврат больше, чем было продано по чеку",
            "details": {"line_id": "3", "left_qty": "1"},
        }
    }
    assert "return_exceeds_sale" in str(error)


def test_error_bonus_error_with_its_own_message() -> None:
    error = BonusError(ErrorCode.VALIDATION_ERROR, "Сумма должна быть больше нуля", field="amount")
    assert error.to_body()["error"]["message"] == "Сумма должна быть больше нуля"
    assert error.details == {"field": "amount"}
    assert error.http_status == 422


def test_error_code_serialises_as_its_string() -> None:
    assert str(ErrorCode.CARD_NOT_FOUND) == "card_not_found"
    assert BonusError(ErrorCode.CARD_NOT_FOUND).to_body()["error"]["code"] == "card_not_found"
