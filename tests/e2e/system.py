"""A chain under test: one central server process, store agent processes, their tills, and a
direct look into the central ledger (what the office would see)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

from central import schema
from central.campaigns import run_campaign
from central.db import Database, is_sqlite, migrate, next_cursor
from central.invariants import InvariantReport, check_invariants
from central.phones import load_phone_key
from central.program import current_settings, set_settings
from central.selection import CardFilter, Selection
from central.stores import add_store
from shared.lots import local_date
from shared.settings import DEFAULT_SETTINGS
from tests.conftest import pg_tool
from tests.e2e.processes import AgentProcess, CentralProcess
from tests.e2e.till import Till
from tests.phonekeys import TEST_PHONE_HASH, export_key_file


@asynccontextmanager
async def central_db(url: str) -> AsyncIterator[Database]:
    """The central database, opened in the test's process."""
    db = Database(url)
    try:
        yield db
    finally:
        await db.close()


async def prepare_central(url: str, store_ids: list[str], **settings: Any) -> dict[str, str]:
    """Migrate, register the stores (their tokens by id) and set program settings."""
    now = datetime.now(UTC)
    async with central_db(url) as db:
        await migrate(db.engine)
        tokens = {}
        async with db.write() as conn:
            for store_id in store_ids:
                tokens[store_id] = await add_store(conn, store_id, f"Аптека {store_id}", now)
            if settings:
                await set_settings(conn, settings, now, by="test")
    return tokens


DEFAULT_ZONE = DEFAULT_SETTINGS.zone


async def ledger_balances(url: str) -> dict[str, int]:
    """Each card's central balance in kopecks: unexpired lot remainders − debt."""
    async with central_db(url) as db, db.read() as conn:
        settings, _ = await current_settings(conn)
        today = local_date(datetime.now(UTC), settings.zone)
        lots = (
            await conn.execute(
                sa.select(schema.lots.c.card, sa.func.sum(schema.lots.c.remaining_kop))
                .where(
                    sa.or_(schema.lots.c.expires_on.is_(None), schema.lots.c.expires_on >= today)
                )
                .group_by(schema.lots.c.card)
            )
        ).all()
        remainders = {card: int(total) for card, total in lots}
        cards = (
            await conn.execute(sa.select(schema.cards.c.number, schema.cards.c.debt_kop))
        ).all()
        return {number: remainders.get(number, 0) - int(debt) for number, debt in cards}


async def invariants(url: str) -> InvariantReport:
    """The invariant checker's report over the central ledger."""
    async with central_db(url) as db, db.read() as conn:
        return await check_invariants(conn)


async def query(url: str, statement: Any) -> list[Any]:
    """Rows of one read query on the central ledger."""
    async with central_db(url) as db, db.read() as conn:
        return list((await conn.execute(statement)).all())


async def add_cards(url: str, phones: list[str], prefix: str = "77") -> list[str]:
    """Cards the central server already holds (as if migrated from an earlier system), all at
    one cursor of the change feed; their numbers."""
    now = datetime.now(UTC)
    async with central_db(url) as db:
        key = await load_phone_key(db, TEST_PHONE_HASH)
        numbers = [f"{prefix}{index:010d}" for index in range(len(phones))]
        async with db.write() as conn:
            cursor = await next_cursor(conn)
            await conn.execute(
                schema.cards.insert(),
                [
                    {
                        "number": number,
                        "status": "active",
                        "phone": phone,
                        "phone_hash": key.hash(phone),
                        "verified": True,
                        "cursor": cursor,
                        "created_at": now,
                    }
                    for number, phone in zip(numbers, phones, strict=True)
                ],
            )
    return numbers


async def campaign(url: str, campaign_id: str, amount_kop: int) -> dict[str, Any]:
    """An office campaign: ``amount_kop`` non-expiring to every active card, one feed cursor."""
    now = datetime.now(UTC)
    async with central_db(url) as db:
        return await run_campaign(
            db,
            campaign_id=campaign_id,
            amount_kop=amount_kop,
            expires_on=None,
            note="тест",
            selection=Selection(filter=CardFilter(status="active")),
            today=local_date(now, DEFAULT_ZONE),
            now=now,
            login=None,
        )


def _sqlite_files(url: str) -> list[Path]:
    database = sa.engine.make_url(url).database
    assert database, url
    path = Path(database)
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _pg_args(url: str) -> tuple[list[str], str]:
    """The connection options of PostgreSQL's programs for a database URL, and its name."""
    parsed = sa.engine.make_url(url)
    assert parsed.database, url
    host, port = str(parsed.query["host"]), str(parsed.query["port"])
    return ["-h", host, "-p", port, "-U", parsed.username or "postgres"], parsed.database


async def _run(argv: list[str]) -> None:
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, (argv, done.stdout, done.stderr)


