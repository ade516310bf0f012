"""What the central benchmarks share: processes, a throw-away PostgreSQL, bulk seeding, and a
store simulator that builds journal operations exactly as the agent records them.

Not a benchmark by itself (``central_ingest.py``, ``central_bootstrap.py`` and
``central_busy_hour.py`` are).  The simulator follows ``agent/operations.py``: a sale's payload is
computed with the same pure core (``shared.receipts.calculate``, ``shared.lots``) from the card's
wallet as the store sees it, so the central server receives what a real store would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from uuid6 import uuid7

from shared.cards import luhn_check_digit
from shared.effects import (
    SoldReceipt,
    receipt_figures,
    recorded_lines,
    return_effect,
    return_plan,
    sale_effect,
    sold_line_rows,
    sold_lines,
)
from shared.journal import (
    Consents,
    LotAmount,
    Operation,
    Profile,
    Registration,
    Return,
    ReturnLine,
    Sale,
    accrual_lot_id,
)
from shared.lots import (
    Lot,
    LotSource,
    Wallet,
    balance,
    local_date,
    purchase_expiry,
)
from shared.phones import PhoneHashParams, PhoneKey, phone_last4
from shared.receipts import Line, max_redeem
from shared.settings import ProgramSettings

#: The phone hash cost of the chain in these benchmarks: argon2's least (microseconds), so that
#: seeding a million cards takes seconds. ``bench/phone_hash.py`` measures the production cost,
#: and ``central_ingest.py`` (at the production cost unless ``--phone-hash bench``) its share
#: of an upload.
BENCH_PHONE_HASH = PhoneHashParams(memory_kib=8, time_cost=1)

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
MACHINE = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"


def load_text() -> str:
    """The machine's load averages: other work on a small machine moves every figure."""
    one, five, _ = os.getloadavg()
    warning = " (the machine is busy with other work: figures are pessimistic)" if one > 0.7 else ""
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min){warning}"


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


def _clean_env(prefix: str) -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(prefix)
        and name not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    }


