"""``bonus-central expire``: lots burn the day after their inclusive last day, one expiry
transaction per card and run, and a second run for the same day burns nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import date
from typing import Any

import sqlalchemy as sa

from central import schema
from central.db import head_cursor
from tests.central.conftest import Central, StoreOps
from tests.honest import NON_EXPIRING, day_expiring_on

A, B, C, D = "1000000001", "1000000002", "1000000003", "1000000004"


def expire_cli(url: str, as_of: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BONUS_CENTRAL_")}
    env["BONUS_CENTRAL_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "central.cli", "expire", "--as-of", as_of],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def expire(central: Central, as_of: str) -> str:
    done = await asyncio.to_thread(expire_cli, central.url, as_of)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def remaining(central: Central) -> dict[str, int]:
    """Each lot's remainder, by the receipt that accrued it."""
    rows = await central.rows(sa.select(schema.lots.c.source_ref, schema.lots.c.remaining_kop))
    return dict(rows)


async def receipts_of_lots(central: Central) -> dict[str, str]:
    rows = await central.rows(sa.select(schema.lots.c.lot_id, schema.lots.c.source_ref))
    return dict(rows)


async def expiry_rows(central: Central) -> list[Any]:
    return await central.rows(
        sa.select(
            schema.transactions.c.card, schema.transactions.c.amount_kop, schema.transactions.c.lots
        )
        .where(schema.transactions.c.kind == "expiry")
        .order_by(schema.transactions.c.id)
    )


async def test_expire_burns_exactly_the_lots_past_their_last_day(
    central: Central, s1: StoreOps
) -> None:
    ops = [s1.register(card, f"91600000{index:02d}") for index, card in enumerate((A, B, C, D))]
    ops += [
        s1.sale(A, accrued=1000, day=day_expiring_on(date(2026, 5, 29)), receipt_id="L1"),
        s1.sale(A, accrued=500, day=day_expiring_on(date(2026, 5, 30)), receipt_id="L2"),
        s1.sale(A, accrued=200, day=day_expiring_on(date(2026, 6, 30)), receipt_id="L5"),
        s1.sale(B, accrued=700, day=day_expiring_on(date(2026, 5, 30)), receipt_id="L3"),
        s1.sale(B, accrued=300, version=NON_EXPIRING, receipt_id="L4"),
        s1.sale(C, accrued=1000, day=day_expiring_on(date(2026, 5, 30)), receipt_id="L6"),
        s1.sale(C, redeemed=400, day=date(2026, 5, 2), receipt_id="C-REDEEM"),
        s1.sale(D, accrued=100, day=day_expiring_on(date(2026, 6, 15)), receipt_id="L7"),
        s1.sale(D, accrued=150, day=day_expiring_on(date(2026, 6, 20)), receipt_id="L8"),
    ]
    status, body = await central.upload(*ops)
    assert status == 200, body
    assert {r["status"] for r in body["results"]} == {"applied"}

    # A lot can pay on its last day: on 30 May only the lot that ended on 29 May burns.
    assert (
        await expire(central, "2026-05-30")
        == "expired as of 2026-05-30: 1 cards, 10.00 points burned"
    )
    assert await remaining(central) == {
        "L1": 0,
        "L2": 500,
        "L5": 200,
        "L3": 700,
        "L4": 300,
        "L6": 600,
        "L7": 100,
        "L8": 150,
    }
    assert [(row.card, row.amount_kop) for row in await expiry_rows(central)] == [(A, -1000)]
    async with central.db.read() as conn:
        before = await head_cursor(conn)

    # By 30 June everything that ended before it burns; D's two lots in one transaction.
    assert (
        await expire(central, "2026-06-30")
        == "expired as of 2026-06-30: 4 cards, 20.50 points burned"
    )
    assert await remaining(central) == {
        "L1": 0,
        "L2": 0,
        "L5": 200,
        "L3": 0,
        "L4": 300,
        "L6": 0,
        "L7": 0,
        "L8": 0,
    }
    rows = await expiry_rows(central)
    assert sorted((row.card, row.amount_kop) for row in rows[1:]) == [
        (A, -500),
        (B, -700),
        (C, -600),
        (D, -250),
    ]
    by_card = {row.card: row.lots for row in rows[1:]}
    receipts = await receipts_of_lots(central)
    assert sorted([receipts[lot], amount] for lot, amount in by_card[D]) == [
        ["L7", 100],
        ["L8", 150],
    ]
    # Stores hear of the burn through the feed.
    changed = await central.rows(
        sa.select(schema.cards.c.number).where(schema.cards.c.cursor > before)
    )
    assert sorted(number for (number,) in changed) == [A, B, C, D]

    # Again for the same day: nothing more.
    assert (
        await expire(central, "2026-06-30")
        == "expired as of 2026-06-30: 0 cards, 0.00 points burned"
    )
    assert len(await expiry_rows(central)) == 5
    report = await central.invariants()
    assert report.ok, report.problems
    assert report.remainders_total_kop == 500
