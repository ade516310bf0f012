"""Money: integer kopecks inside, exact decimals at the edges, splits that add up.

Amounts travel through the APIs as roubles with at most two fractional digits (JSON numbers or
strings).  Inside the system every amount is an ``int`` of kopecks.  Nothing here ever rounds
silently: a value that cannot be represented exactly in kopecks is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Final

KOPECKS_PER_ROUBLE: Final = 100
#: The largest amount the system accepts anywhere (one billion roubles), in kopecks.
AMOUNT_KOP_MAX: Final = 100_000_000_000
#: The longest textual amount accepted, so that a hostile "1e999999" costs nothing to refuse.
AMOUNT_TEXT_CHARS_MAX: Final = 32


class AmountError(ValueError):
    """An amount that is not an exact, allowed number of kopecks."""


def _to_decimal(value: object) -> Decimal:
    if isinstance(value, bool):
        raise AmountError("amount must be a number, not a boolean")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        # A float is accepted only when its shortest repr is an exact decimal of kopecks;
        # Decimal(repr(x)) gives the number the sender wrote ("0.1" stays 0.1).
        return Decimal(repr(value))
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > AMOUNT_TEXT_CHARS_MAX:
            raise AmountError("amount text is empty or too long")
        if not all(ch.isascii() and (ch.isdigit() or ch in "+-.") for ch in text):
            raise AmountError("amount must be written with digits and one decimal point")
        try:
            return Decimal(text)
        except InvalidOperation as exc:
            raise AmountError("amount is not a number") from exc
    raise AmountError(f"amount of type {type(value).__name__} is not accepted")


def parse_kop(value: object, *, allow_negative: bool = False, allow_zero: bool = True) -> int:
    """Parse an API amount in roubles (int, str, Decimal or an exact float) into kopecks.

    Refuses NaN, infinities, exponent notation in text, more than two fractional digits (trailing
    zeros such as ``1.500`` are exact and allowed), values above ``AMOUNT_KOP_MAX`` and, unless
    allowed, negative or zero values.  The conversion is done on the digits, never through a
    rounding context.
    """
    number = _to_decimal(value)
    if not number.is_finite():
        raise AmountError("amount must be a finite number")
    sign, digit_tuple, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite numbers have an integer exponent
    digits = list(digit_tuple)
    if len(digits) > AMOUNT_TEXT_CHARS_MAX:
        raise AmountError("amount has too many digits")
    if exponent > 12:  # far above AMOUNT_KOP_MAX; refused before building a huge integer
        raise AmountError("amount is too large")
    while exponent < -2 and digits and digits[-1] == 0:
        digits.pop()
        exponent += 1
    if exponent < -2:
        raise AmountError("amount has more than two fractional digits")
    magnitude: int = int("".join(map(str, digits)) or "0") * pow(10, exponent + 2)
    if magnitude > AMOUNT_KOP_MAX:
        raise AmountError("amount is too large")
    kop = -magnitude if sign else magnitude
    if kop < 0 and not allow_negative:
        raise AmountError("amount must not be negative")
    if kop == 0 and not allow_zero:
        raise AmountError("amount must be greater than zero")
    return kop


def kop_to_decimal(amount_kop: int) -> Decimal:
    """Kopecks as an exact ``Decimal`` of roubles with two fractional digits (123 → 1.23)."""
    return (Decimal(amount_kop) / KOPECKS_PER_ROUBLE).quantize(Decimal("0.01"))


def format_kop(amount_kop: int, *, decimal_comma: bool = False) -> str:
    """Kopecks as text of roubles, ``"1.23"``; with ``decimal_comma`` ``"1,23"`` (Russian Excel)."""
    text = f"{kop_to_decimal(amount_kop):f}"
    return text.replace(".", ",") if decimal_comma else text


def split_largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` over ``weights`` pro rata so that the parts add up to ``total`` exactly.

    Each part is the floor of its exact share; the kopecks left over go one each to the parts
    with the largest remainders, ties to the earlier part.  All-zero weights split evenly in the
    same way.  ``total`` and every weight must be non-negative.
    """
    if total < 0:
        raise ValueError("total must not be negative")
    if any(weight < 0 for weight in weights):
        raise ValueError("weights must not be negative")
    if not weights:
        if total:
            raise ValueError("cannot split a non-zero total over no parts")
        return []
    if len(weights) == 1:
        return [total]  # the usual one-line receipt: the whole is its one part
    effective = list(weights) if sum(weights) > 0 else [1] * len(weights)
    weight_sum = sum(effective)
    parts = [total * weight // weight_sum for weight in effective]
    remainders = [total * weight % weight_sum for weight in effective]
    left = total - sum(parts)
    # Sorting by (-remainder, index) gives the earliest of equal remainders first.
    order = sorted(range(len(effective)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        parts[i] += 1
    return parts
