"""Card numbers: the Luhn check digit, virtual card numbers and normalisation of typed numbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.cards import (
    CARD_NUMBER_CHARS_MAX,
    VIRTUAL_CARD_DIGITS,
    VIRTUAL_CARD_PREFIX,
    CardNumberError,
    is_virtual_card,
    luhn_check_digit,
    luhn_valid,
    new_virtual_card_number,
    normalize_card_number,
)

# --- Luhn ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "check_digit"),
    [("7992739871", "3"), ("411111111111111", "1"), ("0", "0"), ("990000000000", "2")],
)
def test_card_luhn_check_digit_of_known_numbers(body: str, check_digit: str) -> None:
    assert luhn_check_digit(body) == check_digit


@pytest.mark.parametrize("number", ["79927398713", "4111111111111111", "4539148803436467", "00"])
def test_card_luhn_valid_numbers_pass(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize(
    "number",
    [
        "79927398710",  # wrong check digit
        "79927398731",  # two neighbouring digits swapped
        "4111111111111112",
        "",
        "7",  # a check digit alone
        "7992739871a",
        "７９９２７３９８７１３",  # full-width digits
    ],
)
def test_card_luhn_invalid_numbers_fail(number: str) -> None:
    assert not luhn_valid(number)


@pytest.mark.parametrize("body", ["", "12a4", "١٢٣"])
def test_card_luhn_check_digit_only_of_ascii_digits(body: str) -> None:
    with pytest.raises(CardNumberError):
        luhn_check_digit(body)


# --- virtual cards -------------------------------------------------------------------------------


def test_card_virtual_number_is_99_ten_random_digits_and_a_luhn_check_digit() -> None:
    number = new_virtual_card_number()
    assert len(number) == VIRTUAL_CARD_DIGITS
    assert number.startswith(VIRTUAL_CARD_PREFIX)
    assert number.isdigit()
    assert luhn_valid(number)
    assert is_virtual_card(number)
    assert normalize_card_number(number) == number


def test_card_virtual_number_deterministic_with_given_digits() -> None:
    assert new_virtual_card_number("0000000000") == "9900000000002"
    assert new_virtual_card_number("1234567890") == "99" + "1234567890" + luhn_check_digit(
        "991234567890"
    )


@pytest.mark.parametrize("digits", ["123", "12345678901", "abcdefghij", "", "١٢٣٤٥٦٧٨٩٠"])
def test_card_virtual_number_needs_exactly_ten_random_digits(digits: str) -> None:
    with pytest.raises(CardNumberError):
        new_virtual_card_number(digits)


def test_card_virtual_numbers_differ() -> None:
    # Ten random digits: a hundred draws colliding would mean the digits are not random.
    assert len({new_virtual_card_number() for _ in range(100)}) > 90


@pytest.mark.parametrize(
    ("number", "virtual"),
    [("9900000000002", True), ("990000000000", False), ("98000000000000", False), ("1234", False)],
)
def test_card_virtual_range_is_13_digits_starting_with_99(number: str, virtual: bool) -> None:
    assert is_virtual_card(number) is virtual


# --- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" 1234-5678 ", "12345678"),
        ("ab 12 cd", "AB12CD"),
        ("2000 0000 1234 5", "2000000012345"),
        ("9900000000002", "9900000000002"),
        ("99-0000-0000-002", "9900000000002"),
        ("A" * CARD_NUMBER_CHARS_MAX, "A" * CARD_NUMBER_CHARS_MAX),
    ],
)
def test_card_number_without_spaces_and_dashes_in_capitals(raw: str, expected: str) -> None:
    assert normalize_card_number(raw) == expected


def test_card_physical_number_needs_no_check_digit() -> None:
    # Physical cards come from many printers; only the virtual range carries our check digit.
    assert not luhn_valid("12345678")
    assert normalize_card_number("12345678") == "12345678"


@pytest.mark.parametrize(
    "raw",
    [
        "123",  # too short
        "1" * (CARD_NUMBER_CHARS_MAX + 1),  # too long
        "- - -",
        "АБВГ1234",  # Cyrillic letters
        "1234_5678",
        "1234.5678",
        "9900000000001",  # virtual range with a wrong check digit
    ],
)
def test_card_malformed_number_refused(raw: str) -> None:
    with pytest.raises(CardNumberError):
        normalize_card_number(raw)


def test_card_number_error_is_a_value_error() -> None:
    assert issubclass(CardNumberError, ValueError)


# --- properties ----------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    body=st.text(alphabet="0123456789", min_size=1, max_size=30),
    position=st.integers(min_value=0),
    delta=st.integers(min_value=1, max_value=9),
)
def test_property_luhn_detects_every_single_digit_error(
    body: str, position: int, delta: int
) -> None:
    number = body + luhn_check_digit(body)
    assert luhn_valid(number)
    index = position % len(number)
    wrong = number[:index] + str((int(number[index]) + delta) % 10) + number[index + 1 :]
    assert not luhn_valid(wrong)


@settings(max_examples=300, deadline=None)
@given(digits=st.text(alphabet="0123456789", min_size=10, max_size=10))
def test_property_virtual_numbers_are_valid_and_normalise_to_themselves(digits: str) -> None:
    number = new_virtual_card_number(digits)
    assert number == VIRTUAL_CARD_PREFIX + digits + number[-1]
    assert luhn_valid(number)
    assert is_virtual_card(number)
    assert normalize_card_number(number) == number
