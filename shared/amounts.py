"""Amounts at the APIs' edges as pydantic types: roubles in (exact), kopecks inside, roubles out;
and calendar days in, as the documents promise them."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from shared.money import KOPECKS_PER_ROUBLE, AmountError, parse_kop


def _amount_in(value: Any) -> int:
    try:
        return parse_kop(value)
    except AmountError as exc:
        raise ValueError(str(exc)) from exc


def _amount_out(amount_kop: int) -> float:
    # JSON numbers out, as the till's contract asks. IEEE division is correctly rounded, so this
    # is the double nearest the exact decimal (what float(kop_to_decimal(...)) gives, at a
    # tenth of the cost); for up to 15 significant digits its shortest representation, which
    # JSON prints, is that exact decimal ("12.3").
    return amount_kop / KOPECKS_PER_ROUBLE


_AMOUNT_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0, "multipleOf": 0.01},
        {"type": "string", "pattern": r"^\+?[0-9]{1,10}(\.[0-9]{1,2}0*)?$"},
    ],
    "description": "Roubles, at most 2 fractional digits.",
}

#: An amount in roubles as a client sends it; kopecks inside.
AmountIn = Annotated[int, BeforeValidator(_amount_in), WithJsonSchema(_AMOUNT_SCHEMA)]
#: An amount in kopecks, answered as roubles (a JSON number).
AmountOut = Annotated[
    int,
    PlainSerializer(_amount_out, return_type=float, when_used="json"),
    WithJsonSchema({"type": "number", "description": "Roubles."}),
]


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _day_in(value: Any) -> Any:
    # pydantic alone would also read a number or a numeric string as a Unix time (0 and "0" are
    # 1970-01-01) and a midnight date-time as its day; the documents promise YYYY-MM-DD only.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DAY.fullmatch(value):
        return value
    raise ValueError("a day is written YYYY-MM-DD")


#: A calendar day as a client sends it: ``YYYY-MM-DD``, nothing else.
DayIn = Annotated[date, BeforeValidator(_day_in)]
