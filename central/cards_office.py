"""Cards as the office sees them: search with filters, sorting, paging, and a card's page."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import sqlalchemy as sa

from central import schema
from central.apply import aware
from central.db import Database
from central.selection import CardFilter, Selection, cards_query
from shared.phones import phone_last4

CARDS_PAGE_MAX = 500
SortKey = Literal["number", "last_purchase_on", "non_expiring", "expiring"]


def _sums(today: date) -> tuple[Any, Any]:
    lots = schema.lots
    non_expiring = (
        sa.select(sa.func.coalesce(sa.func.sum(lots.c.remaining_kop), 0))
        .where(lots.c.card == schema.cards.c.number, lots.c.expires_on.is_(None))
        .scalar_subquery()
    )
    expiring = (
        sa.select(sa.func.coalesce(sa.func.sum(lots.c.remaining_kop), 0))
        .where(lots.c.card == schema.cards.c.number, lots.c.expires_on >= today)
        .scalar_subquery()
    )
    return non_expiring, expiring


async def search_cards(
    db: Database,
    f: CardFilter,
    today: date,
    *,
    sort: SortKey,
    descending: bool,
    limit: int,
    offset: int,
) -> tuple[int, list[dict[str, Any]]]:
    """Cards matching a filter, with their sums, sorted and paged, and the total count."""
    numbers = cards_query(Selection(filter=f), today).subquery()
    non_expiring, expiring = _sums(today)
    cards = schema.cards
    columns = {
        "number": cards.c.number,
        "last_purchase_on": cards.c.last_purchase_on,
        "non_expiring": non_expiring,
        "expiring": expiring,
    }
    order = columns[sort].desc() if descending else columns[sort].asc()
    if sort == "last_purchase_on":
        # A card that never bought is the least recent, on both databases (PostgreSQL puts
        # NULL first when descending, SQLite last).
        order = order.nulls_last() if descending else order.nulls_first()
    query = (
        sa.select(cards, non_expiring.label("non_expiring"), expiring.label("expiring"))
        .where(cards.c.number.in_(sa.select(numbers.c.number)))
        .order_by(order, cards.c.number)
        .limit(limit)
        .offset(offset)
    )
    async with db.read() as conn:
        total = int(await conn.scalar(sa.select(sa.func.count()).select_from(numbers)) or 0)
        rows = (await conn.execute(query)).all()
    return total, [
        {
            "number": row.number,
            "barcode": row.barcode,
            "status": row.status,
            "phone_last4": phone_last4(row.phone) if row.phone else None,
            "non_expiring_kop": int(row.non_expiring),
            "expiring_kop": int(row.expiring),
            "debt_kop": row.debt_kop,
            "last_purchase_on": row.last_purchase_on.isoformat() if row.last_purchase_on else None,
        }
        for row in rows
    ]


async def card_page(
    db: Database, number: str, today: date, transactions_limit: int = 100
) -> dict[str, Any] | None:
    """A card's page: balance, lots with expiry dates, holds, debt, recent transactions."""
    async with db.read() as conn:
        card = (
            await conn.execute(sa.select(schema.cards).where(schema.cards.c.number == number))
        ).first()
        if card is None:
            return None
        lots = (
            await conn.execute(
                sa.select(schema.lots)
                .where(schema.lots.c.card == number)
                .order_by(schema.lots.c.created_on, schema.lots.c.lot_id)
            )
        ).all()
        holds = (
            await conn.execute(
                sa.select(schema.holds).where(
                    schema.holds.c.card == number, schema.holds.c.state == "active"
                )
            )
        ).all()
        txs = (
            await conn.execute(
                sa.select(schema.transactions)
                .where(schema.transactions.c.card == number)
                .order_by(schema.transactions.c.id.desc())
                .limit(transactions_limit)
            )
        ).all()
        client = (
            await conn.execute(sa.select(schema.clients).where(schema.clients.c.card == number))
        ).first()
    usable = sum(
        lot.remaining_kop
        for lot in lots
        if (lot.expires_on is None or lot.expires_on >= today)
        and (lot.active_from is None or lot.active_from <= today)
    )
    held = sum(hold.amount_kop for hold in holds)
    return {
        "number": card.number,
        "barcode": card.barcode,
        "status": card.status,
        "merged_into": card.merged_into,
        "phone": card.phone,
        "verified": card.verified,
        "client": None
        if client is None
        else {
            "first_name": client.first_name,
            "last_name": client.last_name,
            "middle_name": client.middle_name,
            "email": client.email,
            "birth_date": client.birth_date.isoformat() if client.birth_date else None,
            "consent_personal_data": client.consent_personal_data,
            "consent_advertising": client.consent_advertising,
        },
        "balance": {
            "available_kop": max(0, usable - held - card.debt_kop),
            "usable_kop": usable,
            "held_kop": held,
            "debt_kop": card.debt_kop,
        },
        "lots": [
            {
                "lot_id": lot.lot_id,
                "amount_kop": lot.amount_kop,
                "remaining_kop": lot.remaining_kop,
                "created_on": lot.created_on.isoformat(),
                "expires_on": lot.expires_on.isoformat() if lot.expires_on else None,
                "active_from": lot.active_from.isoformat() if lot.active_from else None,
                "source": lot.source,
                "source_ref": lot.source_ref,
            }
            for lot in lots
        ],
        "holds": [
            {
                "hold_id": h.hold_id,
                "amount_kop": h.amount_kop,
                "store_id": h.store_id,
                "expires_at": aware(h.expires_at).isoformat(),
            }
            for h in holds
        ],
        "transactions": [
            {
                "id": t.id,
                "kind": t.kind,
                "amount_kop": t.amount_kop,
                "store_id": t.store_id,
                "receipt_id": t.receipt_id,
                "campaign_id": t.campaign_id,
                "received_at": aware(t.received_at).isoformat(),
            }
            for t in txs
        ],
        "last_purchase_on": card.last_purchase_on.isoformat() if card.last_purchase_on else None,
    }
