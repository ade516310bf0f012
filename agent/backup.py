"""Backing up and restoring the agent's database (``bonus-agent backup`` / ``restore``).

A backup is taken with SQLite's online backup API in one step, which reads one consistent
snapshot while the agent goes on serving (WAL lets a reader and the writer run side by side), and
is written as one self-contained file (rollback journal mode: no ``-wal`` beside it to forget).

A restore replaces the database while the agent is stopped: the running agent holds an exclusive
lock on ``agent.sqlite3.lock`` (``service_lock``), which ``restore`` takes too, so neither runs
while the other does.  The backup is copied and checked beside the database first; the old
database's log is folded into it (a checkpoint) so that nothing of it is left beside the new
file, and only then does one rename put the new file in place.  A crash at any moment leaves the
old database or the new one, never a mixture: a ``-wal`` of the old database left beside the new
file would be replayed into it.

After a restore the agent reconciles with the central server by itself on its first round (see
``Syncer._match_journal``): it renumbers the operations it has not sent after those the central
server holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from agent import store
from agent.db import BUSY_TIMEOUT_MS

#: Files SQLite keeps beside a database in WAL mode.
SIDE_FILES = ("-wal", "-shm")


class BackupError(Exception):
    """A backup or a restore that cannot be done; nothing was changed."""


class ServiceRunning(BackupError):
    """The agent runs on this database (it holds the lock)."""


def lock_path(db_path: Path) -> Path:
    """The file whose lock the running agent holds."""
    return db_path.with_name(db_path.name + ".lock")


@contextlib.contextmanager
def service_lock(db_path: Path) -> Iterator[None]:
    """Hold the database's exclusive lock, or raise ``ServiceRunning`` at once.

    An ``flock``: the kernel lets go of it when the holder exits, however it exits, so a killed
    agent never leaves a stale lock behind.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(db_path), os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServiceRunning(
                f"bonus-agent is running on {db_path} (it holds {lock_path(db_path)}): "
                "stop it first (systemctl stop bonus-agent)"
            ) from None
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Summary:
    """What a database file holds, as a backup or a restore reports it."""

    size_bytes: int
    last_seq: int
    acked_seq: int
    cards: int

    def describe(self) -> str:
        """One line for the operator."""
        return (
            f"{self.size_bytes} bytes, journal up to seq {self.last_seq}, acknowledged by the central "
            f"server up to seq {self.acked_seq}, {self.cards} cards"
        )


def backup(db_path: Path, target: Path) -> Summary:
    """Write a consistent copy of the database to ``target`` (replaced atomically if it
    exists), while the agent may be serving."""
    if not db_path.is_file():
        raise BackupError(f"no agent database at {db_path}")
    target = target.absolute()
    if target == db_path.absolute():
        raise BackupError("the backup must go to another file than the database")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    _remove(temporary)
    try:
        # ``mode=rw``: never create an empty database where there was none.
        with closing(_open(db_path, "rw")) as source, closing(sqlite3.connect(temporary)) as copy:
            source.execute("PRAGMA query_only=ON")
            # One step (pages=-1): the whole copy from one read transaction.  In steps, every
            # commit of the running agent would start the copy again.
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            _check(copy, target)
        summary = _summary(temporary)
        _fsync(temporary)
        os.replace(temporary, target)
        _fsync(target.parent)
    except BaseException:
        _remove(temporary)
        raise
    return summary


def restore(source: Path, db_path: Path) -> tuple[Summary, Path | None]:
    """Replace the database with the backup at ``source``; the agent must be stopped.

    Returns what the restored database holds and where the old one is kept (None when there was
    none).
    """
    if not source.is_file():
        raise BackupError(f"no backup at {source}")
    with service_lock(db_path):
        staged = db_path.with_name(db_path.name + ".restoring")
        for path in _with_side_files(staged):
            _remove(path)
        try:
            _stage(source, staged)
            summary = _summary(staged)
            _own_like(staged, db_path if db_path.exists() else db_path.parent)
            _fsync(staged)
            kept = _set_aside(db_path)
            # The one step that switches: before it the old database, after it the new one.
            os.replace(staged, db_path)
            _fsync(db_path.parent)
            for path in _with_side_files(staged)[1:]:
                _remove(path)
        except BaseException:
            for path in _with_side_files(staged):
                _remove(path)
            raise
    return summary, kept


def _stage(source: Path, staged: Path) -> None:
    """Copy the backup (with its log, if it has one) beside the database and check it; the
    source itself is only read."""
    shutil.copyfile(source, staged)
    source_wal = source.with_name(source.name + "-wal")
    if source_wal.is_file():
        # A plain copy of a live database: its last commits may still be in its log.
        shutil.copyfile(source_wal, staged.with_name(staged.name + "-wal"))
    with closing(_open(staged, "rw")) as conn:
        _check(conn, source)
        # Fold a log in and leave one file: nothing beside the new database may outlive the
        # rename below.
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()
        if mode is None or str(mode[0]).lower() != "delete":
            raise BackupError(f"could not prepare {source} (journal mode {mode})")


def _set_aside(db_path: Path) -> Path | None:
    """Keep the old database as ``agent.sqlite3.before-restore`` and leave no log of it behind.

    A checkpoint first copies the old log into the old file (the old database stays whole if
    the restore stops here); the kept copy is a second name of that file, so keeping it costs no
    space and no time.  Only a database SQLite cannot open at all has its log moved aside
    unread, with the kept copy.
    """
    if not db_path.exists():
        for path in _with_side_files(db_path)[1:]:
            _remove(path)
        return None
    kept = db_path.with_name(db_path.name + ".before-restore")
    try:
        with closing(_open(db_path, "rw")) as conn:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.DatabaseError:
        # A database SQLite cannot read (perhaps why it is restored): its log goes with it.
        busy = None
    if busy is not None and busy[0]:
        # Another program reads it (a backup?): its log cannot be folded in now, and moving
        # the log away would take the last commits out of the old database.
        raise BackupError(f"{db_path} is in use by another program: try again when it is done")
    for path in _with_side_files(kept):
        _remove(path)
    os.link(db_path, kept)
    wal = db_path.with_name(db_path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        os.replace(wal, kept.with_name(kept.name + "-wal"))
    for path in _with_side_files(db_path)[1:]:
        _remove(path)
    _fsync(db_path.parent)
    return kept


def _open(path: Path, mode: str) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def _check(conn: sqlite3.Connection, named: Path) -> None:
    """An intact agent database, or ``BackupError``."""
    try:
        result = conn.execute("PRAGMA quick_check").fetchall()
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{named} is not a readable SQLite database: {exc}") from None
    if result != [("ok",)]:
        raise BackupError(f"{named} is damaged: {result[:5]}")
    if not {"journal", "meta", "cards"} <= tables:
        raise BackupError(f"{named} is not an agent database (tables: {sorted(tables)})")


def _summary(path: Path) -> Summary:
    with closing(_open(path, "ro")) as conn:
        return Summary(
            size_bytes=path.stat().st_size,
            last_seq=store.last_seq(conn),
            acked_seq=int(store.get_meta(conn, "acked_seq") or 0),
            cards=store.count_cards(conn),
        )


def _own_like(path: Path, model: Path) -> None:
    """Give the restored file the owner of the database it replaces, so that the agent's user
    can write it when root ran the restore."""
    info = model.stat()
    if os.geteuid() == 0:
        os.chown(path, info.st_uid, info.st_gid)
    os.chmod(path, 0o640)


def _with_side_files(path: Path) -> list[Path]:
    return [path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILES)]


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
