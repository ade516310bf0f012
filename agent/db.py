"""The agent's SQLite database: connections, pragmas and ordered migrations.

One write connection serialised by a lock, every write one short ``BEGIN IMMEDIATE``
transaction; reads go through their own connection (WAL lets them run beside the writer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import aiosqlite

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 5000

MIGRATIONS: Final[list[tuple[str, str]]] = [
    (
        "0001_initial",
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) STRICT;

        -- Card states: the central replica (base) and the working state with this store's
        -- pending operations applied on top (wallet).
        CREATE TABLE cards (
            number TEXT PRIMARY KEY,
            barcode TEXT,
            status TEXT NOT NULL DEFAULT 'active',
            phone_hash TEXT,
            phone_last4 TEXT,
            verified INTEGER NOT NULL DEFAULT 0,
            base TEXT NOT NULL DEFAULT '{"lots": [], "debt": 0, "holds": []}',
            wallet TEXT NOT NULL DEFAULT '{"lots": [], "debt": 0, "holds": []}',
            last_purchase_on TEXT,
            central_cursor INTEGER NOT NULL DEFAULT 0
        ) STRICT;
        CREATE UNIQUE INDEX cards_barcode ON cards(barcode) WHERE barcode IS NOT NULL;
        CREATE INDEX cards_phone ON cards(phone_hash) WHERE phone_hash IS NOT NULL;

        -- The journal of this store's operations; seq is the per-store sequence number.
        CREATE TABLE journal (
            seq INTEGER PRIMARY KEY,
            op_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            idem_key TEXT NOT NULL,
            card TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            payload TEXT NOT NULL,
            response TEXT NOT NULL,
            status INTEGER NOT NULL DEFAULT 200,
            created_at TEXT NOT NULL,
            UNIQUE (kind, idem_key)
        ) STRICT;
        CREATE INDEX journal_card ON journal(card, seq);

        -- Receipts sold here, for returns: lines with their accruals and redemptions, and what
        -- earlier returns have reversed.
        CREATE TABLE receipts (
            receipt_id TEXT PRIMARY KEY,
            card TEXT NOT NULL,
            seq INTEGER NOT NULL,
            lines TEXT NOT NULL,
            allocations TEXT NOT NULL,
            accrual_lot TEXT,
            returned TEXT NOT NULL DEFAULT '{}',
            refunded_kop INTEGER NOT NULL DEFAULT 0
        ) STRICT;

        CREATE TABLE holds (
            hold_id TEXT PRIMARY KEY,
            card TEXT NOT NULL,
            amount_kop INTEGER NOT NULL,
            expires_at TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'active',
            seq INTEGER NOT NULL
        ) STRICT;

        CREATE TABLE verifications (
            verification_id TEXT PRIMARY KEY,
            card TEXT NOT NULL,
            phone_hash TEXT NOT NULL,
            purpose TEXT NOT NULL,
            receipt_id TEXT,
            channel TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            attempts_left INTEGER NOT NULL,
            confirmed_at TEXT,
            used_by TEXT
        ) STRICT;
        CREATE INDEX verifications_phone ON verifications(phone_hash, created_at);
        CREATE INDEX verifications_card ON verifications(card, purpose, created_at);
        """,
    ),
    (
        "0002_merged_cards",
        """
        -- Two stores registered one phone offline: the central server merged the later card
        -- into the earlier one, and operations on it go to the primary.
        ALTER TABLE cards ADD COLUMN merged_into TEXT;
        """,
    ),
]


async def _configure(conn: aiosqlite.Connection) -> None:
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=FULL")
    await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    await conn.execute("PRAGMA foreign_keys=ON")


async def migrate(conn: aiosqlite.Connection) -> list[str]:
    """Apply the migrations not yet recorded, each in the transaction that records it."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    await conn.commit()
    async with conn.execute("SELECT name FROM schema_migrations") as cursor:
        done = {row[0] for row in await cursor.fetchall()}
    applied = []
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # executescript would commit on its own; run the statements one by one instead.
            for statement in _statements(sql):
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations VALUES (?, datetime('now'))", (name,))
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        log.info("applied migration %s", name)
        applied.append(name)
    return applied


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


class Database:
    """The agent's two connections: one writer behind a lock, one reader."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        """Open both connections, creating and migrating the database if needed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await aiosqlite.connect(self.path, isolation_level=None)
        await _configure(self._writer)
        await migrate(self._writer)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await _configure(self._reader)
        await self._reader.execute("PRAGMA query_only=ON")

    async def close(self) -> None:
        """Close both connections."""
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def reader(self) -> aiosqlite.Connection:
        """The read connection."""
        assert self._reader is not None, "database is open"
        return self._reader

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error."""
        assert self._writer is not None, "database is open"
        async with self._write_lock:
            conn = self._writer
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()
