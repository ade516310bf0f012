"""What stores download: card states after a cursor, in pages (the snapshot for a new store is
``central/snapshot.py``)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.apply import aware
from shared.phones import phone_last4
from shared.protocol import CardState, HoldState, LotState

#: Spent lots stay in a card's state this long after their creation, for exact local reversals.
SPENT_LOT_DAYS = 400


def kept_lots(today: date) -> sa.ColumnElement[bool]:
    """The lots a card state carries: with points left, or spent but unexpired and recent."""
    lots = schema.lots.c
    return sa.or_(
        lots.remaining_kop > 0,
        sa.and_(
            sa.or_(lots.expires_on.is_(None), lots.expires_on >= today),
            lots.created_on >= today - timedelta(days=SPENT_LOT_DAYS),
        ),
    )


async def card_states(conn: AsyncConnection, rows: list[Any], today: date) -> list[CardState]:
    """Card states for these ``cards`` rows: unspent or recent lots, active holds."""
    numbers = [row.number for row in rows]
    if not numbers:
        return []
    lots_by_card: dict[str, list[LotState]] = {}
    lot_query = sa.select(schema.lots).where(schema.lots.c.card.in_(numbers), kept_lots(today))
    for lot in (await conn.execute(lot_query.order_by(schema.lots.c.lot_id))).all():
        lots_by_card.setdefault(lot.card, []).append(
            LotState(
                id=lot.lot_id,
                amount=lot.amount_kop,
                remaining=lot.remaining_kop,
                created_on=lot.created_on.isoformat(),
                expires_on=lot.expires_on.isoformat() if lot.expires_on else None,
                active_from=lot.active_from.isoformat() if lot.active_from else None,
                source=lot.source,
                ref=lot.source_ref,
            )
        )
    holds_by_card: dict[str, list[HoldState]] = {}
    hold_query = sa.select(schema.holds).where(
        schema.holds.c.card.in_(numbers), schema.holds.c.state == "active"
    )
    for hold in (await conn.execute(hold_query)).all():
        holds_by_card.setdefault(hold.card, []).append(
            HoldState(
                id=hold.hold_id,
                amount=hold.amount_kop,
                expires_at=aware(hold.expires_at).isoformat(),
            )
        )
    return [
        CardState(
            number=row.number,
            barcode=row.barcode,
            status=row.status,
            merged_into=row.merged_into,
            phone_hash=row.phone_hash,
            phone_last4=phone_last4(row.phone) if row.phone else None,
            verified=row.verified,
            debt=row.debt_kop,
            lots=lots_by_card.get(row.number, []),
            holds=holds_by_card.get(row.number, []),
            last_purchase_on=row.last_purchase_on.isoformat() if row.last_purchase_on else None,
            cursor=row.cursor,
        )
        for row in rows
    ]


async def changed_cards(
    conn: AsyncConnection, cursor: int, after_card: str | None, limit: int
) -> list[Any]:
    """``cards`` rows changed after ``(cursor, after_card)``, in feed order."""
    query = sa.select(schema.cards)
    if after_card is None:
        query = query.where(schema.cards.c.cursor > cursor)
    else:
        query = query.where(
            sa.or_(
                schema.cards.c.cursor > cursor,
                sa.and_(schema.cards.c.cursor == cursor, schema.cards.c.number > after_card),
            )
        )
    query = query.order_by(schema.cards.c.cursor, schema.cards.c.number).limit(limit)
    return list((await conn.execute(query)).all())
