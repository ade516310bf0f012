"""Where a bootstrap's time goes, per card: the central server writing the snapshot and the agent
applying it, each step timed in-process with the project's own functions.

A companion of ``central_bootstrap.py`` (same seeding), without HTTP and with the two sides run
one after the other, so that every microsecond is attributed to one step:

central (``central/api.py`` ``snapshot``): the cards page query, ``feed.card_states`` (its lots
and holds queries, building the pydantic states), ``model_dump_json`` of every state, gzip
(level 6 as shipped; levels 1 and 3 are timed on the same bytes for comparison);

agent (``agent/sync.py`` ``_bootstrap`` and ``_store_states``): gunzip and line splitting,
``CardState.model_validate_json`` per line, then per batch of 5,000 ``apply_card_states``: the
pending-operations query, ``base_wallet``, the two ``store.dumps`` (base and working wallet),
the upsert ``executemany``, and the commit.

Run from the repository root: ``.venv/bin/python bench/central_snapshot_profile.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import random
import sqlite3
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parent))

from central_common import (
    MACHINE,
    code_source,
    database,
    load_text,
    prepare_central,
    rm_tree,
    seed_cards,
    seed_central,
)
from sqlalchemy import event

from agent import replica as agent_replica
from agent import store as agent_store
from agent.db import Database as AgentDatabase
from central import feed
from central.api import SNAPSHOT_CHUNK
from central.db import Database, head_cursor
from central.program import current_settings
from shared.lots import local_date
from shared.protocol import CardState, SnapshotHeader
from shared.settings import ProgramSettings

APPLY_BATCH = 5000  # agent.sync.SNAPSHOT_APPLY_CARDS


class Steps:
    """Seconds per named step; nested steps are taken out of their parent."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.stack.append(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.stack.pop()
            self.seconds[name] += elapsed
            if self.stack:
                self.seconds[self.stack[-1]] -= elapsed

    def report(self, title: str, cards: int) -> float:
        total = sum(self.seconds.values())
        print(
            f"\n  {title}: {total:.1f} s for {cards:,} cards = {total / cards * 1e6:.0f} µs/card "
            f"({cards / total:,.0f} cards/s)"
        )
        for name, seconds in sorted(self.seconds.items(), key=lambda item: -item[1]):
            print(f"    {seconds / cards * 1e6:7.1f} µs/card {seconds / total:6.1%}  {name}")
        return total


async def central_side(url: str, key_hex: str, steps: Steps) -> tuple[list[bytes], bytes]:
    """The snapshot as ``central.api.snapshot`` writes it; returns its chunks and the raw JSON."""
    db = Database(url)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunks: list[bytes] = []
    raw: list[bytes] = []
    try:
        async with db.read() as conn:
            head = await head_cursor(conn)
            settings, _ = await current_settings(conn)
            today = local_date(datetime.now(UTC), settings.zone)
            header = SnapshotHeader(
                cursor=head,
                settings=settings,
                phone_key=key_hex,
                cards=0,
                server_time=datetime.now(UTC),
            )
            first = header.model_dump_json().encode() + b"\n"
            raw.append(first)
            chunks.append(compressor.compress(first))
            after: str | None = None
            while True:
                with steps.step("cards page query (feed.cards_page)"):
                    rows = await feed.cards_page(conn, after, SNAPSHOT_CHUNK)
                if not rows:
                    break
                with steps.step("feed.card_states: lots and holds queries, pydantic states"):
                    states = await feed.card_states(conn, rows, today)
                with steps.step("model_dump_json of every state"):
                    chunk = b"".join(state.model_dump_json().encode() + b"\n" for state in states)
                raw.append(chunk)
                with steps.step("gzip level 6 (zlib.compressobj)"):
                    chunks.append(compressor.compress(chunk))
                after = rows[-1].number
        with steps.step("gzip level 6 (zlib.compressobj)"):
            chunks.append(compressor.flush())
    finally:
        await db.close()
    return chunks, b"".join(raw)


