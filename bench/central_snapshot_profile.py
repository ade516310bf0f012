"""Where a bootstrap's time goes, per card: the central server writing the snapshot and the agent
applying it, each step timed in-process with the project's own functions.

A companion of ``central_bootstrap.py`` (same seeding), without HTTP and with the two sides run
one after the other, so that every microsecond is attributed to one step:

central (``central/api.py`` ``snapshot`` over ``central/snapshot.py`` ``card_lines``): the cards
chunk query, the lots range query with the grouping of the lots' JSON by card, the holds range
query, the encoding of the lines, gzip (level 1 as shipped; levels 1, 3 and 6 are timed on the
same bytes for comparison). Here the next chunk's queries overlap the encoding as in the server,
so a step's time may include waiting for the other;

agent (``agent/sync.py`` ``_bootstrap`` over ``agent/bootstrap.py``): gunzip and line splitting,
then per batch of ``SNAPSHOT_APPLY_CARDS`` lines, in the writer thread,
``store_snapshot_lines``: validating each line (pydantic ``CardLine``, dates), the wallet's JSON
(``pydantic_core.to_json``), the pending-operations query, the upsert ``executemany`` (its time
includes the parsing, which runs as SQLite asks for each row: the parse steps are subtracted
from it), and the write transaction (queue, BEGIN, COMMIT and the WAL checkpoint); the
replica's phone index is dropped first and built again at the end, as the agent does.

Run from the repository root: ``.venv/bin/python bench/central_snapshot_profile.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from agent import bootstrap as agent_bootstrap
from agent import store as agent_store
from agent.db import Database as AgentDatabase
from agent.sync import SNAPSHOT_APPLY_CARDS
from central import snapshot
from central.api import SNAPSHOT_GZIP_LEVEL
from central.db import Database, head_cursor
from central.program import current_settings
from shared.lots import local_date
from shared.protocol import SnapshotHeader
from shared.settings import ProgramSettings


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


async def central_side(url: str, steps: Steps) -> tuple[list[bytes], bytes]:
    """The snapshot as ``central.api.snapshot`` writes it; returns its chunks and the raw JSON."""
    db = Database(url)
    compressor = zlib.compressobj(SNAPSHOT_GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunks: list[bytes] = []
    raw: list[bytes] = []
    originals = {name: getattr(snapshot, name) for name in ("_lots_between", "_holds_between")}
    original_encode = snapshot._encode

    def timed(name: str, label: str) -> Any:
        async def run(*args: Any) -> Any:
            with steps.step(label):
                return await originals[name](*args)

        return run

    def encode(*args: Any) -> bytes:
        with steps.step("encoding the JSON lines (snapshot._encode)"):
            return original_encode(*args)

    snapshot._lots_between = timed("_lots_between", "lots range query and grouping")  # type: ignore[assignment]
    snapshot._holds_between = timed("_holds_between", "holds range query")  # type: ignore[assignment]
    snapshot._encode = encode  # type: ignore[assignment]
    try:
        async with db.read() as conn:
            head = await head_cursor(conn)
            settings, _ = await current_settings(conn)
            today = local_date(datetime.now(UTC), settings.zone)
            header = SnapshotHeader(
                cursor=head,
                settings=settings,
                cards=0,
                server_time=datetime.now(UTC),
            )
            first = header.model_dump_json().encode() + b"\n"
            raw.append(first)
            chunks.append(compressor.compress(first))
            lines = snapshot.card_lines(conn, today)
            while True:
                with steps.step("cards chunk query (rest of snapshot.card_lines)"):
                    chunk = await anext(lines, None)
                if chunk is None:
                    break
                raw.append(chunk)
                with steps.step(f"gzip level {SNAPSHOT_GZIP_LEVEL} (zlib.compressobj)"):
                    chunks.append(compressor.compress(chunk))
        with steps.step(f"gzip level {SNAPSHOT_GZIP_LEVEL} (zlib.compressobj)"):
            chunks.append(compressor.flush())
    finally:
        for name, fn in originals.items():
            setattr(snapshot, name, fn)
        snapshot._encode = original_encode  # type: ignore[assignment]
        await db.close()
    return chunks, b"".join(raw)


async def agent_side(work_dir: Path, chunks: list[bytes], steps: Steps) -> int:
    """``Syncer._bootstrap`` on a fresh agent database: the writer thread runs
    ``bootstrap.store_snapshot_lines`` on batches of ``SNAPSHOT_APPLY_CARDS`` lines (here one
    batch at a time, without the overlap with the download that the agent has)."""
    db = AgentDatabase(work_dir / "agent.sqlite3")
    await db.open()
    patched = {
        "parse_card": "validating the line (pydantic CardLine) and its dates (parse_card)",
        "to_json": "the wallet's JSON text (pydantic_core.to_json)",
    }
    originals: dict[str, Any] = {name: getattr(agent_bootstrap, name) for name in patched}
    original_pending = agent_store.pending_cards

    def timed(name: str) -> Any:
        def run(*args: Any) -> Any:
            with steps.step(patched[name]):
                return originals[name](*args)

        return run

    for name in patched:
        setattr(agent_bootstrap, name, timed(name))

    def pending_cards(*args: Any) -> Any:
        with steps.step("pending operations query"):
            return original_pending(*args)

    agent_store.pending_cards = pending_cards  # type: ignore[assignment]

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
    dates = agent_bootstrap.DateCheck()
    await db.write(agent_bootstrap.drop_phone_index)  # as ``Syncer._bootstrap`` does
    try:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = b""
        header = None
        batch: list[bytes] = []

        async def store_lines(lines: list[bytes]) -> int:
            def write(conn: sqlite3.Connection) -> int:
                with steps.step("store_snapshot_lines (rest: its loop, rows)"):
                    return agent_bootstrap.store_snapshot_lines(
                        TimedConnection(conn),  # type: ignore[arg-type]
                        lines,
                        dates,
                        datetime.now(UTC),
                    )

            with steps.step("write transaction: queue, BEGIN, COMMIT"):
                return await db.write(write)

        for chunk in chunks:
            with steps.step("gunzip and split lines"):
                pending += decompressor.decompress(chunk)
                *lines, pending = pending.split(b"\n")
            if header is None and lines:
                header = SnapshotHeader.model_validate_json(lines[0])
                lines = lines[1:]
            batch.extend(lines)
            if len(batch) >= SNAPSHOT_APPLY_CARDS:
                count += await store_lines(batch)
                batch = []
        if batch:
            count += await store_lines(batch)
        with steps.step("building the phone index again (at the end)"):
            await db.write(agent_bootstrap.build_phone_index)
    finally:
        for name, fn in originals.items():
            setattr(agent_bootstrap, name, fn)
        agent_store.pending_cards = original_pending  # type: ignore[assignment]
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
            chunks, raw = asyncio.run(central_side(url, central_steps))
            central_steps.report("central server, snapshot", args.cards)
        compressed = sum(len(c) for c in chunks)
        print(
            f"    snapshot {compressed:,} bytes gzip-{SNAPSHOT_GZIP_LEVEL}, {len(raw):,} bytes of JSON "
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
