"""The agent's SQLite database: connections, pragmas, ordered migrations, and the writer.

Reads are point queries answered on the event loop's thread from their own connection (WAL lets
them run beside the writer; each takes microseconds, less than a hop to another thread).

Every write is a function run by the one writer thread.  The writer takes the functions that
are waiting, runs them in one ``BEGIN IMMEDIATE`` transaction, each inside its own savepoint (a
refused operation rolls back alone), commits once — one fsync for the group — and only then
answers each caller.  Nothing is acknowledged before its commit is durable.

Checkpoints (copying the write-ahead log back into the database file, and its fsync) run in a
thread of their own, after commits: left to SQLite, the commit that fills the log does it, and
every hundredth sale waited several milliseconds for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from shared.journal import operation_json
from shared.protocol_v1 import operation_from_v1

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 5000
#: Operations committed together at most (one fsync for all of them).
GROUP_COMMIT_MAX: Final = 64
#: Operations waiting for the writer at most; more are refused as busy rather than queued.
WRITE_QUEUE_MAX: Final = 1000
#: The checkpointer waits this long after a commit, so that one checkpoint covers the commits of
#: a second: fewer, larger checkpoints (a page written many times is copied once), and fewer
#: chances for a sale's commit to wait behind one.
CHECKPOINT_DELAY_S: Final = 1.0
#: Pages in the log at which the writer checkpoints after its commit after all.  Under a steady
#: stream of commits the checkpointer never finds the log without a commit beside it, and the log
#: only starts again from its beginning after a checkpoint that caught up with the writer: without
#: this it grew by 30 MiB a second under the tills back to back.  Most of those pages have been
#: copied by the checkpointer already, so the writer's pass is short, and rare.
WRITER_CHECKPOINT_PAGES: Final = 10_000

T = TypeVar("T")

#: A migration is SQL, or a function over the connection for what SQL cannot say.
Migration = str | Callable[[sqlite3.Connection], None]


def _typed_journal(conn: sqlite3.Connection) -> None:
    """The journal's payloads of protocol 1 become typed operations (``shared/journal.py``).

    Every operation recorded before the upgrade, acknowledged or not, is rewritten, so the
    journal reads one way: the unsent ones are uploaded in the new protocol after the upgrade.
    """
    rows = conn.execute("SELECT seq, kind, card, payload FROM journal").fetchall()
    for seq, kind, card, payload in rows:
        data = json.loads(payload)
        if "kind" in data:
            continue  # written by this version already
        operation = operation_from_v1(kind, data)
        assert operation.card == card, f"journal entry {seq} names another card"
        conn.execute(
            "UPDATE journal SET payload = ? WHERE seq = ?", (operation_json(operation), seq)
        )


MIGRATIONS: Final[list[tuple[str, Migration]]] = [
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
    (
        "0003_holds_card",
        """
        -- A redemption asked of the central server counts the card's holds not uploaded yet.
        CREATE INDEX holds_card ON holds(card, seq);
        """,
    ),
    ("0004_typed_journal", _typed_journal),
    (
        "0005_phone_key_out_of_database",
        """
        -- The key of the phone hashes no longer lives here (service/phonekey.py): a copy of this
        -- database must give no phone away. The hashes made with the old key go with it: that
        -- key is in every store's older backups, and with it they give the phones back in
        -- seconds. Until a new snapshot brings the new hashes, lookups by phone answer that the
        -- replica is being updated rather than "not found" (which would make cashiers register
        -- known customers again); a store that never had a snapshot has nothing to update.
        INSERT INTO meta (key, value)
            SELECT 'phone_hashes_stale', 'true' WHERE EXISTS (SELECT 1 FROM meta WHERE key = 'cursor');
        DELETE FROM meta WHERE key IN ('phone_key', 'cursor', 'cursor_card');
        UPDATE cards SET phone_hash = NULL WHERE phone_hash IS NOT NULL;
        UPDATE verifications SET phone_hash = '' WHERE phone_hash != '';
        """,
    ),
]


#: The replica's index of phone hashes, as migration 0001 creates it. A snapshot's bootstrap
#: drops it and builds it again at its end (one sort instead of a million random inserts, see
#: ``agent/bootstrap.py``); the writer builds it at start if an interrupted bootstrap left none.
PHONE_INDEX_SQL: Final = (
    "CREATE INDEX IF NOT EXISTS cards_phone ON cards(phone_hash) WHERE phone_hash IS NOT NULL"
)


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    # What is deleted is overwritten with zeros, not left in free space: the phones and
    # profiles removed from registrations once acknowledged, the hashes of an old key.
    conn.execute("PRAGMA secure_delete=ON")


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet recorded, each in the transaction that records it."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    applied = []
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if callable(sql):
                sql(conn)
            else:
                # executescript would commit on its own; run the statements one by one instead.
                for statement in _statements(sql):
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, datetime('now'))", (name,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("applied migration %s", name)
        applied.append(name)
    return applied


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


def connect(
    path: Path, *, read_only: bool = False, checkpoint_pages: int = 0
) -> sqlite3.Connection:
    """A connection with the agent's pragmas, in autocommit mode (transactions are explicit).

    It checkpoints on commit only once the log holds ``checkpoint_pages`` pages (0: never);
    ``Database`` runs the checkpoints in a thread of their own.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    _configure(conn)
    conn.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint_pages)}")
    if read_only:
        conn.execute("PRAGMA query_only=ON")
    return conn


