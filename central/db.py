"""The central server's database: one code path for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from central import schema
from shared.settings import ProgramSettings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def is_sqlite(url: str) -> bool:
    """Whether a database URL names SQLite."""
    return url.startswith("sqlite")


def make_engine(url: str, *, pool_size: int = 10, immediate: bool = True) -> AsyncEngine:
    """An async engine with the pragmas / pool that the ledger needs.

    On SQLite, ``immediate`` engines take the write lock when a transaction begins (writers);
    the others begin deferred (readers, which WAL lets run beside the writer).
    """
    if is_sqlite(url):
        # hide_parameters: a statement's error (logged with its traceback) names no phone.
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            hide_parameters=True,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below issue BEGIN, not the driver.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            # Writers take the lock at the start, so two never deadlock upgrading a read lock.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=30,
        hide_parameters=True,
    )


def _alembic_config(connection: sa.Connection) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration of this release."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None, "the migrations have one head"
    return head


def known_revisions() -> set[str]:
    """Every migration of this release."""
    return {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}


def current_revision(connection: sa.Connection) -> str | None:
    """The migration a database is at; None when it has no schema."""
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: sa.Connection) -> tuple[str | None, str | None]:
    before = current_revision(connection)
    command.upgrade(_alembic_config(connection), "head")
    return before, current_revision(connection)


async def migrate(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """Bring the schema to the newest migration (Alembic), and make the phone keys.

    Returns the revision before (None: there was no schema) and after.
    """
    async with engine.begin() as conn:
        revisions = await conn.run_sync(_upgrade)
    async with engine.begin() as conn:
        # ``phone_key``: the legacy HMAC key of protocol 1, which stores were sent (kept while
        # stores of protocol 1 remain). ``phone_hash_key``: the key of the slow phone hashes,
        # which never leaves this database but in the key file given to store installers
        # (``bonus-central phone-key export``). This database holds the phones themselves, so
        # the key adds nothing to protect here.
        for name in ("phone_key", "phone_hash_key"):
            key = await conn.scalar(sa.select(schema.meta.c.value).where(schema.meta.c.key == name))
            if key is None:
                await conn.execute(
                    schema.meta.insert().values(key=name, value=secrets.token_hex(32))
                )
    return revisions


class Database:
    """The engine and the discipline of writes: on SQLite one writer at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self.engine = make_engine(url)
        self.read_engine = make_engine(url, immediate=False) if self.sqlite else self.engine
        self._write_lock = asyncio.Lock()
        #: Store batches apply one at a time in a process.  A batch's transaction ends holding
        #: the feed row's lock, which every other batch then waits for; were several batches
        #: in flight in one event loop, the holder's next statement would wait behind the others'
        #: tens of milliseconds of Python, and so would every store.  Parallelism comes from
        #: server processes (``workers``) instead, each with its own core.
        self.batch_gate = asyncio.Lock()
        #: Parsed settings versions by number (a version never changes once issued).
        self.settings_cache: dict[int, ProgramSettings] = {}

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction (serialised in-process on SQLite)."""
        if self.sqlite:
            async with self._write_lock, self.engine.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only connection."""
        async with self.read_engine.connect() as conn:
            yield conn

    async def close(self) -> None:
        """Dispose of the pools."""
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


async def next_cursor(conn: AsyncConnection) -> int:
    """Advance the change feed's cursor inside the caller's transaction and return it."""
    value = await conn.scalar(
        schema.feed.update()
        .where(schema.feed.c.id == 1)
        .values(cursor=schema.feed.c.cursor + 1)
        .returning(schema.feed.c.cursor)
    )
    assert value is not None, "the feed row exists from the first migration"
    return int(value)


async def head_cursor(conn: AsyncConnection) -> int:
    """The newest cursor committed."""
    value = await conn.scalar(sa.select(schema.feed.c.cursor).where(schema.feed.c.id == 1))
    return int(value or 0)
