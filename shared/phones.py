"""Phone numbers: SmartApteka's normalisation to the 10 significant digits."""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

PHONE_DIGITS: Final = 10
_SEPARATORS: Final = str.maketrans("", "", " -()+")
_PHONE_TEXT_CHARS_MAX: Final = 40


class PhoneError(ValueError):
    """A phone number that does not normalise to exactly 10 digits."""


def normalize_phone(raw: str) -> str:
    """Normalise a phone as the till types it to its 10 significant digits.

    Spaces, ``-``, ``(``, ``)`` and ``+`` are removed; an 11-digit number starting with 7 or 8,
    or a 13-digit one starting with 007, loses that prefix.  A 10-digit number is kept as it is,
    even when it starts with 7 or 8.  Anything else is refused with ``PhoneError``.
    """
    if len(raw) > _PHONE_TEXT_CHARS_MAX:
        raise PhoneError("phone number is too long")
    digits = raw.translate(_SEPARATORS)
    if not (digits.isascii() and digits.isdigit()):
        raise PhoneError("phone number may contain only digits, spaces, +, -, ( and )")
    if len(digits) == 11 and digits[0] in "78":
        digits = digits[1:]
    elif len(digits) == 13 and digits.startswith("007"):
        digits = digits[3:]
    if len(digits) != PHONE_DIGITS:
        raise PhoneError("phone number must have 10 digits after the country code")
    return digits


def phone_international(phone10: str) -> str:
    """The normalised phone as the gateways want it: ``7`` followed by the 10 digits."""
    return "7" + phone10


def phone_last4(phone10: str) -> str:
    """The last four digits, which is all a store shows of a customer's phone."""
    return phone10[-4:]


def phone_hash(phone10: str, key: bytes) -> str:
    """A keyed hash of a normalised phone: how store replicas find a card without the number."""
    return hmac.new(key, phone10.encode("ascii"), hashlib.sha256).hexdigest()
