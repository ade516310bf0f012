"""What a list parameter costs SQLite: ``IN (?, ?, …)`` against ``IN (SELECT value FROM
json_each(?))``.

Not a test: it prints figures. Python's ``sqlite3`` caches the last 128 prepared statements of a
connection, and with a ``?`` per value every length of list is a statement of its own. The
script queries a table of 200,000 lots by ``--queries`` lists of 1 to ``--max-values`` random
cards each way, and prints the time per query and what SQLite holds afterwards
(``sqlite3_memory_used``, the page cache included, so only the difference between the two
counts). See ``docs/testing.md`` (memory under the full chain).

Run from the repository root: ``.venv/bin/python bench/sqlite_in_lists.py``.
"""

from __future__ import annotations

import _sqlite3
import argparse
import ctypes
import json
import random
import sqlite3
import time

LOTS = 200_000
CARDS = 50_000


def memory_used() -> int:
    """Bytes SQLite has allocated in this process (all connections)."""
    used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    used.restype = ctypes.c_int64
    return int(used())


def database() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE lots (lot_id TEXT PRIMARY KEY, card TEXT, remaining_kop INTEGER)")
    conn.execute("CREATE INDEX lots_card ON lots(card)")
    conn.executemany(
        "INSERT INTO lots VALUES (?, ?, ?)",
        ((f"L{i}", f"C{i % CARDS}", i) for i in range(LOTS)),
    )
    return conn


def run(way: str, queries: int, max_values: int, seed: int) -> None:
    conn = database()
    rng = random.Random(seed)
    before = memory_used()
    started = time.perf_counter()
    rows = 0
    for _ in range(queries):
        cards = [f"C{rng.randrange(CARDS)}" for _ in range(rng.randint(1, max_values))]
        if way == "one ? per value":
            marks = ",".join("?" * len(cards))
            cursor = conn.execute(f"SELECT * FROM lots WHERE card IN ({marks})", cards)
        else:
            cursor = conn.execute(
                "SELECT * FROM lots WHERE card IN (SELECT value FROM json_each(?))",
                (json.dumps(cards),),
            )
        rows += len(cursor.fetchall())
    elapsed = time.perf_counter() - started
    grown = (memory_used() - before) / 1024
    print(
        f"  {way:<18} {elapsed / queries * 1000:6.2f} ms a query, {rows:,} rows; "
        f"SQLite memory {grown:+,.0f} KiB"
    )
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--max-values", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        f"SQLite {sqlite3.sqlite_version}: {args.queries} queries of 1–{args.max_values} cards "
        f"over {LOTS:,} lots"
    )
    for way in ("one ? per value", "json_each(?)"):
        run(way, args.queries, args.max_values, args.seed)


if __name__ == "__main__":
    main()
