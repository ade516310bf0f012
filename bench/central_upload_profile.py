"""Where the central server's upload time goes: ``central.sync.upload`` run in-process, one batch
at a time, with every phase and every SQL statement timed.

A companion of ``central_ingest.py`` (same workload, same seeding), without HTTP and without
concurrency so that each microsecond is attributed to one thing:

- ``parse``: the request body to ``UploadRequest`` (``service.web.parse_json`` + pydantic), as
  ``upload_batch`` does it;
- the phases of ``central.sync.upload``: the store row, ``load_for_batch``, ``apply_op`` (every
  operation), ``LedgerTx.write``, ``write_receipts``, the ``store_ops`` insert,
  ``LedgerTx.publish`` (the feed cursor and the cards), the commit;
- inside each phase, the time spent in SQL round trips (SQLAlchemy ``before/after_cursor_execute``
  events: driver, network and database) and the rest (Python: our code, SQLAlchemy's compile
  and parameter processing, pydantic).

Nothing in ``central/`` is changed: the phases are timed by wrapping functions of the imported
modules inside this process.  ``--cprofile`` adds a cProfile table of the same run.
Run from the repository root: ``.venv/bin/python bench/central_upload_profile.py --db postgresql``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import random
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import central_ingest
from central_common import (
    MACHINE,
    code_source,
    database,
    load_text,
    pg_statement_reset,
    pg_statement_stats,
    postgres_cpu_seconds,
    prepare_central,
    rm_tree,
    seed_cards,
    seed_central,
)
from sqlalchemy import event

from central import apply as central_apply
from central import ledger as central_ledger
from central import sync as central_sync
from central.db import Database
from service.phonekey import PhoneHasher
from service.web import parse_json
from shared.lots import local_date
from shared.phones import PhoneKey
from shared.protocol import UploadRequest
from shared.settings import ProgramSettings


class Timers:
    """Wall time per phase, and SQL time per phase and per statement."""

    def __init__(self) -> None:
        self.phase_s: dict[str, float] = defaultdict(float)
        self.sql_s: dict[str, float] = defaultdict(float)
        self.sql_by_statement_s: dict[str, float] = defaultdict(float)
        self.sql_calls: dict[str, int] = defaultdict(int)
        self.kind_counts: dict[str, int] = defaultdict(int)
        self.stack: list[str] = []
        self._sql_started: float = 0.0

    @contextlib.contextmanager
    def phase(self, name: str) -> Any:
        self.stack.append(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.stack.pop()
            self.phase_s[name] += elapsed
            # Nested phases are reported on their own; take them out of the parent.
            if self.stack:
                self.phase_s[self.stack[-1]] -= elapsed

    def sql_begin(self) -> None:
        self._sql_started = time.perf_counter()

    def sql_end(self, statement: str, many: bool) -> None:
        elapsed = time.perf_counter() - self._sql_started
        where = self.stack[-1] if self.stack else "(outside)"
        self.sql_s[where] += elapsed
        key = _statement_key(statement) + (" [executemany]" if many else "")
        self.sql_by_statement_s[key] += elapsed
        self.sql_calls[key] += 1


def _statement_key(statement: str) -> str:
    text = " ".join(statement.split())
    match = re.match(r"(SELECT .*? FROM \w+|INSERT INTO \w+|UPDATE \w+|DELETE FROM \w+|\w+)", text)
    key = match.group(1) if match else text[:40]
    if key.startswith("SELECT") and " FROM " in key:
        key = "SELECT … FROM " + key.rsplit(" ", 1)[1]
    elif key == "SELECT":
        key = text[:48]
        if "FOR UPDATE" in text:
            key += " FOR UPDATE"
    return key


def instrument(db: Database, timers: Timers) -> None:
    """Wrap the phases of ``central.sync.upload`` and listen to every SQL statement."""

    @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def _before(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        timers.sql_begin()

    @event.listens_for(db.engine.sync_engine, "after_cursor_execute")
    def _after(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        timers.sql_end(statement, many)

    def timed(name: str, function: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            with timers.phase(name):
                return await function(*args, **kwargs)

        return wrapper

    central_sync.load_for_batch = timed("load_for_batch", central_apply.load_for_batch)

    async def apply_by_kind(tx: Any, ctx: Any, op: Any) -> Any:
        timers.kind_counts[op.kind] += 1
        with timers.phase(f"apply_op: {op.kind}"):
            return await central_apply.apply_op(tx, ctx, op)

    central_sync.apply_op = apply_by_kind
    central_sync.write_receipts = timed("write_receipts", central_apply.write_receipts)
    central_sync.current_settings = timed("current_settings", central_sync.current_settings)
    original_write = central_ledger.LedgerTx.write
    central_ledger.LedgerTx.write = timed("LedgerTx.write", original_write)  # type: ignore[method-assign]
    original_publish = central_ledger.LedgerTx.publish
    central_ledger.LedgerTx.publish = timed(  # type: ignore[method-assign]
        "LedgerTx.publish (feed cursor, cards)", original_publish
    )
    original_db_write = db.write

    @contextlib.asynccontextmanager
    async def write() -> AsyncIterator[Any]:
        # The body of the transaction is "upload (rest)"; leaving the block is the commit.
        manager = original_db_write()
        with timers.phase("begin"):
            conn = await manager.__aenter__()
        try:
            with timers.phase("upload (rest: store row, store_ops insert, store update)"):
                yield conn
        except BaseException as exc:
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        with timers.phase("commit (database: WAL write and fsync; counted as Python here)"):
            await manager.__aexit__(None, None, None)

    db.write = write  # type: ignore[method-assign]


async def run_batches(
    url: str, workload: central_ingest.Workload, key: PhoneKey, profile: cProfile.Profile | None
) -> tuple[Timers, float, int, int]:
    db = Database(url)
    hasher = PhoneHasher(key)
    timers = Timers()
    instrument(db, timers)
    ops = rejected = 0
    order = []
    # Round-robin over the stores, one batch at a time, as the server would see them arrive.
    longest = max(len(b) for b in workload.batches.values())
    for index in range(longest):
        for sid in workload.store_ids:
            if index < len(workload.batches[sid]):
                order.append((sid, workload.batches[sid][index]))
    try:
        started = time.perf_counter()
        timers.cpu_before = (time.process_time(), postgres_cpu_seconds(url))  # type: ignore[attr-defined]
        if profile is not None:
            profile.enable()
        for sid, body in order:
            with timers.phase("parse (json + pydantic)"):
                batch = UploadRequest.model_validate(parse_json(body))
            result = await central_sync.upload(db, sid, batch, datetime.now(UTC), hasher)
            ops += len(result.results)
            rejected += sum(1 for r in result.results if r.status == "rejected")
        if profile is not None:
            profile.disable()
        own, pg = timers.cpu_before  # type: ignore[attr-defined]
        timers.cpu = (time.process_time() - own, postgres_cpu_seconds(url) - pg)  # type: ignore[attr-defined]
        return timers, time.perf_counter() - started, ops, rejected
    finally:
        hasher.close()
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time every phase and SQL statement of central.sync.upload in-process, "
        "one batch at a time (the workload of central_ingest.py).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--stores", type=int, default=20)
    parser.add_argument("--ops-per-store", type=int, default=1000)
    parser.add_argument("--batch-ops", type=int, default=500)
    parser.add_argument("--seed-cards", type=int, default=100_000)
    parser.add_argument("--register-pct", type=float, default=2.0)
    parser.add_argument("--redeem-pct", type=float, default=20.0)
    parser.add_argument("--return-pct", type=float, default=4.0)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--pg-url", help="an empty PostgreSQL database instead of a throw-away one")
    parser.add_argument("--dir", help="where the temporary databases go")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="PostgreSQL: start the cluster with pg_stat_statements and print its top statements",
    )
    parser.add_argument(
        "--cprofile", type=int, default=0, metavar="N", help="also print cProfile's top N functions"
    )
    parser.add_argument(
        "--cprofile-sort", default="tottime", help="cProfile order: tottime or cumulative"
    )
    parser.add_argument(
        "--cprofile-filter", default="", help="cProfile: only functions whose file matches"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.ops_per_store = min(args.ops_per_store, 500)
        args.seed_cards = min(args.seed_cards, 5000)
    work_dir = Path(tempfile.mkdtemp(prefix="central-upload-profile-", dir=args.dir))
    print(
        f"upload profile: {MACHINE}; {args.db}; {args.stores} stores × {args.ops_per_store} ops, "
        f"batches of {args.batch_ops}, {args.seed_cards} seeded cards; one batch at a time, no HTTP"
    )
    print(f"  {code_source()}")
    try:
        with database(
            args.db, work_dir, args.pg_url, "bench_profile", stat_statements=args.pg_statements
        ) as url:
            store_ids = [f"bench-{n:03d}" for n in range(args.stores)]
            key, _tokens = asyncio.run(prepare_central(url, store_ids))
            today = local_date(datetime.now(UTC), ProgramSettings().zone)
            seed_central(url, seed_cards(0, args.seed_cards, today, random.Random(args.seed)), key)
            workload = central_ingest.build_workload(args, args.seed)
            profile = cProfile.Profile() if args.cprofile else None
            if args.pg_statements:
                asyncio.run(pg_statement_reset(url))
            print(f"  {load_text()}")
            timers, elapsed, ops, rejected = asyncio.run(run_batches(url, workload, key, profile))
            print(f"  {load_text()}")
            statements = asyncio.run(pg_statement_stats(url)) if args.pg_statements else []
    finally:
        rm_tree(work_dir)
    print(
        f"  {ops} operations ({', '.join(f'{k} {v}' for k, v in sorted(workload.counts.items()))}) "
        f"in {elapsed:.2f} s = {ops / elapsed:,.0f} ops/s one batch at a time; rejected {rejected}"
    )
    per_op = 1e6 / ops
    own_cpu, pg_cpu = timers.cpu  # type: ignore[attr-defined]
    print(
        f"  CPU during the run: this process {own_cpu:.1f} s ({own_cpu * per_op:.0f} µs/op), "
        f"postgres processes {pg_cpu:.1f} s ({pg_cpu * per_op:.0f} µs/op); wall {elapsed:.1f} s"
    )
    print(f"\n  {'phase':<62} {'µs/op':>7} {'SQL µs/op':>10} {'Python µs/op':>13} {'share':>6}")
    total = sum(timers.phase_s.values())
    for name, seconds in sorted(timers.phase_s.items(), key=lambda item: -item[1]):
        sql = timers.sql_s.get(name, 0.0)
        print(
            f"  {name:<62} {seconds * per_op:7.0f} {sql * per_op:10.0f} "
            f"{(seconds - sql) * per_op:13.0f} {seconds / total:6.1%}"
        )
    print(f"  {'total (sum of phases)':<62} {total * per_op:7.0f}")
    print("\n  per operation of each kind (apply_op only):")
    for kind, count in sorted(timers.kind_counts.items()):
        seconds = timers.phase_s[f"apply_op: {kind}"]
        sql = timers.sql_s.get(f"apply_op: {kind}", 0.0)
        print(
            f"    {kind:<10} {count:6d} ops: {seconds / count * 1e6:7.0f} µs each "
            f"(SQL {sql / count * 1e6:.0f}, Python {(seconds - sql) / count * 1e6:.0f})"
        )
    print(f"\n  {'SQL statement':<62} {'calls':>7} {'µs/op':>7} {'ms/call':>8}")
    for key_name, seconds in sorted(timers.sql_by_statement_s.items(), key=lambda item: -item[1]):
        calls = timers.sql_calls[key_name]
        print(
            f"  {key_name[:62]:<62} {calls:7d} {seconds * per_op:7.0f} {seconds / calls * 1000:8.2f}"
        )
    if statements:
        print("\n  pg_stat_statements (time inside PostgreSQL, this run):")
        print("\n".join("    " + line for line in statements))
    if profile is not None:
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats(args.cprofile_sort)
        if args.cprofile_filter:
            stats.print_stats(args.cprofile_filter, args.cprofile)
        else:
            stats.print_stats(args.cprofile)
        print(f"\n  cProfile, by {args.cprofile_sort}:")
        print("\n".join("    " + line for line in out.getvalue().splitlines()[4:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
