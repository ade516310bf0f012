"""Phone normalisation of docs/domain.md (SmartApteka's rule) and the phone helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.phones import (
    PHONE_DIGITS,
    PHONE_HASH_BYTES,
    PHONE_KEY_BYTES,
    PRODUCTION_PHONE_HASH,
    PhoneError,
    PhoneHashParams,
    PhoneKey,
    PhoneKeyError,
    normalize_phone,
    phone_hash,
    phone_international,
    phone_last4,
)


@pytest.mark.parametrize(
    "raw",
    [
        "+7 (916) 123-45-67",
        "+79161234567",
        "79161234567",
        "7 916 123 45 67",
        "7(916)1234567",
    ],
)
def test_phone_eleven_digits_starting_with_7_lose_the_prefix(raw: str) -> None:
    assert normalize_phone(raw) == "9161234567"


@pytest.mark.parametrize("raw", ["89161234567", "8 (916) 123-45-67", "8-916-123-45-67"])
def test_phone_eleven_digits_starting_with_8_lose_the_prefix(raw: str) -> None:
    assert normalize_phone(raw) == "9161234567"


@pytest.mark.parametrize("raw", ["0079161234567", "007 916 123-45-67", "+007 (916) 123 45 67"])
def test_phone_thirteen_digits_starting_with_007_lose_the_prefix(raw: str) -> None:
    assert normalize_phone(raw) == "9161234567"


def test_phone_ten_digits_kept_as_is() -> None:
    assert normalize_phone("9161234567") == "9161234567"
    assert normalize_phone("(916) 123-45-67") == "9161234567"


@pytest.mark.parametrize("raw", ["7161234567", "7 916 123 45 6"])
def test_phone_ten_digits_starting_with_7_kept_as_is(raw: str) -> None:
    assert normalize_phone(raw) == raw.replace(" ", "")


@pytest.mark.parametrize("raw", ["8001234567", "8 (800) 123-45-6"])
def test_phone_ten_digits_starting_with_8_kept_as_is(raw: str) -> None:
    expected = "".join(ch for ch in raw if ch.isdigit())
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "+()-",
        "123",
        "916123456",  # 9 digits
        "19161234567",  # 11 digits, not starting with 7 or 8
        "99161234567",
        "791612345678",  # 12 digits
        "1234567890123",  # 13 digits, not starting with 007
        "0089161234567",
        "00079161234567",  # 14 digits
        "07 9161234567",  # 11 digits starting with 0
    ],
)
def test_phone_not_ten_digits_after_the_prefix_refused(raw: str) -> None:
    with pytest.raises(PhoneError):
        normalize_phone(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "916.123.45.67",  # a dot is not one of the separators
        "916/1234567",
        "+7 916 123-45-6a",
        "+7\t9161234567",
        "９１６１２３４５６７",  # full-width digits
        "٩١٦١٢٣٤٥٦٧",  # Arabic-Indic digits
        "tel:+79161234567",
    ],
)
def test_phone_characters_other_than_digits_and_separators_refused(raw: str) -> None:
    with pytest.raises(PhoneError):
        normalize_phone(raw)


def test_phone_overlong_text_refused() -> None:
    with pytest.raises(PhoneError):
        normalize_phone(" " * 40 + "9161234567")


def test_phone_error_is_a_value_error() -> None:
    assert issubclass(PhoneError, ValueError)


def test_phone_helpers_international_last4_and_keyed_hash() -> None:
    assert phone_international("9161234567") == "79161234567"
    assert phone_last4("9161234567") == "4567"
    digest = phone_hash("9161234567", b"key-1")
    assert digest == phone_hash("9161234567", b"key-1")
    assert digest != phone_hash("9161234567", b"key-2")
    assert digest != phone_hash("9161234568", b"key-1")
    assert len(digest) == 64
    assert int(digest, 16) >= 0


# --- properties ----------------------------------------------------------------------------------

ten_digits = st.text(alphabet="0123456789", min_size=PHONE_DIGITS, max_size=PHONE_DIGITS)
separators = st.text(alphabet=" -()+", max_size=2)


@settings(max_examples=500, deadline=None)
@given(
    digits=ten_digits,
    prefix=st.sampled_from(["", "7", "8", "007"]),
    data=st.data(),
)
def test_property_phone_any_spelling_normalises_to_its_ten_digits(
    digits: str, prefix: str, data: st.DataObject
) -> None:
    # Scatter separators between the characters, as tills and people type them.
    raw = "".join(data.draw(separators) + ch for ch in prefix + digits) + data.draw(separators)
    assert normalize_phone(raw) == digits


@settings(max_examples=500, deadline=None)
@given(
    raw=st.one_of(
        st.text(alphabet="0123456789 -()+.x٣", max_size=20),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=45),
    )
)
def test_property_phone_result_is_ten_ascii_digits_or_refused(raw: str) -> None:
    try:
        phone = normalize_phone(raw)
    except PhoneError:
        return
    assert len(phone) == PHONE_DIGITS
    assert phone.isascii()
    assert phone.isdigit()


# --- the slow, keyed hash of protocol 2 ---------------------------------------------------------

CHEAP = PhoneHashParams(memory_kib=8, time_cost=1)


def test_the_phone_hash_depends_on_the_key_the_cost_and_the_phone_only() -> None:
    key = PhoneKey(b"k" * PHONE_KEY_BYTES, CHEAP)
    digest = key.hash("9161234567")
    assert digest == PhoneKey(b"k" * PHONE_KEY_BYTES, CHEAP).hash("9161234567")
    assert digest.startswith(key.key_id + ":")
    assert len(digest) == len(key.key_id) + 1 + 2 * PHONE_HASH_BYTES
    assert key.made_it(digest)
    others = {
        PhoneKey(b"j" * PHONE_KEY_BYTES, CHEAP).hash("9161234567"),
        PhoneKey(b"k" * PHONE_KEY_BYTES, PhoneHashParams(16, 1)).hash("9161234567"),
        PhoneKey(b"k" * PHONE_KEY_BYTES, PhoneHashParams(8, 2)).hash("9161234567"),
        key.hash("9161234568"),
    }
    assert digest not in others
    assert len(others) == 4
    # Another key or cost is another key id: its hashes are told apart from this key's.
    assert not any(key.made_it(other) for other in others - {key.hash("9161234568")})
    # Protocol 1's HMAC hashes are not this key's either.
    assert not key.made_it(phone_hash("9161234567", b"k" * PHONE_KEY_BYTES))
    assert not key.made_it(None)


def test_a_key_file_round_trips_and_refuses_what_is_not_one() -> None:
    key = PhoneKey(b"k" * PHONE_KEY_BYTES, CHEAP)
    assert PhoneKey.from_text(key.to_text()) == key
    assert "6b" * PHONE_KEY_BYTES not in repr(key)  # the key never shows in a log line
    for text in (
        "",
        "[]",
        '{"format": "other"}',
        key.to_text().replace('"time_cost": 1', '"time_cost": 0'),
    ):
        with pytest.raises(PhoneKeyError):
            PhoneKey.from_text(text)


def test_the_production_cost_is_not_a_test_cost() -> None:
    assert not PRODUCTION_PHONE_HASH.cheap
    assert CHEAP.cheap
    with pytest.raises(PhoneKeyError):
        PhoneHashParams(memory_kib=4, time_cost=1)
