"""Campaigns (бонус-акции) and zeroings (обнуление), executed set-based in the database.

A campaign credits a fixed amount to every selected card as a lot of its own (paying any debt
first); cancelling it debits what is still unspent of each lot and reports what had been spent.
A zeroing debits all non-expiring points of every selected card whose last purchase is strictly
before a date, one debit per card; cancelling it gives exactly those amounts back.  Each runs as a
few INSERT … SELECT / UPDATE statements in one transaction, so a million cards take seconds.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.apply import aware
from central.db import Database, next_cursor
from central.selection import Selection, cards_query
from shared.errors import BonusError, ErrorCode

lots = schema.lots
cards = schema.cards
transactions = schema.transactions

#: The longest campaign or zeroing id: its lots are named ``{id}:c:{card}`` and
#: ``{id}:back:{card}``, which must fit ``lots.lot_id`` (80) with a 40-character card number.
CAMPAIGN_ID_CHARS_MAX = 32


def _pair(conn: AsyncConnection, lot_id: Any, amount: Any) -> Any:
    """``[[lot_id, amount]]`` as a JSON value built by the database."""
    if conn.dialect.name == "postgresql":
        return sa.func.json_build_array(sa.func.json_build_array(lot_id, amount))
    return sa.func.json_array(sa.func.json_array(lot_id, amount))


def _pairs_agg(conn: AsyncConnection, lot_id: Any, amount: Any) -> Any:
    """The aggregate of ``[lot_id, amount]`` pairs as a JSON array."""
    if conn.dialect.name == "postgresql":
        return sa.func.json_agg(sa.func.json_build_array(lot_id, amount))
    return sa.func.json_group_array(sa.func.json_array(lot_id, amount))


def _request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


async def _lock_cards(conn: AsyncConnection) -> None:
    """On PostgreSQL, take the cards table before touching any of its rows.

    A set-based operation updates many cards; a store's upload locks a few rows at a time. Taking
    the table first (readers still read) makes the upload wait for the campaign or the campaign
    for the uploads in flight, never both for each other: no deadlock.
    """
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("LOCK TABLE cards IN EXCLUSIVE MODE")


async def _existing(conn: AsyncConnection, campaign_id: str, *, lock: bool = False) -> Any:
    query = sa.select(schema.campaigns).where(schema.campaigns.c.campaign_id == campaign_id)
    if lock:
        # Two cancels at once (a double click) must not both debit: on PostgreSQL the second
        # waits here and then sees the first one's state. SQLite's one writer already
        # serialises them (the clause is not rendered there).
        query = query.with_for_update()
    return (await conn.execute(query)).first()


def _replay(existing: Any, kind: str, fingerprint: str) -> dict[str, Any]:
    """The answer to a re-submission: the first answer, or a conflict for another request."""
    if existing.request_hash != fingerprint or existing.kind != kind:
        raise BonusError(ErrorCode.IDEMPOTENCY_CONFLICT, campaign_id=existing.campaign_id)
    return describe(existing)


async def _raced(db: Database, campaign_id: str, kind: str, fingerprint: str) -> dict[str, Any]:
    """After a unique violation: the same id submitted twice at once (a double click) on
    PostgreSQL, where the other request committed first; answer as a re-submission does."""
    async with db.read() as conn:
        existing = await _existing(conn, campaign_id)
    if existing is None:
        raise RuntimeError(f"unique violation without a {kind} {campaign_id}")
    return _replay(existing, kind, fingerprint)


def describe(row: Any) -> dict[str, Any]:
    """A campaign or zeroing as the office sees it."""
    return {
        "campaign_id": row.campaign_id,
        "kind": row.kind,
        "state": row.state,
        "amount_kop": row.amount_kop,
        "expires_on": row.expires_on.isoformat() if row.expires_on else None,
        "before_date": row.before_date.isoformat() if row.before_date else None,
        "note": row.note,
        "selection": row.selection,
        "cards": row.cards,
        "total_kop": row.total_kop,
        "created_by": row.created_by,
        "created_at": aware(row.created_at).isoformat(),
        "cancelled_by": row.cancelled_by,
        "cancelled_at": aware(row.cancelled_at).isoformat() if row.cancelled_at else None,
        "cancel_result": row.cancel_result,
    }


async def _credit_set(
    conn: AsyncConnection,
    *,
    campaign_id: str,
    lot_suffix: str,
    source: str,
    kind: str,
    expires_on: date | None,
    today: date,
    now: datetime,
    card_numbers: sa.Select[Any],
    note: str,
    cursor: int,
) -> None:
    """Credit each card of ``card_numbers`` (columns ``number``, ``amount``) a new lot, paying
    debt first; one journal transaction per card."""
    source_rows = card_numbers.subquery("chosen")
    credit = source_rows.c.amount
    debt = cards.c.debt_kop
    paid = sa.case((debt < credit, debt), else_=credit)
    lot_id = sa.literal(f"{campaign_id}:{lot_suffix}:", sa.String) + cards.c.number
    await conn.execute(
        lots.insert().from_select(
            [
                "lot_id",
                "card",
                "amount_kop",
                "remaining_kop",
                "created_on",
                "expires_on",
                "active_from",
                "source",
                "source_ref",
            ],
            sa.select(
                lot_id,
                cards.c.number,
                credit,
                credit - paid,
                sa.literal(today, sa.Date),
                sa.literal(expires_on, sa.Date),
                sa.null(),
                sa.literal(source),
                sa.literal(campaign_id),
            ).select_from(cards.join(source_rows, source_rows.c.number == cards.c.number)),
        )
    )
    await conn.execute(
        transactions.insert().from_select(
            ["card", "kind", "amount_kop", "lots", "campaign_id", "received_at", "note"],
            sa.select(
                lots.c.card,
                sa.literal(kind),
                lots.c.amount_kop,
                _pair(conn, lots.c.lot_id, lots.c.amount_kop),
                sa.literal(campaign_id),
                sa.literal(now, sa.DateTime(timezone=True)),
                sa.literal(note),
            ).where(lots.c.source_ref == campaign_id, lots.c.source == source),
        )
    )
    # The debt paid is what the new lot does not hold; the lots just made say how much
    # (UPDATE … FROM on both databases: one pass, no per-card subquery).
    await conn.execute(
        cards.update()
        .where(
            cards.c.number == lots.c.card, lots.c.source_ref == campaign_id, lots.c.source == source
        )
        .values(
            debt_kop=cards.c.debt_kop - (lots.c.amount_kop - lots.c.remaining_kop), cursor=cursor
        )
    )


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
    """Credit the selected cards; idempotent on ``campaign_id``."""
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
    fingerprint = _request_hash(body)
    try:
        async with db.write() as conn:
            existing = await _existing(conn, campaign_id)
            if existing is not None:
                return _replay(existing, "campaign", fingerprint)
            await _lock_cards(conn)
            cursor = await next_cursor(conn)
            chosen = cards_query(selection, today).add_columns(
                sa.literal(amount_kop, sa.BigInteger).label("amount")
            )
            await _credit_set(
                conn,
                campaign_id=campaign_id,
                lot_suffix="c",
                source="campaign",
                kind="campaign",
                expires_on=expires_on,
                today=today,
                now=now,
                card_numbers=chosen,
                note=note,
                cursor=cursor,
            )
            count = int(
                await conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(lots)
                    .where(lots.c.source_ref == campaign_id, lots.c.source == "campaign")
                )
                or 0
            )
            await conn.execute(
                schema.campaigns.insert().values(
                    campaign_id=campaign_id,
                    kind="campaign",
                    state="done",
                    amount_kop=amount_kop,
                    expires_on=expires_on,
                    note=note,
                    selection=selection.model_dump(mode="json"),
                    request_hash=fingerprint,
                    cards=count,
                    total_kop=count * amount_kop,
                    created_by=login,
                    created_at=now,
                )
            )
            row = await _existing(conn, campaign_id)
            return describe(row)
    except sa.exc.IntegrityError:
        return await _raced(db, campaign_id, "campaign", fingerprint)


async def cancel_campaign(
    db: Database, campaign_id: str, now: datetime, login: str | None
) -> dict[str, Any]:
    """Debit what is still unspent of the campaign's lots; report what had been spent."""
    async with db.write() as conn:
        row = await _existing(conn, campaign_id, lock=True)
        if row is None or row.kind != "campaign":
            raise BonusError(ErrorCode.NOT_FOUND, "Бонус-акция не найдена", campaign_id=campaign_id)
        if row.state == "cancelled":
            return describe(row)
        mine = sa.and_(lots.c.source_ref == campaign_id, lots.c.source == "campaign")
        totals = (
            await conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(lots.c.remaining_kop), 0),
                    sa.func.coalesce(sa.func.sum(lots.c.amount_kop - lots.c.remaining_kop), 0),
                    sa.func.count().filter(lots.c.remaining_kop < lots.c.amount_kop),
                ).where(mine)
            )
        ).one()
        await _lock_cards(conn)
        cursor = await next_cursor(conn)
        await conn.execute(
            transactions.insert().from_select(
                ["card", "kind", "amount_kop", "lots", "campaign_id", "received_at", "note"],
                sa.select(
                    lots.c.card,
                    sa.literal("campaign_cancel"),
                    -lots.c.remaining_kop,
                    _pair(conn, lots.c.lot_id, lots.c.remaining_kop),
                    sa.literal(campaign_id),
                    sa.literal(now, sa.DateTime(timezone=True)),
                    sa.literal(f"отмена бонус-акции {campaign_id}"),
                ).where(mine, lots.c.remaining_kop > 0),
            )
        )
        await conn.execute(
            cards.update().where(cards.c.number == lots.c.card, mine).values(cursor=cursor)
        )
        await conn.execute(
            lots.update().where(mine, lots.c.remaining_kop > 0).values(remaining_kop=0)
        )
        result = {
            "debited_kop": int(totals[0]),
            "spent_kop": int(totals[1]),
            "cards_with_spent": int(totals[2]),
        }
        await conn.execute(
            schema.campaigns.update()
            .where(schema.campaigns.c.campaign_id == campaign_id)
            .values(state="cancelled", cancelled_at=now, cancelled_by=login, cancel_result=result)
        )
        return describe(await _existing(conn, campaign_id))


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
    fingerprint = _request_hash(body)
    try:
        async with db.write() as conn:
            existing = await _existing(conn, zeroing_id)
            if existing is not None:
                return _replay(existing, "zeroing", fingerprint)
            inactive = cards_query(selection, today).where(
                sa.or_(cards.c.last_purchase_on.is_(None), cards.c.last_purchase_on < before_date)
            )
            await _lock_cards(conn)
            cursor = await next_cursor(conn)
            target = sa.and_(
                lots.c.expires_on.is_(None), lots.c.remaining_kop > 0, lots.c.card.in_(inactive)
            )
            await conn.execute(
                transactions.insert().from_select(
                    ["card", "kind", "amount_kop", "lots", "campaign_id", "received_at", "note"],
                    sa.select(
                        lots.c.card,
                        sa.literal("zeroing"),
                        -sa.func.sum(lots.c.remaining_kop),
                        _pairs_agg(conn, lots.c.lot_id, lots.c.remaining_kop),
                        sa.literal(zeroing_id),
                        sa.literal(now, sa.DateTime(timezone=True)),
                        sa.literal(note),
                    )
                    .where(target)
                    .group_by(lots.c.card),
                )
            )
            # The cards just debited are the stable set: update exactly those.
            zeroed = sa.select(transactions.c.card).where(
                transactions.c.campaign_id == zeroing_id, transactions.c.kind == "zeroing"
            )
            await conn.execute(
                lots.update()
                .where(
                    lots.c.expires_on.is_(None), lots.c.remaining_kop > 0, lots.c.card.in_(zeroed)
                )
                .values(remaining_kop=0)
            )
            await conn.execute(
                cards.update().where(cards.c.number.in_(zeroed)).values(cursor=cursor)
            )
            count, total = (
                await conn.execute(
                    sa.select(
                        sa.func.count(),
                        sa.func.coalesce(-sa.func.sum(transactions.c.amount_kop), 0),
                    ).where(
                        transactions.c.campaign_id == zeroing_id, transactions.c.kind == "zeroing"
                    )
                )
            ).one()
            await conn.execute(
                schema.campaigns.insert().values(
                    campaign_id=zeroing_id,
                    kind="zeroing",
                    state="done",
                    before_date=before_date,
                    note=note,
                    selection=selection.model_dump(mode="json"),
                    request_hash=fingerprint,
                    cards=int(count),
                    total_kop=int(total),
                    created_by=login,
                    created_at=now,
                )
            )
            return describe(await _existing(conn, zeroing_id))
    except sa.exc.IntegrityError:
        return await _raced(db, zeroing_id, "zeroing", fingerprint)


