"""Benchmark of the central server's ingest: operations per second from batched store uploads.

Not a test: it prints figures.  For each database (SQLite, PostgreSQL or both):

1. A fresh central database: migrated, ``--stores`` stores registered, ``--seed-cards`` cards
   (1 to 3 lots each, with the journal rows that explain them) inserted in bulk.
2. Each store's journal is generated the way the agent records it (``bench/central_common.py``
   follows ``agent/operations.py``): first a few registrations, then sales (accrual; some with
   redemption) and returns of earlier receipts, numbered from 1.  Batches of ``--batch-ops``
   are serialised before the clock starts.
3. A real ``bonus-central serve`` process; every store uploads its batches in order, all stores
   at once, over HTTP (``/sync/v1/upload``).  Operations per second = all operations / wall time
   from the first request to the last answer.
4. The floor: the journal rows the ingest wrote (``transactions``) inserted again through the
   same driver into a plain table of the same shape, one transaction per upload batch
   (sqlite3 ``executemany`` with WAL and synchronous=FULL; asyncpg ``executemany`` and ``COPY``).
5. ``bonus-central check`` (the ledger's invariants) and its verdict.

PostgreSQL is a throw-away cluster started by the benchmark (``initdb`` + ``pg_ctl`` on a Unix
socket, fsync on) unless ``--pg-url`` names one.  Run from the repository root:
``.venv/bin/python bench/central_ingest.py --quick``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from central_common import (
    MACHINE,
    CentralServer,
    PgWaitSampler,
    PySpy,
    StoreSim,
    asyncpg_kwargs,
    card_number,
    code_source,
    cpu_seconds,
    database,
    load_text,
    phone_of,
    postgres_cpu_seconds,
    prepare_central,
    rm_tree,
    seed_cards,
    seed_central,
    sqlite_path,
    summarize_profile,
)

from shared.lots import local_date
from shared.phones import PRODUCTION_PHONE_HASH
from shared.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION, STORE_HEADER
from shared.settings import ProgramSettings

GOAL_OPS_PER_S = 5000.0
REQUEST_TIMEOUT_S = 300.0
#: First card index of the cards stores register during the run (seeded cards start at 0).
REGISTERED_BASE = 500_000_000

#: ``--experiment unlocked-cursor``: the feed cursor from a PostgreSQL sequence instead of the
#: ``feed`` row.  NOT a valid configuration (cursor order is no longer commit order, so a reader
#: could skip a change); it only measures how much the serialisation on the ``feed`` row costs.
UNLOCKED_CURSOR_PREAMBLE = """
import sqlalchemy as sa
import central.ledger

async def _sequence_cursor(conn):
    return int(await conn.scalar(sa.text("SELECT nextval('bench_feed_cursor')")))

central.ledger.next_cursor = _sequence_cursor
"""


async def create_cursor_sequence(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(**asyncpg_kwargs(url))
    try:
        await conn.execute("CREATE SEQUENCE bench_feed_cursor START WITH 1000000")
    finally:
        await conn.close()


@dataclass
class Workload:
    """Every store's batches, serialised, with what they contain."""

    store_ids: list[str]
    batches: dict[str, list[bytes]]
    last_seq: dict[str, list[int]]
    counts: dict[str, int] = field(default_factory=dict)
    payload_bytes: int = 0
    redeeming_sales: int = 0

    @property
    def ops(self) -> int:
        return sum(self.counts.values())