def _split_card_states_time(url: str, cards: int) -> None:
    """Inside ``feed.card_states``: its queries against building the models (one more pass)."""

    async def run() -> dict[str, float]:
        db = Database(url)
        where = ["pages"]
        sql_s: dict[str, float] = defaultdict(float)
        wall_s: dict[str, float] = defaultdict(float)
        started_sql = [0.0]

        @event.listens_for(db.read_engine.sync_engine, "before_cursor_execute")
        def _before(*args: Any) -> None:
            started_sql[0] = time.perf_counter()

        @event.listens_for(db.read_engine.sync_engine, "after_cursor_execute")
        def _after(*args: Any) -> None:
            sql_s[where[0]] += time.perf_counter() - started_sql[0]

        try:
            async with db.read() as conn:
                today = local_date(datetime.now(UTC), ProgramSettings().zone)
                after = None
                while True:
                    where[0] = "pages"
                    started = time.perf_counter()
                    rows = await feed.cards_page(conn, after, SNAPSHOT_CHUNK)
                    wall_s["pages"] += time.perf_counter() - started
                    if not rows:
                        break
                    where[0] = "states"
                    started = time.perf_counter()
                    await feed.card_states(conn, rows, today)
                    wall_s["states"] += time.perf_counter() - started
                    after = rows[-1].number
        finally:
            await db.close()
        return {
            "pages_sql": sql_s["pages"],
            "pages": wall_s["pages"],
            "states_sql": sql_s["states"],
            "states": wall_s["states"],
        }

    t = asyncio.run(run())
    print(
        f"    second pass, SQL (driver execute) against the rest: cards page "
        f"{t['pages_sql'] / cards * 1e6:.1f} + {(t['pages'] - t['pages_sql']) / cards * 1e6:.1f}"
        f" µs/card; feed.card_states {t['states_sql'] / cards * 1e6:.1f} (lots and holds "
        f"queries, IN lists of {SNAPSHOT_CHUNK}) + {(t['states'] - t['states_sql']) / cards * 1e6:.1f}"
        f" µs/card (fetching rows, building LotState/HoldState/CardState)"
    )


