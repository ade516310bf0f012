"""All of the agent's SQL: small functions over a connection, rows mapped to plain values."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.codec import wallet_from_json, wallet_to_json
from shared.journal import Operation, operation_from_json, operation_json
from shared.lots import Wallet


def dumps(value: Any) -> str:
    """Compact, canonical JSON as stored in the journal."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


# --- meta -------------------------------------------------------------------------------------


def get_meta(conn: sqlite3.Connection, key: str) -> Any:
    """A value of the meta table (JSON), or None."""
    with closing(conn.execute("SELECT value FROM meta WHERE key = ?", (key,))) as cursor:
        row = cursor.fetchone()
    return None if row is None else json.loads(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
    """Set a value of the meta table (JSON)."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, dumps(value)),
    )


# --- cards ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardRow:
    """A card of the replica with its working wallet."""

    number: str
    barcode: str | None
    status: str
    phone_hash: str | None
    phone_last4: str | None
    verified: bool
    wallet: Wallet


_CARD_COLUMNS = "number, barcode, status, phone_hash, phone_last4, verified, wallet"


def _card(row: Any) -> CardRow:
    return CardRow(
        number=row[0],
        barcode=row[1],
        status=row[2],
        phone_hash=row[3],
        phone_last4=row[4],
        verified=bool(row[5]),
        wallet=wallet_from_json(json.loads(row[6])),
    )


def find_card(conn: sqlite3.Connection, number_or_barcode: str) -> CardRow | None:
    """A card by its number or its barcode; a merged card answers as the card it joined."""
    with closing(
        conn.execute(
            f"SELECT {_CARD_COLUMNS}, merged_into FROM cards WHERE number = ? "
            f"UNION ALL SELECT {_CARD_COLUMNS}, merged_into FROM cards WHERE barcode = ? LIMIT 1",
            (number_or_barcode, number_or_barcode),
        )
    ) as cursor:
        row = cursor.fetchone()
    if row is not None and row[2] == "merged" and row[7] and row[7] != number_or_barcode:
        return find_card(conn, row[7])
    return None if row is None else _card(row)


def find_card_by_phone(conn: sqlite3.Connection, phone_hash: str) -> CardRow | None:
    """The card of a phone (its keyed hash); active cards first."""
    with closing(
        conn.execute(
            f"SELECT {_CARD_COLUMNS} FROM cards WHERE phone_hash = ? "
            "ORDER BY status = 'active' DESC, number LIMIT 1",
            (phone_hash,),
        )
    ) as cursor:
        row = cursor.fetchone()
    return None if row is None else _card(row)


def insert_card(
    conn: sqlite3.Connection,
    number: str,
    phone_hash: str,
    phone_last4: str,
    *,
    barcode: str | None = None,
) -> None:
    """A card registered at this store, before the central server knows it."""
    conn.execute(
        "INSERT INTO cards (number, barcode, phone_hash, phone_last4) VALUES (?, ?, ?, ?)",
        (number, barcode, phone_hash, phone_last4),
    )


def save_wallet(conn: sqlite3.Connection, number: str, wallet: Wallet) -> None:
    """Store a card's working wallet."""
    conn.execute(
        "UPDATE cards SET wallet = ? WHERE number = ?", (dumps(wallet_to_json(wallet)), number)
    )


def set_verified(conn: sqlite3.Connection, number: str) -> None:
    """Mark a card's phone as confirmed by a code."""
    conn.execute("UPDATE cards SET verified = 1 WHERE number = ?", (number,))


def count_cards(conn: sqlite3.Connection) -> int:
    """How many cards the replica holds."""
    with closing(conn.execute("SELECT count(*) FROM cards")) as cursor:
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


# --- journal ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One operation of this store: its number, its id, the typed operation, and the answer the
    till got (replayed to a retry)."""

    seq: int
    op_id: str
    idem_key: str
    request_hash: str
    operation: Operation
    response: dict[str, Any]
    status: int
    created_at: datetime

    @property
    def kind(self) -> str:
        """The operation's kind."""
        return self.operation.kind

    @property
    def card(self) -> str:
        """The operation's card."""
        return self.operation.card


_JOURNAL_COLUMNS = (
    "seq, op_id, kind, idem_key, card, request_hash, payload, response, status, created_at"
)


def _entry(row: Any) -> JournalEntry:
    entry = JournalEntry(
        seq=row[0],
        op_id=row[1],
        idem_key=row[3],
        request_hash=row[5],
        operation=operation_from_json(row[6]),
        response=json.loads(row[7]),
        status=row[8],
        created_at=datetime.fromisoformat(row[9]),
    )
    # Check a record after reading it back: the indexed columns say what the operation says.
    assert (entry.kind, entry.card) == (row[2], row[4]), (
        f"journal entry {entry.seq} is inconsistent"
    )
    return entry


def find_entry(conn: sqlite3.Connection, kind: str, idem_key: str) -> JournalEntry | None:
    """The operation of this kind recorded under this idempotency key."""
    with closing(
        conn.execute(
            f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE kind = ? AND idem_key = ?",
            (kind, idem_key),
        )
    ) as cursor:
        row = cursor.fetchone()
    return None if row is None else _entry(row)


def find_answer(
    conn: sqlite3.Connection, kind: str, idem_key: str
) -> tuple[str, dict[str, Any]] | None:
    """The request fingerprint and the answer of the operation recorded under this key (what a
    retry is replayed from, without reading the operation itself)."""
    with closing(
        conn.execute(
            "SELECT request_hash, response FROM journal WHERE kind = ? AND idem_key = ?",
            (kind, idem_key),
        )
    ) as cursor:
        row = cursor.fetchone()
    return None if row is None else (row[0], json.loads(row[1]))


def append_entry(
    conn: sqlite3.Connection,
    *,
    op_id: str,
    idem_key: str,
    request_hash: str,
    operation: Operation,
    response: dict[str, Any],
    created_at: datetime,
    status: int = 200,
) -> int:
    """Record an operation and return its per-store sequence number (in the caller's
    transaction, so the number and the effects commit together)."""
    assert created_at.tzinfo is not None, "a journal's moments are aware"
    with closing(
        conn.execute(
            "INSERT INTO journal (op_id, kind, idem_key, card, request_hash, payload, response, "
            "status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (
                op_id,
                operation.kind,
                idem_key,
                operation.card,
                request_hash,
                operation_json(operation),
                dumps(response),
                status,
                created_at.isoformat(),
            ),
        )
    ) as cursor:
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def card_entries(conn: sqlite3.Connection, card: str, limit: int) -> list[JournalEntry]:
    """A card's operations at this store, newest first."""
    with closing(
        conn.execute(
            f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE card = ? ORDER BY seq DESC LIMIT ?",
            (card, limit),
        )
    ) as cursor:
        return [_entry(row) for row in cursor.fetchall()]


