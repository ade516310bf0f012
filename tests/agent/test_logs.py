"""What the services' log lines may hold: no phone number in any spelling, and card numbers,
times and amounts as they are."""

from __future__ import annotations

import json
import logging

import pytest

from service.logs import JsonFormatter, TextFormatter, mask_phones


@pytest.mark.parametrize(
    "phone",
    [
        "9161234567",
        "79161234567",
        "+79161234567",
        "89161234567",
        "+7 916 123-45-67",
        "+7 (916) 123-45-67",
        "8 916 123 45 67",
        "916-123-45-67",
    ],
)
def test_a_phone_in_any_spelling_is_masked(phone: str) -> None:
    assert mask_phones(f"dadr={phone}&text=x") == "dadr=<phone>&text=x"


@pytest.mark.parametrize(
    "text",
    [
        "card 9901311275481 sold",  # a card number (13 digits)
        "2026-12-08 00:14:15,645 acked up to 9161234",  # a sequence number
        "amount 1234567890 kopecks",  # ten digits, not a mobile
        "phone_last4 4567",
    ],
)
def test_what_is_not_a_phone_is_kept(text: str) -> None:
    assert mask_phones(text) == text


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("agent.test", logging.INFO, __file__, 1, message, args, None)


def test_both_formats_mask_phones_in_the_message_and_its_arguments() -> None:
    record = _record("gateway answered %s", "ERROR: bad number +79161234567")
    assert (
        TextFormatter()
        .format(record)
        .endswith("INFO agent.test: gateway answered ERROR: bad number <phone>")
    )
    body = json.loads(JsonFormatter().format(record))
    assert body["message"] == "gateway answered ERROR: bad number <phone>"
    assert body["level"] == "INFO"


def test_a_traceback_is_masked_too() -> None:
    try:
        raise ValueError("duplicate phone 9161234567")
    except ValueError:
        record = logging.LogRecord(
            "agent.test", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info()
        )
    text = TextFormatter().format(record)
    assert "9161234567" not in text
    assert "ValueError: duplicate phone <phone>" in text
    assert "<phone>" in json.loads(JsonFormatter().format(record))["exception"]
