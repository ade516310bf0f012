"""The snapshot for a new store: every card state as a JSON line, built in large chunks.

A million cards must stream in well under a minute, so this path does not build a pydantic
``CardState`` per card (``feed.card_states`` does, for the pages of changes): it reads the cards
in keyset chunks of ``SNAPSHOT_CHUNK``, the lots and holds of each chunk with one range query
each (``card BETWEEN first AND last``), groups them by card in Python and formats the JSON
text directly (every string through the json module's C quoting function). The lines are exactly what ``CardState.model_dump_json`` writes (same
fields, same order); ``tests/central/test_snapshot.py`` holds the two paths to the same output.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import date
from json.encoder import encode_basestring
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.apply import aware
from central.feed import kept_lots
from shared.phones import phone_last4

#: Cards per chunk: one cards query, one lots query, one holds query, one write of the stream.
SNAPSHOT_CHUNK = 10_000

#: A string as a JSON string literal (the C function of the json module: quotes, escapes).
_quote: Callable[[str], str] = encode_basestring

_cards, _lots, _holds = schema.cards, schema.lots, schema.holds


def _text(column: Any) -> Any:
    """A date column read without the dialect's conversion: SQLite stores ISO text and hands it
    over as is (PostgreSQL's driver still gives a ``date``; ``_iso`` takes either)."""
    return sa.type_coerce(column, sa.String).label(column.name)


_CARD_COLUMNS = (
    _cards.c.number,
    _cards.c.barcode,
    _cards.c.status,
    _cards.c.merged_into,
    _cards.c.phone,
    _cards.c.phone_hash,
    _cards.c.verified,
    _cards.c.debt_kop,
    _text(_cards.c.last_purchase_on),
    _cards.c.cursor,
)
_LOT_COLUMNS = (
    _lots.c.card,
    _lots.c.lot_id,
    _lots.c.amount_kop,
    _lots.c.remaining_kop,
    _text(_lots.c.created_on),
    _text(_lots.c.expires_on),
    _text(_lots.c.active_from),
    _lots.c.source,
    _lots.c.source_ref,
)


def _iso(value: str | date | None) -> str:
    """A date as a JSON value (``null`` for none)."""
    if value is None:
        return "null"
    return _quote(value if isinstance(value, str) else value.isoformat())


def _str(value: str | None) -> str:
    """A string as a JSON value (``null`` for none)."""
    return "null" if value is None else _quote(value)


async def _lots_between(
    conn: AsyncConnection, first: str, last: str, today: date
) -> dict[str, str]:
    """The JSON arrays of the lots of the cards ``first..last``, by card."""
    query = (
        sa.select(*_LOT_COLUMNS)
        .where(_lots.c.card >= first, _lots.c.card <= last, kept_lots(today))
        .order_by(_lots.c.card, _lots.c.lot_id)
    )
    by_card: dict[str, list[str]] = {}
    for card, lot_id, amount, remaining, created, expires, active, source, ref in (
        await conn.execute(query)
    ).all():
        lot = (
            f'{{"id":{_quote(lot_id)},"amount":{amount},"remaining":{remaining},'
            f'"created_on":{_iso(created)},"expires_on":{_iso(expires)},'
            f'"active_from":{_iso(active)},"source":{_quote(source)},"ref":{_str(ref)}}}'
        )
        found = by_card.get(card)
        if found is None:
            by_card[card] = [lot]
        else:
            found.append(lot)
    return {card: "[" + ",".join(lots) + "]" for card, lots in by_card.items()}


async def _holds_between(conn: AsyncConnection, first: str, last: str) -> dict[str, str]:
    """The JSON arrays of the active holds of the cards ``first..last``, by card."""
    query = (
        sa.select(_holds.c.card, _holds.c.hold_id, _holds.c.amount_kop, _holds.c.expires_at)
        .where(_holds.c.card >= first, _holds.c.card <= last, _holds.c.state == "active")
        .order_by(_holds.c.card, _holds.c.hold_id)
    )
    by_card: dict[str, list[str]] = {}
    for card, hold_id, amount, expires_at in (await conn.execute(query)).all():
        expires = _quote(aware(expires_at).isoformat())
        by_card.setdefault(card, []).append(
            f'{{"id":{_quote(hold_id)},"amount":{amount},"expires_at":{expires}}}'
        )
    return {card: "[" + ",".join(holds) + "]" for card, holds in by_card.items()}


def _encode(rows: Sequence[Any], lots: dict[str, str], holds: dict[str, str]) -> bytes:
    """Card rows as ``CardState`` JSON lines (the fields in the model's order)."""
    lines = []
    for (
        number,
        barcode,
        status,
        merged_into,
        phone,
        phone_hash,
        verified,
        debt,
        last,
        cursor,
    ) in rows:
        last4 = _quote(phone_last4(phone)) if phone else "null"
        lines.append(
            f'{{"number":{_quote(number)},"barcode":{_str(barcode)},"status":{_quote(status)},'
            f'"merged_into":{_str(merged_into)},"phone_hash":{_str(phone_hash)},'
            f'"phone_last4":{last4},"verified":{"true" if verified else "false"},'
            f'"debt":{debt},"lots":{lots.get(number, "[]")},"holds":{holds.get(number, "[]")},'
            f'"last_purchase_on":{_iso(last)},"cursor":{cursor}}}\n'
        )
    return "".join(lines).encode()


async def _chunk(
    conn: AsyncConnection, after: str | None, today: date, size: int
) -> tuple[Sequence[Any], dict[str, str], dict[str, str]] | None:
    """The next chunk of cards after ``after``, with their lots and holds (None at the end)."""
    query = sa.select(*_CARD_COLUMNS).order_by(_cards.c.number).limit(size)
    if after is not None:
        query = query.where(_cards.c.number > after)
    rows = (await conn.execute(query)).all()
    if not rows:
        return None
    first, last = rows[0][0], rows[-1][0]
    return (
        rows,
        await _lots_between(conn, first, last, today),
        await _holds_between(conn, first, last),
    )


async def card_lines(
    conn: AsyncConnection, today: date, size: int = SNAPSHOT_CHUNK
) -> AsyncGenerator[bytes, None]:
    """Every card's state as JSON lines, in card-number order, one chunk of lines at a time.

    The next chunk is read while this one is encoded and sent (the database works in its own
    thread or process meanwhile). Close the iterator (``contextlib.aclosing``) when stopping
    early: that waits for the read in flight (rather than interrupting the driver half-way)
    before the connection goes back.
    """
    fetch = asyncio.ensure_future(_chunk(conn, None, today, size))
    try:
        while (chunk := await fetch) is not None:
            rows, lots, holds = chunk
            fetch = asyncio.ensure_future(_chunk(conn, rows[-1][0], today, size))
            yield _encode(rows, lots, holds)
    finally:
        if not fetch.done():
            with contextlib.suppress(Exception):
                await fetch