def entries_after(conn: sqlite3.Connection, seq: int, limit: int) -> list[JournalEntry]:
    """Operations after a sequence number, in order (the upload queue)."""
    with closing(
        conn.execute(
            f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
    ) as cursor:
        return [_entry(row) for row in cursor.fetchall()]


#: A set of cards' pending operations: one statement whatever the number of cards.
PENDING_FOR_CARDS = (
    f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE seq > ? "
    "AND card IN (SELECT value FROM json_each(?)) ORDER BY seq"
)


def pending_entries_for(
    conn: sqlite3.Connection, cards: list[str], acked_seq: int
) -> list[JournalEntry]:
    """The not yet acknowledged operations of these cards, in order.

    The cards go as one JSON array parameter: with a ``?`` per card every count of cards would be
    its own statement, and the connection caches 128 of them, a few hundred KiB each.
    """
    with closing(conn.execute(PENDING_FOR_CARDS, (acked_seq, json.dumps(cards)))) as cursor:
        return [_entry(row) for row in cursor.fetchall()]


def pending_cards(conn: sqlite3.Connection, acked_seq: int) -> set[str]:
    """The cards with operations not yet acknowledged."""
    with closing(
        conn.execute("SELECT DISTINCT card FROM journal WHERE seq > ?", (acked_seq,))
    ) as cursor:
        return {row[0] for row in cursor.fetchall()}


def last_seq(conn: sqlite3.Connection) -> int:
    """The highest sequence number recorded (0 for an empty journal)."""
    with closing(conn.execute("SELECT coalesce(max(seq), 0) FROM journal")) as cursor:
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def renumber_after(conn: sqlite3.Connection, acked_seq: int, shift: int) -> int:
    """Move every operation after ``acked_seq`` up by ``shift``, with the references to their
    numbers (a receipt's sale, a hold's placing); returns how many operations moved.

    Op ids stay: the central server answers those it already holds as duplicates.  New
    operations number after the moved ones, as SQLite gives a new row the highest number + 1.
    """
    assert shift > 0, "operations only move up, past what the central server holds"
    # Through negative numbers: an UPDATE checks the primary key row by row, and moving a row up
    # in place would collide with a row above it that has not moved yet.
    moved = conn.execute(
        "UPDATE journal SET seq = -(seq + ?) WHERE seq > ?", (shift, acked_seq)
    ).rowcount
    conn.execute("UPDATE journal SET seq = -seq WHERE seq < 0")
    conn.execute("UPDATE receipts SET seq = seq + ? WHERE seq > ?", (shift, acked_seq))
    conn.execute("UPDATE holds SET seq = seq + ? WHERE seq > ?", (shift, acked_seq))
    return int(moved)


# --- receipts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    """A receipt sold at this store, with what its returns have reversed so far."""

    receipt_id: str
    card: str
    seq: int
    lines: list[dict[str, Any]]
    allocations: list[list[Any]]
    accrual_lot: str | None
    returned: dict[str, str]
    refunded_kop: int


def find_receipt(conn: sqlite3.Connection, receipt_id: str) -> ReceiptRow | None:
    """A receipt sold here."""
    with closing(
        conn.execute(
            "SELECT receipt_id, card, seq, lines, allocations, accrual_lot, returned, refunded_kop "
            "FROM receipts WHERE receipt_id = ?",
            (receipt_id,),
        )
    ) as cursor:
        row = cursor.fetchone()
    if row is None:
        return None
    return ReceiptRow(
        row[0],
        row[1],
        row[2],
        json.loads(row[3]),
        json.loads(row[4]),
        row[5],
        json.loads(row[6]),
        row[7],
    )


def insert_receipt(conn: sqlite3.Connection, receipt: ReceiptRow) -> None:
    """Record a receipt sold here."""
    conn.execute(
        "INSERT INTO receipts (receipt_id, card, seq, lines, allocations, accrual_lot, returned, "
        "refunded_kop) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            receipt.receipt_id,
            receipt.card,
            receipt.seq,
            dumps(receipt.lines),
            dumps(receipt.allocations),
            receipt.accrual_lot,
            dumps(receipt.returned),
            receipt.refunded_kop,
        ),
    )