async def backup_central(url: str, path: Path) -> None:
    """Back up the central database as its runbook says (the central server stopped): a copy of
    the SQLite file, or ``pg_dump -Fc``."""
    if is_sqlite(url):
        files = _sqlite_files(url)
        shutil.copyfile(files[0], path)
        if files[1].exists():
            shutil.copyfile(files[1], path.with_name(path.name + "-wal"))
        return
    options, name = _pg_args(url)
    await _run([pg_tool("pg_dump"), *options, "-Fc", "-f", str(path), name])


async def restore_central(url: str, path: Path) -> None:
    """Put the central database back as it was at ``backup_central`` (the server stopped): the
    file copied back without the current log, or ``dropdb``/``createdb``/``pg_restore``."""
    if is_sqlite(url):
        files = _sqlite_files(url)
        for side in files[1:]:
            side.unlink(missing_ok=True)
        shutil.copyfile(path, files[0])
        backup_wal = path.with_name(path.name + "-wal")
        if backup_wal.exists():
            shutil.copyfile(backup_wal, files[1])
        return
    options, name = _pg_args(url)
    await _run([pg_tool("dropdb"), *options, name])
    await _run([pg_tool("createdb"), *options, name])
    await _run([pg_tool("pg_restore"), *options, "--no-owner", "-d", name, str(path)])


class System:
    """One central server and its stores, all real processes; stopped by ``close``."""

    def __init__(self, work_dir: Path, database_url: str) -> None:
        self.work_dir = work_dir
        self.database_url = database_url
        self.central = CentralProcess(work_dir / "central", database_url)
        self.tokens: dict[str, str] = {}
        self.agents: dict[str, AgentProcess] = {}
        self.tills: dict[str, Till] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The tills' HTTP session."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def prepare(self, store_ids: list[str], **settings: Any) -> None:
        """The central database with these stores registered (the central server not started)."""
        self.tokens.update(await prepare_central(self.database_url, store_ids, **settings))
        # What a store's installer gets with its token (bonus-central phone-key export).
        await export_key_file(self.database_url, self.phone_key_file)

    @property
    def phone_key_file(self) -> Path:
        """The chain's phone key file, as every store of the chain has it."""
        return self.work_dir / "phone-key"

    def agent(self, store_id: str, central_url: str | None = None, **env: str) -> AgentProcess:
        """The store's agent process (created on first use, not started); ``env`` adds
        ``BONUS_AGENT_*`` settings."""
        if store_id not in self.agents:
            agent = AgentProcess(
                self.work_dir / store_id,
                store_id,
                central_url or self.central.url,
                self.tokens[store_id],
                {
                    "BONUS_AGENT_PHONE_KEY_FILE": str(self.phone_key_file),
                    **{f"BONUS_AGENT_{name.upper()}": value for name, value in env.items()},
                },
            )
            self.agents[store_id] = agent
            self.tills[store_id] = Till(self.session, agent.url, agent.messages_path, name=store_id)
        return self.agents[store_id]

    def till(self, store_id: str) -> Till:
        """The till of a store."""
        return self.tills[store_id]

    async def start_agents(self, *store_ids: str) -> None:
        """Start agents side by side."""
        agents = [self.agent(store_id) for store_id in store_ids]
        for agent in agents:
            agent.spawn()
        await asyncio.gather(*(agent.wait_ready() for agent in agents))

    async def wait_synced(self, *store_ids: str, since: datetime | None = None) -> None:
        """Every store has uploaded everything and completed a sync after ``since`` (now)."""
        moment = since or datetime.now(UTC)
        await asyncio.gather(*(self.till(s).wait_synced(moment) for s in store_ids))

    async def wait_acked(self, *store_ids: str) -> None:
        """Every operation of these stores is in the central ledger."""
        await asyncio.gather(*(self.till(s).wait_acked() for s in store_ids))

    async def settle(self, *store_ids: str) -> None:
        """Every store's operations are in the central ledger, and every store has pulled since:
        each replica shows what the others did."""
        await self.wait_acked(*store_ids)
        await self.wait_synced(*store_ids)

    async def check_cli(self) -> None:
        """``bonus-central check`` passes."""
        done = await self.central.cli("check")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip().endswith("ok"), done.stdout

    async def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and close the session."""
        try:
            for process in [*self.agents.values(), self.central]:
                try:
                    await process.stop()
                finally:
                    process.kill_now()
        finally:
            if self._session is not None:
                await self._session.close()

    def logs(self) -> str:
        """The last lines of every process's output, for a failure's report."""
        parts = []
        for process in [self.central, *self.agents.values()]:
            parts.append(f"--- {process.log_path.name}\n{process.log_tail(30)}")
        return "\n".join(parts)
