"""Campaigns (бонус-акции): a fixed amount credited to every selected card as a lot of its own
(paying any debt first); cancelling one debits what is still unspent of each lot and reports
what had been spent.  Run in chunks by ``central/office_ops.py``; a campaign or zeroing left
running is carried on by ``carry_on``."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.apply import aware
from central.db import Database, next_cursor
from central.office_ops import (
    CAMPAIGN_ID_CHARS_MAX,
    Chunk,
    begin_cancel,
    cards_after,
    credit_set,
    describe,
    existing_operation,
    in_chunks,
    json_pair,
    range_after,
    start_operation,
)
from central.program import current_settings
from central.selection import Selection, cards_query
from central.zeroings import drive_cancel_zeroing, drive_zeroing
from shared.errors import BonusError, ErrorCode
from shared.lots import local_date

__all__ = ["CAMPAIGN_ID_CHARS_MAX", "campaign_cards", "cancel_campaign", "carry_on", "run_campaign"]

log = logging.getLogger(__name__)
lots = schema.lots
cards = schema.cards
transactions = schema.transactions


async def run_campaign(
    db: Database,
    *,
    campaign_id: str,
    amount_kop: int,
    expires_on: date | None,
    note: str,
    selection: Selection,
    today: date,
    now: datetime,
    login: str | None,
) -> dict[str, Any]:
    """Credit the selected cards; idempotent on ``campaign_id`` (a re-submission of one still
    running carries it on)."""
    if amount_kop <= 0:
        raise BonusError(ErrorCode.VALIDATION_ERROR, field="amount", reason="must be positive")
    if expires_on is not None and expires_on < today:
        raise BonusError(ErrorCode.VALIDATION_ERROR, field="expires_on", reason="in the past")
    body = {
        "amount_kop": amount_kop,
        "expires_on": expires_on,
        "note": note,
        "selection": selection.model_dump(mode="json"),
    }
    await start_operation(db, campaign_id, "campaign", body, login, now)
    return describe(await _drive_campaign(db, campaign_id, today))


async def _drive_campaign(db: Database, campaign_id: str, today: date) -> Any:
    async with db.read() as conn:
        row = await existing_operation(conn, campaign_id)
    assert row is not None
    selection = Selection.from_stored(row.selection)
    now = aware(row.created_at)

    async def apply(conn: AsyncConnection, chunk: Chunk) -> dict[str, int]:
        chosen = cards_query(selection, today, within=lambda column: chunk.of(column, conn))
        amounts = chosen.add_columns(sa.literal(row.amount_kop, sa.BigInteger).label("amount"))
        count, total = await credit_set(
            conn,
            campaign_id=campaign_id,
            lot_suffix="c",
            source="campaign",
            kind="campaign",
            expires_on=row.expires_on,
            today=today,
            now=now,
            amounts=amounts,
            chunk=chunk,
            note=row.note,
        )
        return {"cards": count, "total_kop": total}

    return await in_chunks(
        db, campaign_id, phase="running", next_chunk=cards_after, apply=apply, totals="cards"
    )


async def cancel_campaign(
    db: Database, campaign_id: str, now: datetime, login: str | None
) -> dict[str, Any]:
    """Debit what is still unspent of the campaign's lots; report what had been spent."""
    totals = {"debited_kop": 0, "spent_kop": 0, "cards_with_spent": 0}
    await begin_cancel(db, campaign_id, "campaign", "Бонус-акция не найдена", now, login, totals)
    return describe(await _drive_cancel_campaign(db, campaign_id))