async def agent_side(work_dir: Path, chunks: list[bytes], steps: Steps) -> int:
    """``Syncer._bootstrap`` + ``_store_states`` on a fresh agent database."""
    db = AgentDatabase(work_dir / "agent.sqlite3")
    await db.open()
    original_base_wallet = agent_replica.base_wallet
    original_dumps = agent_store.dumps

    def base_wallet(state: CardState) -> Any:
        with steps.step("base_wallet (LotState.model_dump → wallet_from_json)"):
            return original_base_wallet(state)

    def dumps(value: Any) -> str:
        with steps.step("store.dumps ×2 (base and wallet, sort_keys)"):
            return original_dumps(value)

    agent_replica.base_wallet = base_wallet  # type: ignore[assignment]
    agent_store.dumps = dumps  # type: ignore[assignment]
    original_wallet_to_json = agent_replica.wallet_to_json

    def wallet_to_json(wallet: Any) -> Any:
        with steps.step("wallet_to_json ×2"):
            return original_wallet_to_json(wallet)

    agent_replica.wallet_to_json = wallet_to_json  # type: ignore[assignment]
    # The agent's database API: aiosqlite connections (up to commit 72fb0f2), or one writer
    # thread running functions over a sqlite3 connection (later commits).
    threaded = "fn" in inspect.signature(AgentDatabase.write).parameters
    original_executemany = aiosqlite.Connection.executemany

    async def executemany(self: Any, sql: str, parameters: Any) -> Any:
        with steps.step("upsert executemany (SQLite)"):
            return await original_executemany(self, sql, parameters)

    aiosqlite.Connection.executemany = executemany  # type: ignore[method-assign]

    class TimedConnection:
        """A sqlite3 connection whose ``executemany`` is timed (its class cannot be patched)."""

        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def executemany(self, sql: str, parameters: Any) -> Any:
            with steps.step("upsert executemany (SQLite)"):
                return self._conn.executemany(sql, parameters)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

    count = 0
    try:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = b""
        header = None
        batch: list[CardState] = []

        async def store_states(states: list[CardState]) -> None:
            with steps.step("write transaction: BEGIN, meta, COMMIT"):
                if threaded:

                    def write(conn: sqlite3.Connection) -> None:
                        acked = int(agent_store.get_meta(conn, "acked_seq") or 0)
                        with steps.step("apply_card_states (rest: its loop, pending-ops query)"):
                            agent_replica.apply_card_states(
                                TimedConnection(conn),  # type: ignore[arg-type]
                                states,
                                acked,
                                datetime.now(UTC),
                            )

                    await db.write(write)  # type: ignore[call-arg]
                    return
                async with db.write() as conn:  # type: ignore[call-arg]
                    acked = int(await agent_store.get_meta(conn, "acked_seq") or 0)
                    with steps.step("apply_card_states (rest: its loop, pending-ops query)"):
                        await agent_replica.apply_card_states(  # type: ignore[misc]
                            conn, states, acked, datetime.now(UTC)
                        )

        for chunk in chunks:
            with steps.step("gunzip and split lines"):
                pending += decompressor.decompress(chunk)
                *lines, pending = pending.split(b"\n")
            for line in lines:
                if header is None:
                    header = SnapshotHeader.model_validate_json(line)
                    continue
                with steps.step("CardState.model_validate_json per line"):
                    batch.append(CardState.model_validate_json(line))
                if len(batch) >= APPLY_BATCH:
                    await store_states(batch)
                    count += len(batch)
                    batch = []
        if batch:
            await store_states(batch)
            count += len(batch)
    finally:
        agent_replica.base_wallet = original_base_wallet
        agent_store.dumps = original_dumps
        agent_replica.wallet_to_json = original_wallet_to_json
        aiosqlite.Connection.executemany = original_executemany  # type: ignore[method-assign]
        await db.close()
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Per-card cost of each step of a bootstrap: the central server's snapshot and "
        "the agent's apply, in-process with the project's functions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--cards", type=int, default=100_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", help="an empty PostgreSQL database instead of a throw-away one")
    parser.add_argument("--dir", help="where the temporary databases go")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sqlite-analyze", action="store_true", help="ANALYZE after seeding")
    args = parser.parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="central-snapshot-profile-", dir=args.dir))
    print(f"snapshot profile: {MACHINE}; {args.cards:,} cards on {args.db}")
    print(f"  {code_source()}")
    try:
        with database(args.db, work_dir, args.pg_url, "bench_snapshot") as url:
            key, _ = asyncio.run(prepare_central(url, ["snap-001"]))
            today = local_date(datetime.now(UTC), ProgramSettings().zone)
            seed_central(
                url,
                seed_cards(0, args.cards, today, random.Random(args.seed)),
                key,
                sqlite_analyze=args.sqlite_analyze,
            )
            print(f"  {load_text()}")
            central_steps = Steps()
            chunks, raw = asyncio.run(central_side(url, key.hex(), central_steps))
            central_steps.report("central server, snapshot", args.cards)
            _split_card_states_time(url, args.cards)
        compressed = sum(len(c) for c in chunks)
        print(
            f"    snapshot {compressed:,} bytes gzip-6, {len(raw):,} bytes of JSON "
            f"({compressed / args.cards:.0f} and {len(raw) / args.cards:.0f} bytes/card)"
        )
        for level in (1, 3, 6):
            started = time.perf_counter()
            size = len(zlib.compress(raw, level))
            elapsed = time.perf_counter() - started
            print(
                f"    gzip level {level}: {elapsed / args.cards * 1e6:5.1f} µs/card, "
                f"{size / args.cards:5.0f} bytes/card"
            )
        agent_steps = Steps()
        applied = asyncio.run(agent_side(work_dir, chunks, agent_steps))
        agent_steps.report("agent, applying the snapshot", applied)
        print(f"  {load_text()}")
    finally:
        rm_tree(work_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
