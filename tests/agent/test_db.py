"""The journal's database: grouped durable commits, and checkpoints off the commit path."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import db as agent_db
from agent import store
from agent.db import Database
from shared.journal import Verification

DELAY_S = 0.3


def insert(n: int) -> Callable[[sqlite3.Connection], int]:
    def _write(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO meta VALUES (?, ?)", (f"key-{n}", "x" * 500))
        return n

    return _write


def rows_in_database_file(path: Path) -> int:
    """Rows of ``meta`` in the database file alone, as if the write-ahead log were lost."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
            return 0  # not even the migrations are in the file yet
        return int(conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'key-%'").fetchone()[0])
    finally:
        conn.close()


def wal_bytes(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size


async def test_writes_are_committed_in_groups_and_answered_in_order(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.sqlite3")
    await db.open()
    try:
        results = await asyncio.gather(*(db.write(insert(n)) for n in range(200)))
        assert results == list(range(200))
        assert db.groups_committed < 200  # many callers, fewer fsyncs
        count = db.reader.execute("SELECT count(*) FROM meta WHERE key LIKE 'key-%'").fetchone()
        assert count[0] == 200
    finally:
        await db.close()


async def test_a_refused_write_rolls_back_alone(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.sqlite3")
    await db.open()

    def refused(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta VALUES ('half', 'done')")
        raise ValueError("refused")

    try:
        outcomes = await asyncio.gather(
            db.write(insert(1)),
            db.write(refused),
            db.write(insert(2)),
            return_exceptions=True,
        )
        assert outcomes[0] == 1
        assert outcomes[2] == 2
        assert isinstance(outcomes[1], ValueError)
        keys = {row[0] for row in db.reader.execute("SELECT key FROM meta")}
        assert {"key-1", "key-2"} <= keys
        assert "half" not in keys
    finally:
        await db.close()


async def test_the_checkpointer_copies_commits_into_the_database_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_db, "CHECKPOINT_DELAY_S", DELAY_S)
    path = tmp_path / "agent.sqlite3"
    db = Database(path)
    await db.open()
    try:
        await asyncio.gather(*(db.write(insert(n)) for n in range(50)))
        # Committed, but no commit checkpoints: the rows are still only in the log...
        assert db.checkpoints == 0
        assert rows_in_database_file(path) == 0
        # ...until the checkpointer has run, shortly after.
        for _ in range(100):
            if rows_in_database_file(path) == 50:
                break
            await asyncio.sleep(0.05)
        assert rows_in_database_file(path) == 50
        assert db.checkpoints >= 1
        # The log then starts again from its beginning instead of growing.
        size = wal_bytes(path)
        for round_ in range(5):
            await asyncio.gather(*(db.write(insert(1000 * (round_ + 1) + n)) for n in range(50)))
            await asyncio.sleep(2 * DELAY_S)
        assert wal_bytes(path) <= 2 * size
        assert rows_in_database_file(path) == 300
    finally:
        await db.close()


async def test_a_cards_pending_holds_are_found_by_index(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.sqlite3")
    await db.open()
    try:
        plan = db.reader.execute(
            "EXPLAIN QUERY PLAN SELECT hold_id FROM holds WHERE card = ? AND seq > ?", ("c", 0)
        ).fetchall()
        assert any("USING INDEX holds_card" in str(row[-1]) for row in plan), plan
    finally:
        await db.close()


async def test_the_log_stays_bounded_under_a_steady_stream_of_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checkpointer never finds a moment without a commit beside it; the writer's own
    # checkpoint at WRITER_CHECKPOINT_PAGES lets the log start again from its beginning.
    monkeypatch.setattr(agent_db, "WRITER_CHECKPOINT_PAGES", 200)
    path = tmp_path / "agent.sqlite3"
    db = Database(path)
    await db.open()
    largest = 0
    written = 0
    deadline = asyncio.get_running_loop().time() + 1.0

    async def writer() -> None:
        nonlocal largest, written
        while asyncio.get_running_loop().time() < deadline:
            written += 1
            await db.write(insert(written))
            largest = max(largest, wal_bytes(path))

    try:
        await asyncio.gather(*(writer() for _ in range(8)))
    finally:
        await db.close()
    assert written > 1000
    assert largest < 4 * 2**20, f"the log grew to {largest} bytes over {written} writes"


async def test_pending_entries_of_many_cards_come_from_one_indexed_statement(
    tmp_path: Path,
) -> None:
    """Any number of cards goes as one parameter (a statement per count of cards would fill the
    connection's statement cache with large statements), and the card index still serves it."""
    db = Database(tmp_path / "agent.sqlite3")
    await db.open()
    cards = [f"C{index:04d}" for index in range(1200)]

    def record(conn: sqlite3.Connection) -> None:
        for index, card in enumerate(cards):
            store.append_entry(
                conn,
                op_id=f"op-{index}",
                idem_key=f"V-{index}",
                request_hash="h",
                operation=Verification(card=card),
                response={},
                created_at=datetime.now(UTC),
            )

    try:
        await db.write(record)
        conn = db.reader
        assert [e.card for e in store.pending_entries_for(conn, cards[5:6], 0)] == ["C0005"]
        assert [e.seq for e in store.pending_entries_for(conn, cards, 0)] == list(range(1, 1201))
        assert [e.card for e in store.pending_entries_for(conn, cards, 1199)] == ["C1199"]
        assert store.pending_entries_for(conn, [], 0) == []
        plan = conn.execute("EXPLAIN QUERY PLAN " + store.PENDING_FOR_CARDS, (0, "[]")).fetchall()
        assert any("USING INDEX journal_card" in str(row[-1]) for row in plan), plan
    finally:
        await db.close()
