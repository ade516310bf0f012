"""Phone numbers: SmartApteka's normalisation to the 10 significant digits, and their hashes."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Final

from argon2.low_level import Type, hash_secret_raw

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
    """Protocol 1's phone hash: HMAC-SHA-256 with the chain's legacy key (``meta.phone_key``).

    Stores of protocol 2 use ``PhoneKey.hash``; this stays for answering stores not yet upgraded.
    """
    return hmac.new(key, phone10.encode("ascii"), hashlib.sha256).hexdigest()


# --- The phone hashes of card states (protocol 2) -------------------------------------------------
#
# A store finds a card by phone through a hash of it, and a copy of a store's database must give
# no phone away: the key lives outside the database (``service/phonekey.py``), and with the key the
# hash is still made slow and memory-hard (argon2id), so that trying the ~10^5 numbers left by the
# last four digits a till shows costs minutes per customer, not microseconds (docs/security.md).

#: What the first line of a key file says it is, with its version.
PHONE_KEY_FORMAT: Final = "bonus-phone-key/1"
PHONE_KEY_BYTES: Final = 32
#: Bytes of argon2id output kept: 128 bits, no collision among any number of phones in practice.
PHONE_HASH_BYTES: Final = 16
#: Bounds of the cost settings: argon2's own minimum of memory, and what a till could wait for.
PHONE_HASH_MEMORY_KIB_MIN: Final = 8
PHONE_HASH_MEMORY_KIB_MAX: Final = 1024 * 1024
PHONE_HASH_TIME_COST_MAX: Final = 32


class PhoneKeyError(ValueError):
    """A phone key (file) that cannot be used."""


@dataclass(frozen=True, slots=True)
class PhoneHashParams:
    """The cost of one phone hash: argon2id with this memory (KiB) and passes, one lane.

    One lane: a lookup runs on one core, and two tills looking up at once use two.
    """

    memory_kib: int
    time_cost: int

    def __post_init__(self) -> None:
        if not PHONE_HASH_MEMORY_KIB_MIN <= self.memory_kib <= PHONE_HASH_MEMORY_KIB_MAX:
            raise PhoneKeyError(
                f"memory_kib must be within {PHONE_HASH_MEMORY_KIB_MIN}..{PHONE_HASH_MEMORY_KIB_MAX}"
            )
        if not 1 <= self.time_cost <= PHONE_HASH_TIME_COST_MAX:
            raise PhoneKeyError(f"time_cost must be within 1..{PHONE_HASH_TIME_COST_MAX}")

    @property
    def cheap(self) -> bool:
        """Below the production cost: fine for tests and benchmarks, not for customers' phones."""
        production = PRODUCTION_PHONE_HASH
        return self.memory_kib < production.memory_kib or self.time_cost < production.time_cost


#: The production cost: 16 MiB, one pass, one lane; about 8 ms on an idle core of the reference
#: two-core machine and 11 ms on a busy one, which keeps a till's lookup by phone within its 50 ms
#: at p99 with four tills (``bench/phone_hash.py``). OWASP's argon2id minimum (19 MiB, 2 passes)
#: took 20-37 ms a hash there and broke that budget as soon as two lookups met. docs/security.md
#: has what this costs an attacker.
PRODUCTION_PHONE_HASH: Final = PhoneHashParams(memory_kib=16384, time_cost=1)


@dataclass(frozen=True, slots=True)
class PhoneKey:
    """The chain's key of phone hashes with the cost they are made at.

    ``key_id`` names the pair (a keyed digest: it says nothing of the key): it tags every hash
    made with it, so hashes of another key or cost are told apart, and the central server
    announces it so that a store with the wrong key file knows.
    """

    secret: bytes = field(repr=False)
    params: PhoneHashParams
    key_id: str = field(init=False)
    _salt: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != PHONE_KEY_BYTES:
            raise PhoneKeyError(f"the key must have {PHONE_KEY_BYTES} bytes")
        params = f"argon2id m={self.params.memory_kib} t={self.params.time_cost} p=1"
        key_id = hmac.new(self.secret, b"key id\0" + params.encode(), hashlib.sha256)
        object.__setattr__(self, "key_id", key_id.hexdigest()[:8])
        # argon2 wants a salt; a per-phone random one would make lookup impossible. A salt of
        # the key's own keeps tables made for one chain (or none) useless for another.
        salt = hmac.new(self.secret, b"salt", hashlib.sha256).digest()[:16]
        object.__setattr__(self, "_salt", salt)

    def hash(self, phone10: str) -> str:
        """The tagged hash under which a card is found by its normalised phone.

        The phone goes through HMAC with the key first: without the key no candidate can even
        be tried. argon2-cffi releases the GIL while hashing, so threads run in parallel.
        """
        password = hmac.new(self.secret, b"phone\0" + phone10.encode(), hashlib.sha256)
        digest = hash_secret_raw(
            password.digest(),
            self._salt,
            time_cost=self.params.time_cost,
            memory_cost=self.params.memory_kib,
            parallelism=1,
            hash_len=PHONE_HASH_BYTES,
            type=Type.ID,
        )
        return f"{self.key_id}:{digest.hex()}"

    def made_it(self, stored_hash: str | None) -> bool:
        """Whether a stored hash was made with this key and cost."""
        return stored_hash is not None and stored_hash.startswith(self.key_id + ":")

    def to_text(self) -> str:
        """The key file's text (JSON): the key and the cost, which both sides must share."""
        return (
            json.dumps(
                {
                    "format": PHONE_KEY_FORMAT,
                    "key_id": self.key_id,
                    "key": self.secret.hex(),
                    "memory_kib": self.params.memory_kib,
                    "time_cost": self.params.time_cost,
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_text(cls, text: str) -> PhoneKey:
        """A key file's key; ``PhoneKeyError`` for anything but a whole, consistent one."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PhoneKeyError(f"not a phone key file (not JSON: {exc.msg})") from None
        if not isinstance(data, dict) or data.get("format") != PHONE_KEY_FORMAT:
            raise PhoneKeyError(f"not a phone key file (no format {PHONE_KEY_FORMAT!r})")
        try:
            secret = bytes.fromhex(str(data["key"]))
            params = PhoneHashParams(int(data["memory_kib"]), int(data["time_cost"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise PhoneKeyError(f"phone key file: {exc}") from None
        key = cls(secret, params)
        if data.get("key_id") not in (None, key.key_id):
            raise PhoneKeyError("phone key file: key_id does not match its key (damaged file?)")
        return key
