"""A store of release v0.1.0 upgraded in place: its journal, with operations it never uploaded,
reaches the upgraded central server exactly once, booked as the store computed it.

The databases are those ``tests/fixtures/v0_1_0/make.py`` wrote with the release itself: a
central server and store ``s1``, which recorded four operations that synced and seven it never
uploaded (a sale with a redemption authorised online, a partial return, two holds and a release,
a registration and a sale on the new card).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from central import schema
from central.apply import aware
from tests.e2e.system import System, ledger_balances, query
from tests.e2e.till import kop

FIXTURE = Path(__file__).parents[1] / "fixtures" / "v0_1_0"


def restore(sql_name: str, path: Path) -> None:
    """A database of the release, from its SQL text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript((FIXTURE / sql_name).read_text(encoding="utf-8"))


async def test_a_store_of_v0_1_0_uploads_its_unsent_operations_after_the_upgrade(
    tmp_path: Path,
) -> None:
    central_path = tmp_path / "central" / "central.sqlite3"
    restore("central.sql", central_path)
    url = f"sqlite+aiosqlite:///{central_path}"
    system = System(tmp_path, url)
    try:
        system.tokens["s1"] = (FIXTURE / "token.txt").read_text().strip()
        await system.central.start()  # migrates the release's database first
        agent = system.agent("s1")
        restore("agent.sql", agent.data_dir / "agent.sqlite3")
        with sqlite3.connect(agent.data_dir / "agent.sqlite3") as conn:
            journal = conn.execute("SELECT seq, op_id, kind FROM journal ORDER BY seq").fetchall()
            (acked,) = conn.execute("SELECT value FROM meta WHERE key = 'acked_seq'").fetchone()
        assert (len(journal), json.loads(acked)) == (11, 4)
        await system.start_agents("s1")
        await system.settle("s1")

        rows = await query(
            url,
            sa.select(
                schema.store_ops.c.seq,
                schema.store_ops.c.op_id,
                schema.store_ops.c.kind,
                schema.store_ops.c.status,
                schema.store_ops.c.differences,
            )
            .where(schema.store_ops.c.store_id == "s1")
            .order_by(schema.store_ops.c.seq),
        )
        # Every operation exactly once, under its own id, applied as the store computed it.
        assert [(r.seq, r.op_id, r.kind) for r in rows] == journal
        assert {r.status for r in rows} == {"applied"}
        assert [r.differences for r in rows] == [None] * 11
        # The till sees what the ledger holds.
        till = system.till("s1")
        ledger = await ledger_balances(url)
        cards = await query(url, sa.select(schema.cards.c.number))
        assert len(cards) == 3
        for (number,) in cards:
            balance = await till.balance(number)
            assert kop(balance["available"]) + kop(balance["held"]) == ledger[number], number
        # The release's online authorisation ended long ago (its two minutes passed while the
        # store was being upgraded); the released hold is released, the other one still holds.
        holds = {
            row.hold_id: row
            for row in await query(
                url,
                sa.select(schema.holds.c.hold_id, schema.holds.c.state, schema.holds.c.expires_at),
            )
        }
        still = aware(holds["H-2"].expires_at) > datetime.now(UTC)  # a week from the fixture's day
        assert {hold_id: row.state for hold_id, row in holds.items()} == {
            "auth:s1:R-3": "expired",
            "H-1": "released",
            "H-2": "active" if still else "expired",
        }
        await system.check_cli()
    finally:
        await system.close()