async def cancel_zeroing(
    db: Database, zeroing_id: str, today: date, now: datetime, login: str | None
) -> dict[str, Any]:
    """Give back exactly what the zeroing took, as non-expiring points (debt paid first)."""
    async with db.write() as conn:
        row = await _existing(conn, zeroing_id, lock=True)
        if row is None or row.kind != "zeroing":
            raise BonusError(ErrorCode.NOT_FOUND, "Обнуление не найдено", campaign_id=zeroing_id)
        if row.state == "cancelled":
            return describe(row)
        await _lock_cards(conn)
        cursor = await next_cursor(conn)
        taken = sa.select(
            transactions.c.card.label("number"), (-transactions.c.amount_kop).label("amount")
        ).where(transactions.c.campaign_id == zeroing_id, transactions.c.kind == "zeroing")
        await _credit_set(
            conn,
            campaign_id=zeroing_id,
            lot_suffix="back",
            source="zeroing_cancel",
            kind="zeroing_cancel",
            expires_on=None,
            today=today,
            now=now,
            card_numbers=taken,
            note=f"отмена обнуления {zeroing_id}",
            cursor=cursor,
        )
        result = {"returned_kop": row.total_kop, "cards": row.cards}
        await conn.execute(
            schema.campaigns.update()
            .where(schema.campaigns.c.campaign_id == zeroing_id)
            .values(state="cancelled", cancelled_at=now, cancelled_by=login, cancel_result=result)
        )
        return describe(await _existing(conn, zeroing_id))


async def list_campaigns(
    db: Database, kind: str | None, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """Campaigns and zeroings, newest first, with the total count."""
    query = sa.select(schema.campaigns)
    count_query = sa.select(sa.func.count()).select_from(schema.campaigns)
    if kind:
        query = query.where(schema.campaigns.c.kind == kind)
        count_query = count_query.where(schema.campaigns.c.kind == kind)
    async with db.read() as conn:
        total = int(await conn.scalar(count_query) or 0)
        rows = (
            await conn.execute(
                query.order_by(schema.campaigns.c.created_at.desc()).limit(limit).offset(offset)
            )
        ).all()
    return total, [describe(row) for row in rows]