class ServiceBusy(Exception):
    """The writer's queue is full."""


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up waiting; the work is committed all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Database:
    """The read connection and the writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: sqlite3.Connection | None = None
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=WRITE_QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        #: Set by the writer after a commit, cleared by the checkpointer when it starts.
        self._committed = threading.Event()
        self._closing = threading.Event()
        #: The next checkpoint also empties the log (``truncate_log_soon``).
        self._truncate = threading.Event()
        self.groups_committed = 0
        self.checkpoints = 0

    async def open(self) -> None:
        """Create and migrate the database, start the writer, open the reader."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._writer, args=(loop, started), name="journal-writer", daemon=True
        )
        self._thread.start()
        await started
        self._closing.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="journal-checkpointer", daemon=True
        )
        self._checkpointer.start()
        self._reader = connect(self.path, read_only=True)

    async def close(self) -> None:
        """Finish the queued writes, stop the writer and the checkpointer, close the reader."""
        if self._thread is not None:
            await asyncio.to_thread(self._queue.put, None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._checkpointer is not None:
            self._closing.set()
            self._committed.set()
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def write_queue_depth(self) -> int:
        """Writes waiting for the writer thread (the metrics show it)."""
        return self._queue.qsize()

    @property
    def reader(self) -> sqlite3.Connection:
        """The read connection (use on the event loop's thread)."""
        assert self._reader is not None, "database is open"
        return self._reader

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction; its result once the commit is durable."""
        assert self._thread is not None, "database is open"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        try:
            self._queue.put_nowait(_Job(fn, loop, future))
        except queue.Full as exc:
            raise ServiceBusy("too many writes waiting") from exc
        # Shielded: once queued, the write happens; a cancelled caller just stops waiting.
        return await asyncio.shield(future)

    def _writer(self, loop: asyncio.AbstractEventLoop, started: asyncio.Future[None]) -> None:
        try:
            conn = connect(self.path, checkpoint_pages=WRITER_CHECKPOINT_PAGES)
            migrate(conn)
            conn.execute(PHONE_INDEX_SQL)
            # Old page images left in the write-ahead log (from before a deletion) go too.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, started, None, exc)
            return
        loop.call_soon_threadsafe(_settle, started, None, None)
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                jobs = [job]
                stop = False
                while len(jobs) < GROUP_COMMIT_MAX:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    jobs.append(more)
                self._commit_group(conn, jobs)
                if stop:
                    return
        finally:
            conn.close()

    def _commit_group(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                conn.execute("SAVEPOINT operation")
                try:
                    result = job.fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO operation")
                    conn.execute("RELEASE operation")
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE operation")
                    outcomes.append((job, result, None))
            conn.execute("COMMIT")
            self.groups_committed += 1
            self._committed.set()
        except Exception as exc:  # the commit itself failed: nothing of the group is kept
            log.exception("write transaction failed")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(job, None, exc) for job in jobs]
        for job, result, error in outcomes:
            job.loop.call_soon_threadsafe(_settle, job.future, result, error)

    def truncate_log_soon(self) -> None:
        """After a deletion that must not outlive it on disk (the phones of acknowledged
        registrations): the next checkpoint empties the write-ahead log, whose older frames
        still hold the pages from before it. It makes writers wait for the checkpoint's few
        milliseconds, which is why it is done only when asked."""
        self._truncate.set()
        self._committed.set()

    def _checkpoint_loop(self) -> None:
        """Copy committed pages from the log into the database file, a burst at a time.

        ``PASSIVE``: it never waits for the writer or a reader, and never makes them wait; the
        writer starts the log again from its beginning once a checkpoint has copied all of it.
        """
        conn = connect(self.path)
        try:
            while True:
                self._committed.wait()
                if self._closing.wait(CHECKPOINT_DELAY_S):
                    return  # the last connection to close checkpoints what is left
                self._committed.clear()
                mode = "PASSIVE"
                if self._truncate.is_set():
                    self._truncate.clear()
                    mode = "TRUNCATE"
                try:
                    conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error:
                    log.exception("checkpoint failed; the next commit tries again")
                if self._closing.is_set():  # set after its delay: its wake-up was cleared above
                    return
        finally:
            conn.close()
