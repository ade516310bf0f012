"""Storing the central server's snapshot: a million card states in well under a minute.

The pages of changes go through pydantic models (``CardState``) and the core's wallet
(``replica.apply_card_states``); for a snapshot that costs more than the whole budget. Its lines
take a direct path instead, run by the writer thread (off the event loop):

- each line is validated by pydantic as a ``CardLine`` (the ``CardState`` message as a plain
  dict: same fields, none unknown, same types), without building models;
- what the wallet's reader (``shared.codec.wallet_from_json``) would refuse or normalise is
  checked here: lot sources the core knows, ISO dates, hold expiry times;
- the wallet is encoded straight from the line's lots and holds, which are already the JSON of
  the core's lots and holds, as the same canonical text ``replica.apply_card_states`` stores;
- a card with operations of this store not yet acknowledged is rebased as in a page of changes.

The replica's phone index is dropped for the length of the snapshot and built again, by one
sort, in the last batch's transaction (``agent/sync.py``); meanwhile ``AgentContext.bootstrapping``
sends the tills' lookups by phone to the writer thread, where a scan does not stop the event loop.

A line that is not such a card state refuses its whole batch (``SnapshotError``): nothing of the
batch is stored, the round fails with the reason, and the next round starts the snapshot again
(the cursor is saved only with the last batch).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any, Final, cast

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_json

from agent import store
from agent.db import PHONE_INDEX_SQL
from agent.replica import UPSERT_CARDS, rebase
from shared.codec import wallet_from_json, wallet_to_json
from shared.lots import LotSource
from shared.protocol import CardLine

_CARD_LINE: Final = TypeAdapter(CardLine)
SOURCES: Final = frozenset(source.value for source in LotSource)


def drop_phone_index(conn: sqlite3.Connection) -> None:
    """At the start of a snapshot: a million inserts at random places of the phone index would
    cost more than the rest of the bootstrap (each batch rewriting most of its pages)."""
    conn.execute("DROP INDEX IF EXISTS cards_phone")


def build_phone_index(conn: sqlite3.Connection) -> None:
    """With the snapshot's last batch (or after a failed one): one sort of every phone hash."""
    conn.execute(PHONE_INDEX_SQL)


class SnapshotError(ValueError):
    """A snapshot line that is not a card state of this protocol (``line``: which one of its
    batch, from 1)."""

    line = 0


class DateCheck:
    """ISO dates as the wallet's reader takes them, remembered (a snapshot has a few hundred
    distinct dates among millions of lots)."""

    def __init__(self) -> None:
        self._canonical: dict[str, str] = {}

    def canonical(self, value: str, what: str) -> str:
        """The date's ``YYYY-MM-DD`` form; ``SnapshotError`` if it is not a date."""
        found = self._canonical.get(value)
        if found is None:
            try:
                found = date.fromisoformat(value).isoformat()
            except ValueError:
                raise SnapshotError(f"{what}: {value!r} is not a date") from None
            self._canonical[value] = found
        return found


def parse_card(line: bytes, dates: DateCheck) -> dict[str, Any]:
    """One snapshot line as a checked card state (plain JSON values, wallet parts canonical)."""
    try:
        card = cast(dict[str, Any], _CARD_LINE.validate_json(line))
    except ValidationError as exc:
        raise SnapshotError(_reason(exc)) from None
    what = f"card {card['number']!r}"
    for lot in card["lots"]:
        if lot["source"] not in SOURCES:
            raise SnapshotError(f"{what}: lot source {lot['source']!r}")
        # As ``lot_from_json`` then ``lot_to_json`` would leave them.
        lot["created_on"] = dates.canonical(lot["created_on"], what)
        for key in ("expires_on", "active_from"):
            if lot[key]:
                lot[key] = dates.canonical(lot[key], what)
            else:
                lot[key] = None
    for hold in card["holds"]:
        try:
            hold["expires_at"] = datetime.fromisoformat(hold["expires_at"]).isoformat()
        except ValueError:
            raise SnapshotError(f"{what}: hold expires_at {hold['expires_at']!r}") from None
    return card


def _reason(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "the line"
    return f"{where}: {error['msg']} ({exc.error_count()} errors)"


def store_snapshot_lines(
    conn: sqlite3.Connection, lines: list[bytes], dates: DateCheck, now: datetime, store_id: str
) -> int:
    """Store a batch of snapshot lines in the writer's transaction; how many cards.

    Each line is parsed as SQLite asks for its row, so a batch holds its lines in memory and
    never all of its cards' objects at once.
    """
    acked = int(store.get_meta(conn, "acked_seq") or 0)
    local = store.pending_cards(conn, acked)
    count = 0

    def rows() -> Iterator[tuple[Any, ...]]:
        nonlocal count
        for line in lines:
            try:
                card = parse_card(line, dates)
            except SnapshotError as exc:
                exc.line = count + 1
                raise
            # Keys in sorted order, as ``store.dumps`` writes them (the lots' and holds' are).
            base_json = {"debt": card["debt"], "holds": card["holds"], "lots": card["lots"]}
            base = to_json(base_json).decode()
            wallet = base
            if card["number"] in local:
                rebased = wallet_from_json(base_json)
                for entry in store.pending_entries_for(conn, [card["number"]], acked):
                    rebased = rebase(rebased, entry, now, store_id)
                wallet = store.dumps(wallet_to_json(rebased))
            count += 1
            yield (
                card["number"],
                card["barcode"],
                card["status"],
                card.get("merged_into"),
                card["phone_hash"],
                card["phone_last4"],
                int(card["verified"]),
                base,
                wallet,
                card["last_purchase_on"],
                card["cursor"],
            )

    conn.executemany(UPSERT_CARDS, rows())
    return count