def build_workload(args: argparse.Namespace, seed: int) -> Workload:
    """The stores' journals: registrations first, then sales and returns."""
    rng = random.Random(seed)
    settings = ProgramSettings()
    now = datetime.now(UTC)
    today = local_date(now, settings.zone)
    store_ids = [f"bench-{n:03d}" for n in range(args.stores)]
    sims = {sid: StoreSim(sid, random.Random(rng.random()), settings, now) for sid in store_ids}
    # Seeded cards belong to one store each, so stores never race on a card (as in real life,
    # where a customer mostly shops at one pharmacy).
    for index, seeded in enumerate(seed_cards(0, args.seed_cards, today, random.Random(seed))):
        sims[store_ids[index % args.stores]].add_card(seeded.number, seeded.lots)
    workload = Workload(store_ids, {}, {})
    for n, sid in enumerate(store_ids):
        sim = sims[sid]
        ops: list[dict[str, Any]] = []
        registrations = max(1, round(args.ops_per_store * args.register_pct / 100))
        for k in range(registrations):
            index = REGISTERED_BASE + n * 1_000_000 + k
            ops.append(sim.register(card_number(index), phone_of(index)))
        while len(ops) < args.ops_per_store:
            if sim.returnable and sim.rng.random() < args.return_pct / 100:
                receipt_id = sim.rng.choice(sim.returnable)
                ops.append(sim.return_(receipt_id, whole=sim.rng.random() < 0.5))
            else:
                card = sim.rng.choice(sim.cards)
                ops.append(sim.sale(card, redeem=sim.rng.random() < args.redeem_pct / 100))
        bodies = []
        lasts = []
        for start in range(0, len(ops), args.batch_ops):
            chunk = ops[start : start + args.batch_ops]
            body = json.dumps({"ops": chunk}, ensure_ascii=False).encode()
            workload.payload_bytes += len(body)
            bodies.append(body)
            lasts.append(chunk[-1]["seq"])
        workload.batches[sid] = bodies
        workload.last_seq[sid] = lasts
        for kind, count in sim.counts.items():
            workload.counts[kind] = workload.counts.get(kind, 0) + count
    workload.redeeming_sales = sum(
        1 for sim in sims.values() for receipt in sim.receipts.values() if receipt.allocations
    )
    return workload


@dataclass
class UploadStats:
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    applied: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


async def upload_all(
    base_url: str,
    tokens: dict[str, str],
    workload: Workload,
    sampler: PgWaitSampler | None = None,
) -> UploadStats:
    """Every store uploads its batches in order; all stores at once."""
    stats = UploadStats()
    connector = aiohttp.TCPConnector(limit=len(workload.store_ids) + 4)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        def headers(sid: str) -> dict[str, str]:
            return {
                "Authorization": f"Bearer {tokens[sid]}",
                STORE_HEADER: sid,
                PROTOCOL_HEADER: str(PROTOCOL_VERSION),
                "Content-Type": "application/json",
            }

        # One hello per store first (not timed): connections open, authentication warm.
        for sid in workload.store_ids:
            async with session.get(base_url + "/sync/v1/hello", headers=headers(sid)) as answer:
                answer.raise_for_status()

        async def store(sid: str) -> None:
            for body, last in zip(workload.batches[sid], workload.last_seq[sid], strict=True):
                started = time.perf_counter()
                async with session.post(
                    base_url + "/sync/v1/upload", data=body, headers=headers(sid)
                ) as answer:
                    raw = await answer.read()
                    status = answer.status
                stats.latencies_s.append(time.perf_counter() - started)
                if status != 200:
                    stats.errors.append(f"{sid}: HTTP {status}: {raw[:300]!r}")
                    return
                result = json.loads(raw)
                if result["acked_seq"] != last:
                    stats.errors.append(f"{sid}: acked {result['acked_seq']}, expected {last}")
                    return
                for item in result["results"]:
                    if item["status"] == "applied":
                        stats.applied += 1
                    else:
                        stats.rejected += 1
                        reason = str(item.get("reason"))[:80]
                        stats.reasons[reason] = stats.reasons.get(reason, 0) + 1

        if sampler is not None:
            sampler.start()
        started = time.perf_counter()
        await asyncio.gather(*(store(sid) for sid in workload.store_ids))
        stats.elapsed_s = time.perf_counter() - started
        if sampler is not None:
            await sampler.stop()
    return stats


# --- the raw floor -----------------------------------------------------------------------------