def update_receipt_returns(
    conn: sqlite3.Connection, receipt_id: str, returned: dict[str, str], refunded_kop: int
) -> None:
    """Record what the returns of a receipt have reversed so far."""
    conn.execute(
        "UPDATE receipts SET returned = ?, refunded_kop = ? WHERE receipt_id = ?",
        (dumps(returned), refunded_kop, receipt_id),
    )


# --- holds ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldRow:
    """A hold placed at this store."""

    hold_id: str
    card: str
    amount_kop: int
    expires_at: datetime
    state: str
    seq: int


def _hold(row: Any) -> HoldRow:
    return HoldRow(row[0], row[1], row[2], datetime.fromisoformat(row[3]), row[4], row[5])


def find_hold(conn: sqlite3.Connection, hold_id: str) -> HoldRow | None:
    """A hold by id."""
    with closing(
        conn.execute(
            "SELECT hold_id, card, amount_kop, expires_at, state, seq FROM holds WHERE hold_id = ?",
            (hold_id,),
        )
    ) as cursor:
        row = cursor.fetchone()
    if row is None:
        return None
    return _hold(row)


def holds_placed_after(conn: sqlite3.Connection, card: str, seq: int) -> list[HoldRow]:
    """A card's holds placed here by operations after a sequence number (not uploaded yet)."""
    with closing(
        conn.execute(
            "SELECT hold_id, card, amount_kop, expires_at, state, seq FROM holds "
            "WHERE card = ? AND seq > ?",
            (card, seq),
        )
    ) as cursor:
        rows = cursor.fetchall()
    return [_hold(row) for row in rows]


