"""Card numbers and barcodes: validation and virtual card numbers with a check digit."""

from __future__ import annotations

import re
import secrets
from typing import Final

CARD_NUMBER_CHARS_MIN: Final = 4
CARD_NUMBER_CHARS_MAX: Final = 32
#: Virtual cards are 13 digits: the prefix, random digits, and a Luhn check digit.
VIRTUAL_CARD_PREFIX: Final = "99"
VIRTUAL_CARD_DIGITS: Final = 13
#: What a card number may consist of once spaces and dashes are gone (ASCII only).
_CARD_CHARS: Final = re.compile(r"[0-9A-Z]+")


class CardNumberError(ValueError):
    """A card number or barcode that cannot be a card of this program."""


def luhn_check_digit(body: str) -> str:
    """The Luhn check digit for the digit string ``body``."""
    if not (body.isascii() and body.isdigit()):
        raise CardNumberError("only digits carry a check digit")
    total = 0
    # Double every second digit counting from the right of the body (the check digit's neighbour).
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """Whether a digit string ends with its correct Luhn check digit."""
    if len(number) < 2 or not (number.isascii() and number.isdigit()):
        return False
    return luhn_check_digit(number[:-1]) == number[-1]


def normalize_card_number(raw: str) -> str:
    """A card number or barcode as typed or scanned, without spaces and dashes.

    Physical cards come from many printers, so any 4 to 32 ASCII digits or Latin capitals are a
    well-formed number; virtual cards (prefix ``99``, 13 digits) must also pass their check digit.
    """
    number = raw.strip().replace(" ", "").replace("-", "").upper()
    if not CARD_NUMBER_CHARS_MIN <= len(number) <= CARD_NUMBER_CHARS_MAX:
        raise CardNumberError("card number must have 4 to 32 characters")
    if not _CARD_CHARS.fullmatch(number):
        raise CardNumberError("card number may contain only digits and Latin letters")
    if is_virtual_card(number) and not luhn_valid(number):
        raise CardNumberError("virtual card number has a wrong check digit")
    return number


def is_virtual_card(number: str) -> bool:
    """Whether the number is in the range of virtual cards this program issues."""
    return len(number) == VIRTUAL_CARD_DIGITS and number.startswith(VIRTUAL_CARD_PREFIX)


def new_virtual_card_number(random_digits: str | None = None) -> str:
    """A new virtual card number: ``99``, ten random digits and a Luhn check digit.

    ``random_digits`` (ten digits) makes the result deterministic for tests; callers must check
    uniqueness against their registry and draw again on a collision.
    """
    body_random = VIRTUAL_CARD_DIGITS - len(VIRTUAL_CARD_PREFIX) - 1
    if random_digits is None:
        random_digits = "".join(secrets.choice("0123456789") for _ in range(body_random))
    if len(random_digits) != body_random or not random_digits.isdigit():
        raise CardNumberError("a virtual card needs exactly ten random digits")
    body = VIRTUAL_CARD_PREFIX + random_digits
    return body + luhn_check_digit(body)
