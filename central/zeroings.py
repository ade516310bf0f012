"""Zeroings (обнуление бонусов): all non-expiring points of every selected card whose last
purchase is strictly before a date, one debit per card; cancelling one gives exactly those
amounts back.  Run in chunks by ``central/office_ops.py``."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.apply import aware
from central.bulk import one_of
from central.db import Database, next_cursor
from central.office_ops import (
    Chunk,
    begin_cancel,
    cards_after,
    credit_set,
    describe,
    existing_operation,
    in_chunks,
    json_pairs_agg,
    start_operation,
)
from central.selection import Selection, cards_query

lots = schema.lots
cards = schema.cards
transactions = schema.transactions


async def run_zeroing(
    db: Database,
    *,
    zeroing_id: str,
    before_date: date,
    note: str,
    selection: Selection,
    today: date,
    now: datetime,
    login: str | None,
) -> dict[str, Any]:
    """Debit all non-expiring points of the selected cards inactive since before ``before_date``."""
    body = {
        "before_date": before_date,
        "note": note,
        "selection": selection.model_dump(mode="json"),
    }
    await start_operation(db, zeroing_id, "zeroing", body, login, now)
    return describe(await drive_zeroing(db, zeroing_id, today))


async def drive_zeroing(db: Database, zeroing_id: str, today: date) -> Any:
    async with db.read() as conn:
        row = await existing_operation(conn, zeroing_id)
    assert row is not None
    selection = Selection.from_stored(row.selection)
    now = aware(row.created_at)
    non_expiring = sa.and_(lots.c.expires_on.is_(None), lots.c.remaining_kop > 0)

    async def apply(conn: AsyncConnection, chunk: Chunk) -> dict[str, int]:
        inactive = cards_query(
            selection, today, within=lambda column: chunk.of(column, conn)
        ).where(
            sa.or_(cards.c.last_purchase_on.is_(None), cards.c.last_purchase_on < row.before_date),
            sa.exists().where(lots.c.card == cards.c.number, non_expiring),
        )
        numbers = [str(number) for number in (await conn.execute(inactive)).scalars()]
        if not numbers:
            return {"cards": 0, "total_kop": 0}
        target = sa.and_(non_expiring, one_of(lots.c.card, numbers, conn.dialect))
        await conn.execute(
            transactions.insert().from_select(
                ["card", "kind", "amount_kop", "lots", "campaign_id", "received_at", "note"],
                sa.select(
                    lots.c.card,
                    sa.literal("zeroing"),
                    -sa.func.sum(lots.c.remaining_kop),
                    json_pairs_agg(conn, lots.c.lot_id, lots.c.remaining_kop),
                    sa.literal(zeroing_id),
                    sa.literal(now, sa.DateTime(timezone=True)),
                    sa.literal(row.note),
                )
                .where(target)
                .group_by(lots.c.card),
            )
        )
        total = int(
            await conn.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(lots.c.remaining_kop), 0)).where(target)
            )
            or 0
        )
        await conn.execute(lots.update().where(target).values(remaining_kop=0))
        cursor = await next_cursor(conn)
        await conn.execute(
            cards.update()
            .where(one_of(cards.c.number, numbers, conn.dialect))
            .values(cursor=cursor)
        )
        return {"cards": len(numbers), "total_kop": total}

    return await in_chunks(
        db, zeroing_id, phase="running", next_chunk=cards_after, apply=apply, totals="cards"
    )


async def cancel_zeroing(
    db: Database, zeroing_id: str, today: date, now: datetime, login: str | None
) -> dict[str, Any]:
    """Give back exactly what the zeroing took, as non-expiring points (debt paid first)."""
    totals = {"returned_kop": 0, "cards": 0}
    await begin_cancel(db, zeroing_id, "zeroing", "Обнуление не найдено", now, login, totals)
    return describe(await drive_cancel_zeroing(db, zeroing_id, today))


async def drive_cancel_zeroing(db: Database, zeroing_id: str, today: date) -> Any:
    async with db.read() as conn:
        row = await existing_operation(conn, zeroing_id)
    assert row is not None
    now = aware(row.cancelled_at)
    taken = sa.and_(transactions.c.campaign_id == zeroing_id, transactions.c.kind == "zeroing")

    async def next_chunk(
        conn: AsyncConnection, after: str | None, size: int
    ) -> tuple[Chunk, str] | None:
        # In the order of the zeroing's transactions (its journal index), not of card numbers:
        # the chunk lists its cards and the position is the last transaction's id.
        rows = (
            await conn.execute(
                sa.select(transactions.c.id, transactions.c.card)
                .where(taken, transactions.c.id > int(after or 0))
                .order_by(transactions.c.id)
                .limit(size)
            )
        ).all()
        if not rows:
            return None
        return Chunk(None, numbers=tuple(row.card for row in rows)), str(rows[-1].id)

    async def apply(conn: AsyncConnection, chunk: Chunk) -> dict[str, int]:
        amounts = sa.select(
            transactions.c.card.label("number"), (-transactions.c.amount_kop).label("amount")
        ).where(taken, chunk.of(transactions.c.card, conn))
        count, total = await credit_set(
            conn,
            campaign_id=zeroing_id,
            lot_suffix="back",
            source="zeroing_cancel",
            kind="zeroing_cancel",
            expires_on=None,
            today=today,
            now=now,
            amounts=amounts,
            chunk=chunk,
            note=f"отмена обнуления {zeroing_id}",
        )
        return {"returned_kop": total, "cards": count}

    return await in_chunks(
        db,
        zeroing_id,
        phase="cancelling",
        next_chunk=next_chunk,
        apply=apply,
        totals="cancel_result",
    )