async def _drive_cancel_campaign(db: Database, campaign_id: str) -> Any:
    async with db.read() as conn:
        row = await existing_operation(conn, campaign_id)
    assert row is not None
    note = f"отмена бонус-акции {campaign_id}"
    now = aware(row.cancelled_at)

    mine = sa.and_(lots.c.source_ref == campaign_id, lots.c.source == "campaign")

    async def next_chunk(
        conn: AsyncConnection, after: str | None, size: int
    ) -> tuple[Chunk, str] | None:
        # The campaign's cards, along the lots' (source_ref, card) index.
        return await range_after(conn, lots.c.card, mine, after, size)

    async def apply(conn: AsyncConnection, of_chunk: Chunk) -> dict[str, int]:
        chunk = sa.and_(mine, of_chunk.of(lots.c.card, conn))
        debited, spent, with_spent = (
            await conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(lots.c.remaining_kop), 0),
                    sa.func.coalesce(sa.func.sum(lots.c.amount_kop - lots.c.remaining_kop), 0),
                    sa.func.count().filter(lots.c.remaining_kop < lots.c.amount_kop),
                ).where(chunk)
            )
        ).one()
        await conn.execute(
            transactions.insert().from_select(
                ["card", "kind", "amount_kop", "lots", "campaign_id", "received_at", "note"],
                sa.select(
                    lots.c.card,
                    sa.literal("campaign_cancel"),
                    -lots.c.remaining_kop,
                    json_pair(conn, lots.c.lot_id, lots.c.remaining_kop),
                    sa.literal(campaign_id),
                    sa.literal(now, sa.DateTime(timezone=True)),
                    sa.literal(note),
                ).where(chunk, lots.c.remaining_kop > 0),
            )
        )
        cursor = await next_cursor(conn)
        await conn.execute(
            cards.update().where(cards.c.number == lots.c.card, chunk).values(cursor=cursor)
        )
        await conn.execute(
            lots.update().where(chunk, lots.c.remaining_kop > 0).values(remaining_kop=0)
        )
        return {
            "debited_kop": int(debited),
            "spent_kop": int(spent),
            "cards_with_spent": int(with_spent),
        }

    return await in_chunks(
        db,
        campaign_id,
        phase="cancelling",
        next_chunk=next_chunk,
        apply=apply,
        totals="cancel_result",
    )


async def campaign_cards(
    db: Database, campaign_id: str, *, spent_only: bool, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """Per card: the campaign's amount, what remains, what was spent and what a cancel debited."""
    cancel = (
        sa.select(transactions.c.card, transactions.c.amount_kop.label("debited"))
        .where(transactions.c.campaign_id == campaign_id, transactions.c.kind == "campaign_cancel")
        .subquery()
    )
    debited = sa.func.coalesce(-cancel.c.debited, 0)
    query = (
        sa.select(lots.c.card, lots.c.amount_kop, lots.c.remaining_kop, debited.label("debited"))
        .select_from(lots.outerjoin(cancel, cancel.c.card == lots.c.card))
        .where(lots.c.source_ref == campaign_id, lots.c.source == "campaign")
        .order_by(lots.c.card)
        .limit(limit)
    )
    if after:
        query = query.where(lots.c.card > after)
    if spent_only:
        # Filtered in SQL, before the limit: a page of unspent cards must not end the paging.
        query = query.where(lots.c.amount_kop - lots.c.remaining_kop - debited > 0)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    out = []
    for row in rows:
        spent = row.amount_kop - row.remaining_kop - row.debited
        out.append(
            {
                "card": row.card,
                "amount_kop": row.amount_kop,
                "remaining_kop": row.remaining_kop,
                "spent_kop": spent,
                "debited_kop": row.debited,
            }
        )
    return out


async def carry_on(db: Database) -> int:
    """Carry on every office mass operation left running (a server stopped half-way, a request
    that timed out); how many.  Run by the central server's housekeeping."""
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(schema.campaigns).where(
                    schema.campaigns.c.state.in_(["running", "cancelling"])
                )
            )
        ).all()
        settings, _ = await current_settings(conn)
    for row in rows:
        today = local_date(aware(row.created_at), settings.zone)
        log.warning("carrying on %s %s (%s)", row.kind, row.campaign_id, row.state)
        if row.kind == "campaign" and row.state == "running":
            await _drive_campaign(db, row.campaign_id, today)
        elif row.kind == "campaign":
            await _drive_cancel_campaign(db, row.campaign_id)
        elif row.state == "running":
            await drive_zeroing(db, row.campaign_id, today)
        else:
            cancelled_on = local_date(aware(row.cancelled_at), settings.zone)
            await drive_cancel_zeroing(db, row.campaign_id, cancelled_on)
    return len(rows)