def insert_hold(conn: sqlite3.Connection, hold: HoldRow) -> None:
    """Record a new hold."""
    conn.execute(
        "INSERT INTO holds (hold_id, card, amount_kop, expires_at, state, seq) VALUES (?, ?, ?, ?, ?, ?)",
        (
            hold.hold_id,
            hold.card,
            hold.amount_kop,
            hold.expires_at.isoformat(),
            hold.state,
            hold.seq,
        ),
    )


def set_hold_state(conn: sqlite3.Connection, hold_id: str, state: str) -> None:
    """Resolve a hold: consumed, released or expired."""
    conn.execute("UPDATE holds SET state = ? WHERE hold_id = ?", (state, hold_id))


# --- verifications ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerificationRow:
    """A confirmation code sent to a customer (only the code's keyed hash is kept)."""

    verification_id: str
    card: str
    phone_hash: str
    purpose: str
    receipt_id: str | None
    channel: str
    code_hash: str
    created_at: datetime
    expires_at: datetime
    attempts_left: int
    confirmed_at: datetime | None
    used_by: str | None


_VERIFICATION_COLUMNS = (
    "verification_id, card, phone_hash, purpose, receipt_id, channel, code_hash, created_at, "
    "expires_at, attempts_left, confirmed_at, used_by"
)


def _verification(row: Any) -> VerificationRow:
    return VerificationRow(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        datetime.fromisoformat(row[7]),
        datetime.fromisoformat(row[8]),
        row[9],
        datetime.fromisoformat(row[10]) if row[10] else None,
        row[11],
    )


def find_verification(conn: sqlite3.Connection, verification_id: str) -> VerificationRow | None:
    """A verification by id."""
    with closing(
        conn.execute(
            f"SELECT {_VERIFICATION_COLUMNS} FROM verifications WHERE verification_id = ?",
            (verification_id,),
        )
    ) as cursor:
        row = cursor.fetchone()
    return None if row is None else _verification(row)


def insert_verification(conn: sqlite3.Connection, v: VerificationRow) -> None:
    """Record a code that was sent."""
    conn.execute(
        f"INSERT INTO verifications ({_VERIFICATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            v.verification_id,
            v.card,
            v.phone_hash,
            v.purpose,
            v.receipt_id,
            v.channel,
            v.code_hash,
            v.created_at.isoformat(),
            v.expires_at.isoformat(),
            v.attempts_left,
            v.confirmed_at.isoformat() if v.confirmed_at else None,
            v.used_by,
        ),
    )


def update_verification(
    conn: sqlite3.Connection,
    verification_id: str,
    *,
    attempts_left: int | None = None,
    confirmed_at: datetime | None = None,
    used_by: str | None = None,
) -> None:
    """Record an attempt, a confirmation or the operation that used the code."""
    if attempts_left is not None:
        conn.execute(
            "UPDATE verifications SET attempts_left = ? WHERE verification_id = ?",
            (attempts_left, verification_id),
        )
    if confirmed_at is not None:
        conn.execute(
            "UPDATE verifications SET confirmed_at = ? WHERE verification_id = ?",
            (confirmed_at.isoformat(), verification_id),
        )
    if used_by is not None:
        conn.execute(
            "UPDATE verifications SET used_by = ? WHERE verification_id = ?",
            (used_by, verification_id),
        )


def codes_sent_since(conn: sqlite3.Connection, phone_hash: str, since: datetime) -> int:
    """Codes sent to a phone since a moment (the hourly limit)."""
    with closing(
        conn.execute(
            "SELECT count(*) FROM verifications WHERE phone_hash = ? AND created_at > ?",
            (phone_hash, since.isoformat()),
        )
    ) as cursor:
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def last_verification(conn: sqlite3.Connection, card: str, purpose: str) -> VerificationRow | None:
    """The newest verification of a card for a purpose (the resend limit)."""
    with closing(
        conn.execute(
            f"SELECT {_VERIFICATION_COLUMNS} FROM verifications WHERE card = ? AND purpose = ? "
            "ORDER BY created_at DESC LIMIT 1",
            (card, purpose),
        )
    ) as cursor:
        row = cursor.fetchone()
    return None if row is None else _verification(row)
