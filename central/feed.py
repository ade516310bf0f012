"""What stores download: card states after a cursor, in pages (the snapshot for a new store is
``central/snapshot.py``)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.apply import aware
from central.bulk import one_of
from shared.phones import phone_last4
from shared.protocol import CardState, HoldState, LotState

#: Spent lots stay in a card's state this long after their creation, for exact local reversals.
SPENT_LOT_DAYS = 400
#: Most lots in one page of changes (a page always has at least one card). A card's state grows
#: with its purchases (a daily customer carries a few hundred lots), so a page bounded only by
#: its count of cards would be bounded in memory by nothing: at 200 bytes of JSON a lot, this
#: keeps a page near 2 MB, and the memory both sides spend on it near 20 MB.
PAGE_LOTS_MAX = 10_000


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
    lot_query = sa.select(schema.lots).where(
        one_of(schema.lots.c.card, numbers, conn.dialect), kept_lots(today)
    )
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
        one_of(schema.holds.c.card, numbers, conn.dialect), schema.holds.c.state == "active"
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


async def within_lot_budget(conn: AsyncConnection, rows: list[Any], today: date) -> list[Any]:
    """The longest prefix of ``rows`` whose card states carry at most ``PAGE_LOTS_MAX`` lots in
    all, and never less than the first row."""
    if len(rows) <= 1:
        return rows
    lots = schema.lots.c
    counted = await conn.execute(
        sa.select(lots.card, sa.func.count())
        .where(one_of(lots.card, [row.number for row in rows], conn.dialect), kept_lots(today))
        .group_by(lots.card)
    )
    per_card: dict[str, int] = {card: int(count) for card, count in counted.all()}
    total = 0
    for index, row in enumerate(rows):
        total += per_card.get(row.number, 0)
        if total > PAGE_LOTS_MAX and index > 0:
            return rows[:index]
    return rows


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