def _answers(url: str) -> bool:
    """Whether a server answers ``url`` at all (an error status is an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False  # not listening yet


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    what: str,
    log: Path,
    timeout_s: float = READY_TIMEOUT_S,
) -> None:
    """Wait until ``url`` answers (any status) or the process dies."""
    deadline = time.perf_counter() + timeout_s
    while not _answers(url):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited while starting; see {log}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} did not answer in time; see {log}")
        time.sleep(0.02)


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, work_dir: Path) -> None:
        self.name = name
        self.work_dir = work_dir
        self.log_path = work_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self, argv: list[str], env: dict[str, str]) -> None:
        assert self.proc is None
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            cwd=self.work_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def memory_kib(self) -> dict[str, int]:
        """The process's memory, summed with its children's (a supervisor's workers)."""
        total = memory_kib(self.pid)
        for child in child_pids(self.pid):
            with contextlib.suppress(OSError):
                for key, value in memory_kib(child).items():
                    total[key] = total.get(key, 0) + value
        return total


class CentralServer(Process):
    """``bonus-central serve`` on a database URL."""

    def __init__(
        self,
        work_dir: Path,
        database_url: str,
        log_level: str = "WARNING",
        *,
        preamble: str | None = None,
        workers: int = 1,
    ) -> None:
        super().__init__("central", work_dir)
        self.database_url = database_url
        self.workers = workers
        self.log_level = log_level
        self.port = free_port()
        #: The cost of the phone hashes the server makes (registrations in uploads).
        self.phone_hash = BENCH_PHONE_HASH
        #: Python run in the server process before ``bonus-central serve`` (experiments only).
        self.preamble = preamble

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = _clean_env("BONUS_CENTRAL_")
        env.update(
            BONUS_CENTRAL_DATABASE_URL=self.database_url,
            BONUS_CENTRAL_LISTEN_HOST="127.0.0.1",
            BONUS_CENTRAL_LISTEN_PORT=str(self.port),
            BONUS_CENTRAL_LOG_LEVEL=self.log_level,
            BONUS_CENTRAL_WORKERS=str(self.workers),
            BONUS_CENTRAL_PHONE_HASH_MEMORY_KIB=str(self.phone_hash.memory_kib),
            BONUS_CENTRAL_PHONE_HASH_TIME_COST=str(self.phone_hash.time_cost),
        )
        return env

    def start(self) -> float:
        """Start and wait for ``/health``; returns the seconds it took."""
        started = time.perf_counter()
        if self.preamble is None:
            argv = [sys.executable, "-m", "central.cli", "serve"]
        else:
            argv = [
                sys.executable,
                "-c",
                self.preamble + "\nimport sys\nfrom central.cli import main\n"
                "sys.exit(main(['serve']))",
            ]
        self.spawn(argv, self.env())
        try:
            wait_http(self.base_url + "/health", self.proc, "central server", self.log_path)  # type: ignore[arg-type]
        except BaseException:
            self.stop()
            raise
        return time.perf_counter() - started

    def check(self) -> tuple[bool, str]:
        """``bonus-central check`` (the ledger's invariants): (ok, its output)."""
        result = subprocess.run(
            [sys.executable, "-m", "central.cli", "check"],
            cwd=self.work_dir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        return result.returncode == 0, (result.stdout + result.stderr).strip()


class AgentServer(Process):
    """``bonus-agent serve`` syncing with a central server."""

    def __init__(
        self,
        work_dir: Path,
        *,
        store_id: str,
        central_url: str,
        token: str,
        log_level: str = "INFO",
        extra_env: dict[str, str] | None = None,
        phone_key: PhoneKey | None = None,
    ) -> None:
        super().__init__("agent", work_dir)
        #: The chain's key file, as the store's installer puts it beside the agent.
        self.phone_key = phone_key
        self.data_dir = work_dir / "agent-data"
        self.port = free_port()
        self.store_id = store_id
        self.central_url = central_url
        self.token = token
        self.log_level = log_level
        self.extra_env = extra_env or {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> None:
        env = _clean_env("BONUS_AGENT_")
        env.update(
            BONUS_AGENT_STORE_ID=self.store_id,
            BONUS_AGENT_DATA_DIR=str(self.data_dir),
            BONUS_AGENT_LISTEN_HOST="127.0.0.1",
            BONUS_AGENT_LISTEN_PORT=str(self.port),
            BONUS_AGENT_CENTRAL_URL=self.central_url,
            BONUS_AGENT_CENTRAL_TOKEN=self.token,
            BONUS_AGENT_PROVIDER__KIND="file",
            BONUS_AGENT_PROVIDER__FILE_PATH=str(self.work_dir / "messages.jsonl"),
            BONUS_AGENT_LOG_LEVEL=self.log_level,
        )
        if self.phone_key is not None:
            key_file = self.work_dir / "phone-key"
            key_file.write_text(self.phone_key.to_text(), encoding="utf-8")
            key_file.chmod(0o600)
            env["BONUS_AGENT_PHONE_KEY_FILE"] = str(key_file)
        env.update(self.extra_env)
        self.spawn([sys.executable, "-m", "agent.cli", "serve"], env)
        if wait:
            try:
                wait_http(self.base_url + "/pos/v1/status", self.proc, "agent", self.log_path)  # type: ignore[arg-type]
            except BaseException:
                self.stop()
                raise

    def status(self, timeout_s: float = 10.0) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + "/pos/v1/status", timeout=timeout_s) as answer:
            return dict(json.load(answer))


# --- PostgreSQL --------------------------------------------------------------------------------


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Postgres:
    """A throw-away PostgreSQL cluster on a Unix socket in ``base_dir`` (fsync left on)."""

    def __init__(self, base_dir: Path, *, stat_statements: bool = False) -> None:
        self.dir = base_dir
        self.port = free_port()
        self.started = False
        self.stat_statements = stat_statements

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for parent in (self.dir.parent,):
                parent.chmod(0o755)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        subprocess.run(
            _as_postgres(
                [
                    "initdb",
                    "-D",
                    str(self.dir / "data"),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            _as_postgres(
                [
                    "pg_ctl",
                    "-D",
                    str(self.dir / "data"),
                    "-o",
                    f"-k {self.dir} -p {self.port} -c listen_addresses=''"
                    + (
                        " -c shared_preload_libraries=pg_stat_statements"
                        " -c pg_stat_statements.track=all"
                        if self.stat_statements
                        else ""
                    ),
                    "-l",
                    str(self.dir / "log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.started = True

    def url(self, name: str) -> str:
        return f"postgresql+asyncpg://postgres@/{name}?host={self.dir}&port={self.port}"

    def create_database(self, name: str) -> str:
        async def create() -> None:
            import asyncpg

            conn = await asyncpg.connect(
                host=str(self.dir), port=self.port, user="postgres", database="postgres"
            )
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
            if self.stat_statements:
                conn = await asyncpg.connect(
                    host=str(self.dir), port=self.port, user="postgres", database=name
                )
                try:
                    await conn.execute("CREATE EXTENSION pg_stat_statements")
                finally:
                    await conn.close()

        asyncio.run(create())
        return self.url(name)

    def setting(self, name: str) -> str:
        async def show() -> str:
            import asyncpg

            conn = await asyncpg.connect(
                host=str(self.dir), port=self.port, user="postgres", database="postgres"
            )
            try:
                return str(await conn.fetchval(f"SHOW {name}"))
            finally:
                await conn.close()

        return asyncio.run(show())

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                _as_postgres(["pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"]),
                check=False,
                capture_output=True,
            )
            self.started = False


def asyncpg_kwargs(url: str) -> dict[str, Any]:
    """asyncpg.connect arguments for a ``postgresql+asyncpg://`` SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    kwargs: dict[str, Any] = {
        "user": parsed.username or "postgres",
        "database": parsed.database,
    }
    if parsed.password:
        kwargs["password"] = parsed.password
    host = parsed.query.get("host") or parsed.host
    port = parsed.query.get("port") or parsed.port
    if host:
        kwargs["host"] = host if isinstance(host, str) else host[0]
    if port:
        kwargs["port"] = int(port if isinstance(port, (str, int)) else port[0])
    return kwargs


def sqlite_path(url: str) -> Path:
    prefix = "sqlite+aiosqlite:///"
    assert url.startswith(prefix), url
    return Path(url[len(prefix) :])


@contextlib.contextmanager
def database(
    kind: str, work_dir: Path, pg_url: str | None, name: str, *, stat_statements: bool = False
) -> Iterator[str]:
    """A fresh empty database of this kind; yields its SQLAlchemy URL."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{work_dir / (name + '.sqlite3')}"
        return
    if pg_url is not None:
        yield pg_url
        return
    cluster = Postgres(work_dir / "pg", stat_statements=stat_statements)
    cluster.start()
    try:
        url = cluster.create_database(name)
        print(
            f"  PostgreSQL {cluster.setting('server_version')} in {cluster.dir}: "
            f"fsync={cluster.setting('fsync')}, synchronous_commit="
            f"{cluster.setting('synchronous_commit')}, shared_buffers="
            f"{cluster.setting('shared_buffers')}"
        )
        yield url
    finally:
        cluster.stop()


# --- the central database, prepared in bulk ----------------------------------------------------


async def prepare_central(
    url: str, store_ids: list[str], phone_hash: PhoneHashParams = BENCH_PHONE_HASH
) -> tuple[PhoneKey, dict[str, str]]:
    """Migrate, register the stores; returns (the chain's phone key, token by store)."""
    from central.db import Database, migrate
    from central.phones import load_phone_key
    from central.stores import add_store

    if url.startswith("sqlite"):
        sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
    db = Database(url)
    try:
        await migrate(db.engine)
        tokens = {}
        now = datetime.now(UTC)
        async with db.write() as conn:
            for store_id in store_ids:
                tokens[store_id] = await add_store(conn, store_id, f"Аптека {store_id}", now)
        return await load_phone_key(db, phone_hash), tokens
    finally:
        await db.close()


async def set_central_settings(url: str, changes: dict[str, Any]) -> None:
    """A new program settings version (as ``bonus-central settings set`` would)."""
    from central.db import Database
    from central.program import set_settings

    db = Database(url)
    try:
        async with db.write() as conn:
            await set_settings(conn, changes, datetime.now(UTC), by="bench")
    finally:
        await db.close()


def card_number(index: int) -> str:
    """A valid virtual card number (``99`` + ten digits + Luhn), one per index."""
    body = f"99{index:010d}"
    return body + luhn_check_digit(body)


def phone_of(index: int) -> str:
    """A distinct mobile number (ten digits) per index."""
    return f"9{index:09d}"


@dataclass
class SeedCard:
    number: str
    phone: str
    lots: list[Lot]


def seed_cards(first: int, count: int, today: date, rng: random.Random) -> Iterator[SeedCard]:
    """Cards with 1 to 3 purchase lots each, some partly or wholly spent, none expired."""
    for index in range(first, first + count):
        number = card_number(index)
        lots = []
        for k in range(rng.randint(1, 3)):
            amount = rng.randint(500, 20_000)
            spent = rng.choice((0, 0, amount // 3, amount))
            created = today - timedelta(days=rng.randint(0, 150))
            lots.append(
                Lot(
                    lot_id=f"seed-{number}-{k}",
                    amount_kop=amount,
                    remaining_kop=amount - spent,
                    created_on=created,
                    expires_on=purchase_expiry(created, 6),
                    active_from=None,
                    source=LotSource.PURCHASE,
                    source_ref=f"seed-receipt-{number}-{k}",
                )
            )
        yield SeedCard(number, phone_of(index), lots)


def _seed_rows(
    cards: list[SeedCard], key: PhoneKey, now: datetime
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    card_rows = []
    lot_rows = []
    tx_rows = []
    for card in cards:
        card_rows.append((card.number, card.phone, key.hash(card.phone), now))
        for lot in card.lots:
            lot_rows.append(
                (
                    lot.lot_id,
                    card.number,
                    lot.amount_kop,
                    lot.remaining_kop,
                    lot.created_on,
                    lot.expires_on,
                    str(lot.source),
                    lot.source_ref,
                )
            )
            # The journal must explain every remainder, or ``bonus-central check`` complains.
            tx_rows.append(
                (card.number, "accrual", lot.amount_kop, [[lot.lot_id, lot.amount_kop]], now)
            )
            spent = lot.amount_kop - lot.remaining_kop
            if spent:
                tx_rows.append((card.number, "redemption", -spent, [[lot.lot_id, spent]], now))
    return card_rows, lot_rows, tx_rows


SEED_CHUNK = 20_000


def seed_central(
    url: str, cards: Iterator[SeedCard], key: PhoneKey, *, sqlite_analyze: bool = False
) -> tuple[int, int, int]:
    """Insert cards, their lots and the journal rows that explain them, in bulk.

    Straight SQL (sqlite3 ``executemany`` or asyncpg ``COPY``): seeding is preparation, not
    the measure.  Returns the numbers of (cards, lots, transactions).

    SQLite gets no ``ANALYZE`` unless asked: the central server never runs it, and its
    statistics change query plans (with them, the snapshot's lots query scans the whole
    table for every page).  PostgreSQL is vacuumed and analysed, as autovacuum would do.
    """
    now = datetime.now(UTC)
    if url.startswith("sqlite"):
        return _seed_sqlite(sqlite_path(url), cards, key, now, sqlite_analyze)
    return asyncio.run(_seed_postgres(url, cards, key, now))


def _sqlite_time(moment: datetime) -> str:
    # SQLAlchemy's SQLite DateTime storage format (naive UTC).
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _seed_sqlite(
    path: Path, cards: Iterator[SeedCard], key: PhoneKey, now: datetime, analyze: bool
) -> tuple[int, int, int]:
    conn = sqlite3.connect(path, isolation_level=None)
    totals = [0, 0, 0]
    stamp = _sqlite_time(now)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        while True:
            chunk = [card for _, card in zip(range(SEED_CHUNK), cards, strict=False)]
            if not chunk:
                break
            card_rows, lot_rows, tx_rows = _seed_rows(chunk, key, now)
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO cards (number, status, phone, phone_hash, virtual, verified, debt_kop, "
                "cursor, created_at) VALUES (?, 'active', ?, ?, 0, 0, 0, 1, ?)",
                [(n, p, h, stamp) for n, p, h, _ in card_rows],
            )
            conn.executemany(
                "INSERT INTO lots (lot_id, card, amount_kop, remaining_kop, created_on, expires_on, "
                "source, source_ref) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (i, c, a, r, co.isoformat(), eo.isoformat() if eo else None, s, ref)
                    for i, c, a, r, co, eo, s, ref in lot_rows
                ],
            )
            conn.executemany(
                "INSERT INTO transactions (card, kind, amount_kop, lots, received_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(c, k, a, json.dumps(lots), stamp) for c, k, a, lots, _ in tx_rows],
            )
            conn.execute("UPDATE feed SET cursor = max(cursor, 1) WHERE id = 1")
            conn.execute("COMMIT")
            totals[0] += len(card_rows)
            totals[1] += len(lot_rows)
            totals[2] += len(tx_rows)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if analyze:
            conn.execute("ANALYZE")
    finally:
        conn.close()
    return totals[0], totals[1], totals[2]


async def _seed_postgres(
    url: str, cards: Iterator[SeedCard], key: PhoneKey, now: datetime
) -> tuple[int, int, int]:
    import asyncpg

    conn = await asyncpg.connect(**asyncpg_kwargs(url))
    totals = [0, 0, 0]
    try:
        while True:
            chunk = [card for _, card in zip(range(SEED_CHUNK), cards, strict=False)]
            if not chunk:
                break
            card_rows, lot_rows, tx_rows = _seed_rows(chunk, key, now)
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "cards",
                    records=[
                        (n, "active", p, h, False, False, 0, 1, t) for n, p, h, t in card_rows
                    ],
                    columns=[
                        "number",
                        "status",
                        "phone",
                        "phone_hash",
                        "virtual",
                        "verified",
                        "debt_kop",
                        "cursor",
                        "created_at",
                    ],
                )
                await conn.copy_records_to_table(
                    "lots",
                    records=lot_rows,
                    columns=[
                        "lot_id",
                        "card",
                        "amount_kop",
                        "remaining_kop",
                        "created_on",
                        "expires_on",
                        "source",
                        "source_ref",
                    ],
                )
                await conn.copy_records_to_table(
                    "transactions",
                    records=[(c, k, a, json.dumps(lots), t) for c, k, a, lots, t in tx_rows],
                    columns=["card", "kind", "amount_kop", "lots", "received_at"],
                )
                await conn.execute("UPDATE feed SET cursor = greatest(cursor, 1) WHERE id = 1")
            totals[0] += len(card_rows)
            totals[1] += len(lot_rows)
            totals[2] += len(tx_rows)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return totals[0], totals[1], totals[2]


# --- a store, simulated as the agent records its journal ----------------------------------------


@dataclass
class SimCard:
    number: str
    wallet: Wallet


SKUS = [f"sku-{n:05d}" for n in range(2000)]


class StoreSim:
    """One store's journal: operations numbered from 1, typed and computed as the agent's commit
    computes them (``shared/effects.py``), in the wire form of the current protocol.

    Each card's wallet is kept as the store sees it (the store's own operations applied), so a
    redemption never asks for more than the card holds and returns reverse real sales.
    """

    def __init__(
        self,
        store_id: str,
        rng: random.Random,
        settings: ProgramSettings | None = None,
        now: datetime | None = None,
    ) -> None:
        self.store_id = store_id
        self.rng = rng
        self.settings = settings or ProgramSettings()
        self.now = now or datetime.now(UTC)
        self.today = local_date(self.now, self.settings.zone)
        self.seq = 0
        self.cards: list[SimCard] = []
        self.by_number: dict[str, SimCard] = {}
        self.receipts: dict[str, SoldReceipt] = {}
        self.returnable: list[str] = []
        self.counts: dict[str, int] = {}

    def add_card(self, number: str, lots: list[Lot] | None = None) -> SimCard:
        card = SimCard(number, Wallet(lots=tuple(lots or ())))
        self.cards.append(card)
        self.by_number[number] = card
        return card

    def _op(self, operation: Operation, op_id: str | None = None) -> dict[str, Any]:
        self.seq += 1
        self.counts[operation.kind] = self.counts.get(operation.kind, 0) + 1
        created = self.now + timedelta(milliseconds=self.seq)
        return {
            "seq": self.seq,
            "op_id": op_id or str(uuid7()),
            "created_at": created.isoformat(),
            "operation": operation.model_dump(mode="json"),
        }

    def register(self, number: str, phone10: str) -> dict[str, Any]:
        self.add_card(number)
        return self._op(
            Registration(
                card=number,
                phone=phone10,
                virtual=True,
                profile=Profile(first_name="Анна", last_name="Иванова"),
                consents=Consents(personal_data=True, advertising=self.rng.random() < 0.5),
            )
        )

    def random_lines(self) -> list[Line]:
        lines = []
        for n in range(self.rng.choice((1, 1, 2, 2, 3, 4))):
            qty = Decimal(self.rng.choice((1, 1, 1, 2, 3)))
            unit_kop = self.rng.randint(80, 2500) * 100 + self.rng.choice((0, 50, 90))
            lines.append(
                Line(
                    line_id=str(n + 1),
                    sku=self.rng.choice(SKUS),
                    qty=qty,
                    amount_kop=int(unit_kop * qty),
                    vital=self.rng.random() < 0.3,
                )
            )
        return lines

    def sale(self, card: SimCard, *, redeem: bool) -> dict[str, Any]:
        """``Operations._commit_sale`` without a hold or a code."""
        settings, today = self.settings, self.today
        lines = self.random_lines()
        available = balance(card.wallet, today, self.now).available_kop
        wanted = 0
        if redeem and available > 0:
            most = max_redeem(lines, settings, available)
            wanted = self.rng.randint(1, most) if most else 0
        figures = receipt_figures(lines, wanted, today, settings, available)
        assert figures.redeemed_kop == wanted
        receipt_id = f"{self.store_id}-r{self.seq + 1:07d}"
        op_id = str(uuid7())
        sale = Sale(
            card=card.number,
            receipt_id=receipt_id,
            day=today,
            lines=recorded_lines(lines, figures),
            redeem_kop=wanted,
            cashier="Петрова",
            settings_version=settings.version,
            accrual_expires_on=figures.accrual_expires_on,
            accrual_active_from=figures.accrual_active_from,
        )
        effect = sale_effect(card.wallet, sale, figures, lot_id=accrual_lot_id(op_id), now=self.now)
        card.wallet = effect.wallet
        self.receipts[receipt_id] = SoldReceipt(
            receipt_id=receipt_id,
            card=card.number,
            lines=sold_lines(sold_line_rows(sale, figures)),
            allocations=effect.allocations,
            accrual_lot=effect.accrual_lot.lot_id if effect.accrual_lot else None,
            returned={},
            refunded_kop=0,
        )
        self.returnable.append(receipt_id)
        return self._op(sale, op_id)

    def return_(self, receipt_id: str, *, whole: bool) -> dict[str, Any]:
        """``Operations._commit_return``: the whole receipt or one unit of one line."""
        receipt = self.receipts[receipt_id]
        card = self.by_number[receipt.card]
        requested: dict[str, Decimal] | None = None
        if not whole:
            open_lines = [
                line
                for line in receipt.lines
                if line.qty - receipt.returned.get(line.line_id, Decimal(0)) > 0
            ]
            requested = {self.rng.choice(open_lines).line_id: Decimal(1)}
        plan = return_plan(receipt, requested)
        op_id = str(uuid7())
        effect = return_effect(
            card.wallet, receipt, plan, day=self.today, refund_lot_id=f"{op_id}:r"
        )
        card.wallet = effect.wallet
        operation = Return(
            card=receipt.card,
            receipt_id=receipt_id,
            return_id=f"{receipt_id}-ret{self.seq + 1}",
            day=self.today,
            lines=tuple(ReturnLine(line_id=line.line_id, qty=line.qty) for line in plan.lines),
            accrual_lot=receipt.accrual_lot,
            accrual_reversed_kop=plan.accrual_reversed_kop,
            redemption_refunded_kop=plan.redemption_refunded_kop,
            refund_lots=tuple(
                LotAmount(lot_id=given.lot_id, amount_kop=given.amount_kop)
                for given in effect.given
            ),
        )
        self.receipts[receipt_id] = effect.receipt
        if all(effect.receipt.returned.get(s.line_id, Decimal(0)) >= s.qty for s in receipt.lines):
            self.returnable.remove(receipt_id)
        return self._op(operation, op_id)


def phone_hash_of(index: int, key: PhoneKey) -> str:
    return key.hash(phone_of(index))


def phone_tail(index: int) -> str:
    return phone_last4(phone_of(index))


def rm_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GiB"


# --- CPU accounting and profiles ----------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process and its live children have used (all threads):
    a central server with ``workers`` > 1 is a supervisor and its worker processes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    for child in child_pids(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(child)
    return total


def child_pids(pid: int) -> list[int]:
    """The live child processes of a process."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children.extend(int(c) for c in (task / "children").read_text().split())
    return children


def postgres_cpu_seconds(url: str | None = None) -> float:
    """CPU seconds of a PostgreSQL server's processes (its postmaster and backends).

    With the URL of a throw-away cluster (``host=`` its socket directory), only that cluster's
    processes count; otherwise every ``postgres`` process on the machine does.
    """
    postmaster: int | None = None
    if url is not None:
        host = asyncpg_kwargs(url).get("host") if url.startswith("postgresql") else None
        pid_file = Path(str(host)) / "data" / "postmaster.pid" if host else None
        if pid_file is not None and pid_file.exists():
            postmaster = int(pid_file.read_text().split()[0])
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if "(postgres)" not in stat:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parent = int(fields[1])
        if postmaster is not None and int(entry.name) != postmaster and parent != postmaster:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


class PySpy:
    """``py-spy record`` of a process in collapsed-stack form, for a summary afterwards."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        self.out = out
        exe = Path(sys.executable).parent / "py-spy"
        if not exe.exists():
            raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
        self.proc = subprocess.Popen(
            [
                str(exe),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                str(rate),
                "--idle",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def summarize_profile(path: Path, top: int = 25) -> str:
    """Inclusive share of samples per function (project code and the main libraries)."""
    if not path.exists():
        return f"(no profile written at {path})"
    inclusive: dict[str, int] = {}
    self_time: dict[str, int] = {}
    total = 0
    idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # The event loop's own thread only: helper threads (aiosqlite) are counted apart.
        total += count
        leaf = frames[-1]
        if any(
            marker in leaf
            for marker in (
                "select (selectors.py",
                "wait (threading.py",
                "_worker (concurrent",
                "get (queue.py",
            )
        ):
            idle += count
        self_time[_short(leaf)] = self_time.get(_short(leaf), 0) + count
        seen = set()
        for frame in frames:
            name = _short(frame)
            if name not in seen:
                seen.add(name)
                inclusive[name] = inclusive.get(name, 0) + count
    if not total:
        return "(empty profile)"
    lines = [f"samples {total} (all threads), idle-looking leaves {idle / total:.0%}"]
    lines.append("  inclusive  self   function")
    interesting = [
        (name, n)
        for name, n in inclusive.items()
        if any(
            key in name
            for key in (
                "central/",
                "shared/",
                "sqlalchemy",
                "asyncpg",
                "aiosqlite",
                "pydantic",
                "aiohttp",
                "json",
                "sqlite3",
            )
        )
    ]
    for name, n in sorted(interesting, key=lambda item: -item[1])[:top]:
        lines.append(f"  {n / total:8.1%}  {self_time.get(name, 0) / total:5.1%}  {name}")
    lines.append("  top self time:")
    for name, n in sorted(self_time.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {'':8}  {n / total:5.1%}  {name}")
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module path without line)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file_part = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file_part:
            file_part = file_part.split(marker, 1)[1]
            break
    return f"{name} ({file_part})"


async def pg_statement_stats(url: str, top: int = 25) -> list[str]:
    """pg_stat_statements' heaviest statements by execution time (the database's own view)."""
    import asyncpg

    conn = await asyncpg.connect(**asyncpg_kwargs(url))
    try:
        rows = await conn.fetch(
            "SELECT calls, rows, total_exec_time, query FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY total_exec_time DESC LIMIT $1",
            top,
        )
        total = await conn.fetchval(
            "SELECT sum(total_exec_time) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    finally:
        await conn.close()
    out = [f"{'ms total':>9} {'share':>6} {'calls':>7} {'rows':>8} {'µs/row':>7}  statement"]
    for row in rows:
        query = " ".join(row["query"].split())[:90]
        per_row = row["total_exec_time"] * 1000 / max(1, row["rows"])
        out.append(
            f"{row['total_exec_time']:9.0f} {row['total_exec_time'] / total:6.1%} "
            f"{row['calls']:7d} {row['rows']:8d} {per_row:7.1f}  {query}"
        )
    return out


async def pg_statement_reset(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(**asyncpg_kwargs(url))
    try:
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


def code_source() -> str:
    """Which code is measured: the package directory and its commit (and whether it is edited)."""
    import central

    root = Path(central.__file__).resolve().parent.parent
    marker = root / "COMMIT"
    if marker.exists():
        return f"code from {root} (snapshot of commit {marker.read_text().strip()[:10]})"
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "central", "agent", "shared"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"code from {root}"
    return f"code from {root} (commit {commit}{', with uncommitted changes' if dirty else ''})"


class PgWaitSampler:
    """Samples ``pg_stat_activity`` of one database: what its busy backends are doing or waiting on."""

    def __init__(self, url: str, interval_s: float = 0.05) -> None:
        self.url = url
        self.interval_s = interval_s
        self.samples = 0
        self.states: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(**asyncpg_kwargs(self.url))
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT state, wait_event_type, wait_event, left(query, 40) AS query "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state <> 'idle'"
                )
                self.samples += 1
                for row in rows:
                    if row["wait_event_type"] is None:
                        key = f"running ({row['state']})"
                    else:
                        key = f"waiting {row['wait_event_type']}:{row['wait_event']}"
                        if row["wait_event_type"] == "Lock":
                            key += f" in {' '.join(row['query'].split()[:3])}"
                    self.states[key] = self.states.get(key, 0) + 1
                await asyncio.sleep(self.interval_s)
        finally:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self) -> list[str]:
        if not self.samples:
            return ["(no samples)"]
        lines = [
            f"{self.samples} samples every {self.interval_s * 1000:.0f} ms; "
            "mean number of the database's backends in each state:"
        ]
        for key, count in sorted(self.states.items(), key=lambda item: -item[1]):
            lines.append(f"  {count / self.samples:5.2f}  {key}")
        return lines
