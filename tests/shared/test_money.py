"""Money rules of docs/domain.md: exact kopecks, refusals instead of silent rounding, exact splits."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from shared.amounts import AmountOut
from shared.money import (
    AMOUNT_KOP_MAX,
    AMOUNT_TEXT_CHARS_MAX,
    AmountError,
    format_kop,
    kop_to_decimal,
    parse_kop,
    split_largest_remainder,
)

# --- parsing: what is accepted -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected_kop"),
    [
        ("12.34", 1234),
        ("0.01", 1),
        ("7", 700),
        (" 2.5 ", 250),
        ("+3", 300),
        (".5", 50),
        ("1.", 100),
        (Decimal("12.30"), 1230),
    ],
)
def test_money_roubles_with_up_to_two_fractional_digits_become_kopecks(
    value: object, expected_kop: int
) -> None:
    assert parse_kop(value) == expected_kop


@pytest.mark.parametrize(
    ("value", "expected_kop"), [("1.500", 150), ("2.0000", 200), (Decimal("0.100"), 10)]
)
def test_money_trailing_zeros_beyond_two_digits_are_exact_and_accepted(
    value: object, expected_kop: int
) -> None:
    assert parse_kop(value) == expected_kop


@pytest.mark.parametrize(("value", "expected_kop"), [(0, 0), (5, 500), (1_000_000, 100_000_000)])
def test_money_integers_are_whole_roubles(value: int, expected_kop: int) -> None:
    assert parse_kop(value) == expected_kop


@pytest.mark.parametrize(
    ("value", "expected_kop"), [(0.1, 10), (1.5, 150), (12.34, 1234), (99.99, 9999), (0.0, 0)]
)
def test_money_exact_float_accepted(value: float, expected_kop: int) -> None:
    # A float is exact when its shortest repr has at most two decimals: 0.1 is what the sender wrote.
    assert parse_kop(value) == expected_kop


def test_money_largest_amount_accepted_and_one_kopeck_more_refused() -> None:
    assert parse_kop(format_kop(AMOUNT_KOP_MAX)) == AMOUNT_KOP_MAX
    with pytest.raises(AmountError):
        parse_kop(format_kop(AMOUNT_KOP_MAX + 1))


# --- parsing: what is refused --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1.234", "0.001", "10.0001", Decimal("0.005"), 1.005, 0.001])
def test_money_more_than_two_fractional_digits_refused(value: object) -> None:
    with pytest.raises(AmountError):
        parse_kop(value)


@pytest.mark.parametrize("value", [0.1 + 0.2, 1 / 3, 2.675 * 3])
def test_money_float_not_exact_in_kopecks_refused(value: float) -> None:
    with pytest.raises(AmountError):
        parse_kop(value)


@pytest.mark.parametrize("value", ["NaN", "nan", "sNaN", float("nan"), Decimal("NaN")])
def test_money_nan_refused(value: object) -> None:
    with pytest.raises(AmountError):
        parse_kop(value)


@pytest.mark.parametrize(
    "value",
    ["Infinity", "-Infinity", "inf", float("inf"), float("-inf"), Decimal("Infinity")],
)
def test_money_infinity_refused(value: object) -> None:
    with pytest.raises(AmountError):
        parse_kop(value, allow_negative=True)


@pytest.mark.parametrize("value", ["1e5", "1E5", "1e-2", "5e0", "1e999999", "-1e2"])
def test_money_exponent_strings_refused(value: str) -> None:
    with pytest.raises(AmountError):
        parse_kop(value, allow_negative=True)


@pytest.mark.parametrize("value", ["-1", "-0.01", -1, -0.5, Decimal("-2.00")])
def test_money_negative_refused_where_not_allowed(value: object) -> None:
    with pytest.raises(AmountError):
        parse_kop(value)


@pytest.mark.parametrize(("value", "expected_kop"), [("-1", -100), ("-0.01", -1), (-0.5, -50)])
def test_money_negative_accepted_where_allowed(value: object, expected_kop: int) -> None:
    assert parse_kop(value, allow_negative=True) == expected_kop


@pytest.mark.parametrize("value", [0, "0", "0.00", 0.0, "-0"])
def test_money_zero_refused_where_a_positive_amount_is_required(value: object) -> None:
    assert parse_kop(value) == 0
    with pytest.raises(AmountError):
        parse_kop(value, allow_zero=False)


@pytest.mark.parametrize("value", [True, False])
def test_money_booleans_refused(value: bool) -> None:
    with pytest.raises(AmountError):
        parse_kop(value)


@pytest.mark.parametrize("value", [None, [1], {"amount": 1}, b"1", 1j])
def test_money_other_types_refused(value: object) -> None:
    with pytest.raises(AmountError):
        parse_kop(value)


@pytest.mark.parametrize(
    "value",
    ["", "   ", "1,5", "1.2.3", "abc", "1 000", "0x10", "--1", ".", "-", "١", "１"],
)
def test_money_malformed_text_refused(value: str) -> None:
    with pytest.raises(AmountError):
        parse_kop(value)


def test_money_overlong_text_refused_before_parsing() -> None:
    with pytest.raises(AmountError):
        parse_kop("1" * (AMOUNT_TEXT_CHARS_MAX + 1))


def test_money_amount_error_is_a_value_error() -> None:
    assert issubclass(AmountError, ValueError)


# --- formatting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_kop", "expected"),
    [(0, "0.00"), (5, "0.05"), (123, "1.23"), (100, "1.00"), (-150, "-1.50")],
)
def test_money_format_as_roubles_with_two_digits(amount_kop: int, expected: str) -> None:
    assert format_kop(amount_kop) == expected
    assert kop_to_decimal(amount_kop) == Decimal(expected)
    assert kop_to_decimal(amount_kop).as_tuple().exponent == -2


def test_money_format_with_decimal_comma_for_russian_excel() -> None:
    assert format_kop(123456, decimal_comma=True) == "1234,56"


# --- splits --------------------------------------------------------------------------------------


def test_money_split_leftover_goes_to_largest_remainder() -> None:
    # 10 over 1:2 is 3.33 + 6.67; the kopeck left goes to the larger remainder (0.67).
    assert split_largest_remainder(10, [1, 2]) == [3, 7]


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [(2, [1, 1, 1], [1, 1, 0]), (1, [1, 1], [1, 0]), (10, [1, 1, 1], [4, 3, 3])],
)
def test_money_split_ties_go_to_the_earlier_part(
    total: int, weights: list[int], expected: list[int]
) -> None:
    assert split_largest_remainder(total, weights) == expected


def test_money_split_over_all_zero_weights_is_even() -> None:
    assert split_largest_remainder(5, [0, 0]) == [3, 2]


def test_money_split_over_no_parts() -> None:
    assert split_largest_remainder(0, []) == []
    with pytest.raises(ValueError, match="no parts"):
        split_largest_remainder(1, [])


def test_money_split_refuses_negative_total_or_weights() -> None:
    with pytest.raises(ValueError, match="total"):
        split_largest_remainder(-1, [1])
    with pytest.raises(ValueError, match="weights"):
        split_largest_remainder(1, [1, -1])


# --- properties ----------------------------------------------------------------------------------

amounts_kop = st.integers(min_value=-AMOUNT_KOP_MAX, max_value=AMOUNT_KOP_MAX)


@settings(max_examples=1000, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=10**12),
    weights=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30),
)
def test_property_split_adds_up_and_each_part_is_floor_or_ceil_of_its_share(
    total: int, weights: list[int]
) -> None:
    parts = split_largest_remainder(total, weights)
    assert sum(parts) == total
    effective = weights if sum(weights) > 0 else [1] * len(weights)
    for part, weight in zip(parts, effective, strict=True):
        share = Fraction(total * weight, sum(effective))
        assert part in (math.floor(share), math.ceil(share))
    # Ties go to the earlier part: of two equal weights the earlier part is never the smaller.
    for i in range(len(effective)):
        for j in range(i + 1, len(effective)):
            if effective[i] == effective[j]:
                assert parts[i] >= parts[j]


@settings(max_examples=1000, deadline=None)
@given(amount_kop=amounts_kop)
def test_property_parse_round_trip(amount_kop: int) -> None:
    assert parse_kop(format_kop(amount_kop), allow_negative=True) == amount_kop
    assert parse_kop(kop_to_decimal(amount_kop), allow_negative=True) == amount_kop
    # Every amount in range is at most 11 significant digits, so its float is exact too.
    assert parse_kop(float(format_kop(amount_kop)), allow_negative=True) == amount_kop


@settings(max_examples=500, deadline=None)
@given(amount_kop=amounts_kop, extra_digit=st.integers(min_value=1, max_value=9))
def test_property_third_fractional_digit_always_refused(amount_kop: int, extra_digit: int) -> None:
    text = format_kop(amount_kop) + str(extra_digit)
    with pytest.raises(AmountError):
        parse_kop(text, allow_negative=True)


# --- amounts out: a JSON number that is the exact decimal ---------------------------------------


class _Out(BaseModel):
    amount: AmountOut


@settings(max_examples=2000, deadline=None)
@given(amount_kop=st.integers(min_value=-AMOUNT_KOP_MAX, max_value=AMOUNT_KOP_MAX))
def test_property_amount_out_prints_the_exact_decimal(amount_kop: int) -> None:
    printed = json.loads(_Out(amount=amount_kop).model_dump_json(), parse_float=Decimal)["amount"]
    assert Decimal(printed) == kop_to_decimal(amount_kop)


@pytest.mark.parametrize(
    "amount_kop", [0, 1, 10, 99, 100, 1230, 12345, 999_999_999, AMOUNT_KOP_MAX]
)
def test_amount_out_edges(amount_kop: int) -> None:
    assert json.loads(_Out(amount=amount_kop).model_dump_json(), parse_float=Decimal)[
        "amount"
    ] == kop_to_decimal(amount_kop)
