"""The expiry job: lots past their last day burn, one expiry debit per card and day."""

from __future__ import annotations

import logging
import time
from datetime import date, datetime

import sqlalchemy as sa

from central import schema
from central.bulk import one_of
from central.db import Database, next_cursor
from central.ledger import LedgerTx, TxRow, allocations_json
from central.metrics import record_expiry_run
from shared.lots import burn_expired

log = logging.getLogger(__name__)

#: Cards burned in one transaction, so that a large expiry never holds locks for long.
EXPIRY_CARDS_PER_TX = 2000


async def expire(db: Database, as_of: date, now: datetime) -> tuple[int, int]:
    """Burn every lot whose last day is before ``as_of``; returns (cards, kopecks burned).

    Running it again for the same day burns nothing more.  The run is recorded (when it
    ended, how long it took, what it burned) for the metrics of every instance.
    """
    started_s = time.monotonic()
    cards_done = burned_total = lots_done = 0
    after = ""
    while True:
        async with db.read() as conn:
            numbers = list(
                (
                    await conn.scalars(
                        sa.select(schema.lots.c.card)
                        .where(
                            schema.lots.c.expires_on < as_of,
                            schema.lots.c.remaining_kop > 0,
                            schema.lots.c.card > after,
                        )
                        .group_by(schema.lots.c.card)
                        .order_by(schema.lots.c.card)
                        .limit(EXPIRY_CARDS_PER_TX)
                    )
                ).all()
            )
        if not numbers:
            break
        async with db.write() as conn:
            tx = LedgerTx(conn, now, lock=not db.sqlite)
            await tx.load(numbers)
            for number in numbers:
                card = tx.cards.get(number)
                if card is None:
                    continue
                card.wallet, burned = burn_expired(card.wallet, as_of)
                amount = sum(a.amount_kop for a in burned)
                if amount:
                    card.changed = True
                    tx.record(
                        TxRow(
                            number,
                            "expiry",
                            -amount,
                            allocations_json(burned),
                            note=f"expired before {as_of}",
                        )
                    )
                    cards_done += 1
                    burned_total += amount
                    lots_done += sum(1 for a in burned if a.amount_kop)
            await tx.flush()
        after = numbers[-1]
    async with db.write() as conn:
        # Holds past their time set nothing aside any more; close them, and let stores know.
        expired_cards = sa.select(schema.holds.c.card).where(
            schema.holds.c.state == "active", schema.holds.c.expires_at <= now
        )
        touched = list((await conn.scalars(expired_cards.distinct())).all())
        if touched:
            cursor = await next_cursor(conn)
            await conn.execute(
                schema.holds.update()
                .where(schema.holds.c.state == "active", schema.holds.c.expires_at <= now)
                .values(state="expired")
            )
            await conn.execute(
                schema.cards.update()
                .where(one_of(schema.cards.c.number, touched, conn.dialect))
                .values(cursor=cursor)
            )
        await record_expiry_run(conn, started_s, lots_done, cards_done)
    log.info("expiry as of %s: %d cards, %d kopecks burned", as_of, cards_done, burned_total)
    return cards_done, burned_total