TX_COLUMNS = [
    "card",
    "store_id",
    "kind",
    "amount_kop",
    "lots",
    "receipt_id",
    "campaign_id",
    "op_id",
    "at_store",
    "received_at",
    "note",
]


@dataclass
class RawResult:
    method: str
    rows: int
    elapsed_s: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed_s if self.elapsed_s else math.nan


def _chunks(rows: list[Any], count: int) -> list[list[Any]]:
    size = max(1, math.ceil(len(rows) / max(1, count)))
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def raw_sqlite(url: str, transactions_count: int, commits: int) -> list[RawResult]:
    """The ingest's journal rows inserted again with sqlite3 executemany, WAL, synchronous=FULL."""
    path = sqlite_path(url)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        rows = conn.execute(
            f"SELECT {', '.join(TX_COLUMNS)} FROM transactions WHERE op_id IS NOT NULL ORDER BY id"
        ).fetchall()
        assert len(rows) == transactions_count, (len(rows), transactions_count)
        conn.execute(
            "CREATE TABLE bench_raw_transactions (id INTEGER PRIMARY KEY, card VARCHAR(40) NOT NULL, "
            "store_id VARCHAR(64), kind VARCHAR(32) NOT NULL, amount_kop BIGINT NOT NULL, "
            "lots JSON NOT NULL, receipt_id VARCHAR(80), campaign_id VARCHAR(80), "
            "op_id VARCHAR(64), at_store DATETIME, received_at DATETIME NOT NULL, "
            "note VARCHAR(500))"
        )
        insert = (
            f"INSERT INTO bench_raw_transactions ({', '.join(TX_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in TX_COLUMNS)})"
        )
        started = time.perf_counter()
        for chunk in _chunks(rows, commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, chunk)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_raw_transactions")
    finally:
        conn.close()
    return [RawResult("sqlite3 executemany", len(rows), elapsed)]


async def raw_postgres(url: str, transactions_count: int, commits: int) -> list[RawResult]:
    """The ingest's journal rows inserted again with asyncpg executemany and COPY."""
    import asyncpg

    conn = await asyncpg.connect(**asyncpg_kwargs(url))
    results = []
    try:
        records = await conn.fetch(
            f"SELECT {', '.join(TX_COLUMNS)} FROM transactions WHERE op_id IS NOT NULL ORDER BY id"
        )
        rows = [tuple(record) for record in records]
        assert len(rows) == transactions_count, (len(rows), transactions_count)
        for method in ("asyncpg executemany", "asyncpg COPY"):
            await conn.execute("DROP TABLE IF EXISTS bench_raw_transactions")
            # The shape of ``transactions`` (central/schema.py) with its primary key only.
            await conn.execute(
                "CREATE TABLE bench_raw_transactions (id bigint GENERATED BY DEFAULT AS IDENTITY "
                "PRIMARY KEY, card varchar(40) NOT NULL, store_id varchar(64), kind varchar(32) "
                "NOT NULL, amount_kop bigint NOT NULL, lots json NOT NULL, receipt_id varchar(80), "
                "campaign_id varchar(80), op_id varchar(64), at_store timestamptz, "
                "received_at timestamptz NOT NULL, note varchar(500))"
            )
            insert = (
                f"INSERT INTO bench_raw_transactions ({', '.join(TX_COLUMNS)}) "
                f"VALUES ({', '.join(f'${i + 1}' for i in range(len(TX_COLUMNS)))})"
            )
            started = time.perf_counter()
            for chunk in _chunks(rows, commits):
                async with conn.transaction():
                    if method.endswith("COPY"):
                        await conn.copy_records_to_table(
                            "bench_raw_transactions", records=chunk, columns=TX_COLUMNS
                        )
                    else:
                        await conn.executemany(insert, chunk)
            results.append(RawResult(method, len(rows), time.perf_counter() - started))
        await conn.execute("DROP TABLE bench_raw_transactions")
    finally:
        await conn.close()
    return results


async def count_rows(url: str) -> dict[str, int]:
    from central.db import Database

    db = Database(url)
    try:
        async with db.read() as conn:
            out = {}
            for table in ("store_ops", "transactions", "receipts", "lots", "cards"):
                out[table] = int(
                    (await conn.exec_driver_sql(f"SELECT count(*) FROM {table}")).scalar()
                )
            out["journal rows of the run"] = int(
                (
                    await conn.exec_driver_sql(
                        "SELECT count(*) FROM transactions WHERE op_id IS NOT NULL"
                    )
                ).scalar()
            )
            return out
    finally:
        await db.close()


# --- one database ------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def run_one(
    kind: str, args: argparse.Namespace, work_dir: Path, preamble: str | None = None
) -> dict[str, Any]:
    """One ingest run over a fresh database; ``preamble`` is Python the server runs first."""
    print(f"\n=== {kind} ===")
    summary: dict[str, Any] = {"db": kind}
    with database(kind, work_dir, args.pg_url, "bench_ingest") as url:
        store_ids = [f"bench-{n:03d}" for n in range(args.stores)]
        key, tokens = asyncio.run(prepare_central(url, store_ids))
        started = time.perf_counter()
        settings = ProgramSettings()
        today = local_date(datetime.now(UTC), settings.zone)
        seeded = seed_central(
            url,
            seed_cards(0, args.seed_cards, today, random.Random(args.seed)),
            key,
            sqlite_analyze=args.sqlite_analyze,
        )
        print(
            f"  seeded {seeded[0]} cards, {seeded[1]} lots, {seeded[2]} journal rows "
            f"in {time.perf_counter() - started:.1f} s (not measured)"
        )
        started = time.perf_counter()
        workload = build_workload(args, args.seed)
        print(
            f"  generated {workload.ops} operations for {args.stores} stores "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(workload.counts.items()))}; "
            f"{workload.redeeming_sales} sales redeem), "
            f"{sum(len(b) for b in workload.batches.values())} batches of ≤ {args.batch_ops}, "
            f"{workload.payload_bytes / 1e6:.1f} MB of JSON, in {time.perf_counter() - started:.1f} s"
        )
        if args.experiment == "unlocked-cursor" and kind == "postgresql":
            asyncio.run(create_cursor_sequence(url))
            preamble = (preamble or "") + UNLOCKED_CURSOR_PREAMBLE
            print(
                "  EXPERIMENT unlocked-cursor: the feed cursor comes from a sequence, not the "
                "feed row (not a valid configuration; measures the cost of the row lock)"
            )
        workers = args.workers or ((os.cpu_count() or 1) if kind == "postgresql" else 1)
        print(f"  central server: {workers} worker process{'es' if workers > 1 else ''}")
        server = CentralServer(
            work_dir, url, log_level="WARNING", preamble=preamble, workers=workers
        )
        server.log_path = work_dir / f"central-{kind}.log"
        if args.phone_hash == "production":
            # Each registration's slow hash, computed by the server's threads before its batch.
            server.phone_hash = PRODUCTION_PHONE_HASH
        print(
            f"  phone hashes: {server.phone_hash.memory_kib} KiB, {server.phone_hash.time_cost} "
            f"pass(es) ({args.phone_hash})"
        )
        server.start()
        profiler = None
        try:
            cpu_before = cpu_seconds(server.pid)
            pg_before = postgres_cpu_seconds(url) if kind == "postgresql" else 0.0
            own_before = time.process_time()
            if args.py_spy:
                profiler = PySpy(server.pid, work_dir / f"profile-{kind}.txt")
            print(f"  before the upload: {load_text()}")
            sampler = PgWaitSampler(url) if args.pg_waits and kind == "postgresql" else None
            stats = asyncio.run(upload_all(server.base_url, tokens, workload, sampler))
            print(f"  after the upload:  {load_text()}")
            if profiler is not None:
                profiler.stop()
            server_cpu = cpu_seconds(server.pid) - cpu_before
            pg_cpu = (postgres_cpu_seconds(url) - pg_before) if kind == "postgresql" else 0.0
            own_cpu = time.process_time() - own_before
            server_memory = server.memory_kib()
        finally:
            server.stop()
        if stats.errors:
            print("  UPLOAD ERRORS:")
            for error in stats.errors[:10]:
                print("   ", error)
        ops_per_s = workload.ops / stats.elapsed_s
        rows = asyncio.run(count_rows(url))
        journal_rows = rows["journal rows of the run"]
        batches = sum(len(b) for b in workload.batches.values())
        if kind == "sqlite":
            raws = raw_sqlite(url, journal_rows, batches)
        else:
            raws = asyncio.run(raw_postgres(url, journal_rows, batches))
        ok, check_output = server.check()

    lat = stats.latencies_s
    print(
        f"  ingest: {workload.ops} operations in {stats.elapsed_s:.2f} s = {ops_per_s:,.0f} ops/s"
    )
    print(
        f"    applied {stats.applied}, rejected {stats.rejected}"
        + (
            f" ({'; '.join(f'{r}: {n}' for r, n in stats.reasons.items())})"
            if stats.reasons
            else ""
        )
    )
    print(
        f"    batch latency (ms): p50 {percentile(lat, 50) * 1000:.0f}, "
        f"p90 {percentile(lat, 90) * 1000:.0f}, p99 {percentile(lat, 99) * 1000:.0f}, "
        f"max {max(lat, default=math.nan) * 1000:.0f}"
    )
    busy = f"central server CPU {server_cpu:.1f} s ({server_cpu / stats.elapsed_s:.0%} of one core)"
    if kind == "postgresql":
        busy += f", postgres CPU {pg_cpu:.1f} s ({pg_cpu / stats.elapsed_s:.0%})"
    busy += f", benchmark client CPU {own_cpu:.1f} s"
    print(f"    {busy}; server peak RSS {server_memory['VmHWM'] / 1024:.0f} MiB")
    print(f"    rows after the run: {', '.join(f'{k} {v}' for k, v in rows.items())}")
    print(f"  raw floor ({journal_rows} journal rows of the run, {batches} commits, same driver):")
    for raw in raws:
        print(
            f"    {raw.method}: {raw.elapsed_s:.2f} s = {raw.rows_per_s:,.0f} rows/s; "
            f"ingest ops/s ÷ raw rows/s = {ops_per_s / raw.rows_per_s:.3f} "
            f"(the ingest takes {stats.elapsed_s / raw.elapsed_s:.0f}× as long as the raw insert)"
        )
    verdict = check_output.splitlines()[-1] if check_output else "(no output)"
    print(f"  bonus-central check: {verdict}")
    for line in check_output.splitlines()[:-1]:
        print(f"    {line}")
    if sampler is not None:
        print("  PostgreSQL backends during the upload (pg_stat_activity):")
        print("\n".join("    " + line for line in sampler.summary()))
    if profiler is not None:
        print(f"  py-spy profile of the central server ({profiler.out}):")
        print("    " + summarize_profile(profiler.out, args.profile_top).replace("\n", "\n    "))
    summary.update(
        ops=workload.ops,
        elapsed_s=stats.elapsed_s,
        ops_per_s=ops_per_s,
        raw={raw.method: raw.rows_per_s for raw in raws},
        server_cpu_s=server_cpu,
        check_ok=ok,
        upload_errors=len(stats.errors),
        rejected=stats.rejected,
    )
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Central server ingest: operations/s from batched uploads of many stores "
        "over HTTP to a real `bonus-central serve`, beside a raw bulk insert of the same "
        "journal rows; goal ≥ 5,000 ops/s on PostgreSQL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--stores", type=int, default=20, help="stores uploading at once")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="central server processes (default: one per CPU on PostgreSQL, 1 on SQLite)",
    )
    parser.add_argument("--ops-per-store", type=int, default=5000, help="operations per store")
    parser.add_argument("--batch-ops", type=int, default=500, help="operations per upload batch")
    parser.add_argument(
        "--seed-cards", type=int, default=100_000, help="cards in the ledger before the run"
    )
    parser.add_argument(
        "--register-pct", type=float, default=2.0, help="share of registrations (first)"
    )
    parser.add_argument(
        "--redeem-pct", type=float, default=20.0, help="share of sales that redeem points"
    )
    parser.add_argument("--return-pct", type=float, default=4.0, help="share of returns")
    parser.add_argument(
        "--phone-hash",
        choices=("bench", "production"),
        default="production",
        help="the cost of the registrations' phone hashes (bench: argon2's least)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes for development (overrides sizes)"
    )
    parser.add_argument(
        "--pg-url",
        help="use this PostgreSQL database (postgresql+asyncpg://…, must be empty) "
        "instead of a throw-away cluster",
    )
    parser.add_argument("--dir", help="where the temporary databases go (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default random)")
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="record the central server with py-spy during the upload and print a summary",
    )
    parser.add_argument(
        "--sqlite-analyze",
        action="store_true",
        help="run ANALYZE on the seeded SQLite database (the server never does)",
    )
    parser.add_argument(
        "--pg-waits",
        action="store_true",
        help="PostgreSQL: sample pg_stat_activity every 50 ms during the upload (lock waits)",
    )
    parser.add_argument(
        "--experiment",
        choices=("unlocked-cursor",),
        help="PostgreSQL only, NOT a valid configuration: take the feed cursor from a sequence "
        "(no row lock) to measure what the serialisation on the feed row costs",
    )
    parser.add_argument("--profile-top", type=int, default=30, help="rows of the profile summary")
    parser.add_argument(
        "--goal", type=float, default=GOAL_OPS_PER_S, help="ops/s goal (PostgreSQL)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.ops_per_store = min(args.ops_per_store, 500)
        args.seed_cards = min(args.seed_cards, 5000)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 30)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    work_dir = Path(tempfile.mkdtemp(prefix="central-ingest-", dir=args.dir))
    print(
        f"central ingest benchmark: {MACHINE}; {args.stores} stores × {args.ops_per_store} ops, "
        f"batches of {args.batch_ops}, {args.seed_cards} seeded cards, seed {args.seed}; "
        f"work dir {work_dir}"
    )
    print(
        "  durability: SQLite WAL + synchronous=FULL (as the server sets it); PostgreSQL fsync on"
    )
    print(f"  {code_source()}")
    summaries = []
    try:
        for kind in kinds:
            summaries.append(run_one(kind, args, work_dir))
    finally:
        if args.keep:
            print(f"kept {work_dir}")
        else:
            rm_tree(work_dir)
    print("\n=== summary ===")
    failed = False
    for s in summaries:
        goal_text = ""
        if s["db"] == "postgresql" and args.experiment:
            goal_text = f"  (experiment {args.experiment}: no verdict)"
        elif s["db"] == "postgresql":
            passed = s["ops_per_s"] >= args.goal and not s["upload_errors"]
            failed |= not passed
            goal_text = f"  goal ≥ {args.goal:,.0f} ops/s: {'PASS' if passed else 'FAIL'}"
        else:
            goal_text = f"  (the {args.goal:,.0f} ops/s goal is for PostgreSQL)"
        raw = ", ".join(f"{m} {v:,.0f} rows/s" for m, v in s["raw"].items())
        print(
            f"{s['db']:>10}: {s['ops_per_s']:,.0f} ops/s ({s['ops']} ops in {s['elapsed_s']:.1f} s); "
            f"raw {raw}; check {'ok' if s['check_ok'] else 'BROKEN'}{goal_text}"
        )
        failed |= not s["check_ok"] or bool(s["upload_errors"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
