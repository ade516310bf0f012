"""Campaigns (бонус-акции) and zeroings (обнуление), executed set-based in the database.

A campaign credits a fixed amount to every selected card as a lot of its own (paying any debt
first); cancelling it debits what is still unspent of each lot and reports what had been spent.
A zeroing debits all non-expiring points of every selected card whose last purchase is strictly
before a date, one debit per card; cancelling it gives exactly those amounts back.

Each runs in chunks: a range of card numbers, ``(after, upto]``, in card-number order (the cancel
of a zeroing: its cards in the order of its journal), each chunk a few INSERT … SELECT / UPDATE
statements in a short transaction of its own that also records how far the operation got
(``campaigns.progress_card``).  A chunk is sized to take about ``CHUNK_SECONDS``: the stores'
uploads and authorisations, which write the same cards and the same feed row, wait at most for
one chunk, never for the whole operation.  While it runs its state is ``running``
(``cancelling`` for a cancel); a re-submission of the same request, or the central server's
housekeeping after a restart, carries it on from where it stopped, never twice over a card
(each chunk locks the operation's row and reads its progress first).  The selection is
evaluated chunk by chunk, within the chunk's range, as the operation passes each card.

Every statement of a chunk finds its rows by the range along an index (cards by number, the
operation's lots by ``(source_ref, card)``): one descent and a scan, where a list of a thousand
numbers would be a thousand descents, and a filter's sums over lots are taken for the range
only, never for the whole table once per chunk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.apply import aware
from central.bulk import one_of
from central.db import Database, next_cursor
from central.program import current_settings
from central.selection import Selection, cards_query
from shared.errors import BonusError, ErrorCode
from shared.lots import local_date

log = logging.getLogger(__name__)

#: How long a chunk of an office mass operation should take: a store's batch that touches the
#: same cards, and every store's batch for the feed row, waits at most for about this long.
CHUNK_SECONDS: Final = 0.25
#: Cards of the first chunk; the next ones are sized from how long the last took, between the
#: bounds (a chunk's fixed costs make tiny ones slow; a huge one would hold the stores back).
CHUNK_CARDS = 1000
CHUNK_CARDS_MIN = 100
CHUNK_CARDS_MAX = 20_000

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


@dataclass(frozen=True, slots=True)
class Chunk:
    """The cards of one chunk: the numbers in ``(after, upto]``, or the ones listed."""

    after: str | None
    upto: str | None = None
    numbers: tuple[str, ...] | None = None

    def of(self, column: Any, conn: AsyncConnection) -> Any:
        """``column`` (a card number) is one of the chunk's cards."""
        if self.numbers is not None:
            return one_of(column, list(self.numbers), conn.dialect)
        return sa.and_(_after(column, self.after), column <= self.upto)


def _after(column: Any, after: str | None) -> Any:
    return sa.true() if after is None else column > after


async def _range_after(
    conn: AsyncConnection, column: Any, where: Any, after: str | None, size: int
) -> Chunk | None:
    """The chunk of the next ``size`` values of ``column`` (along its index) after ``after``;
    None when none is left."""
    ahead = (
        sa.select(column.label("number"))
        .where(where, _after(column, after))
        .order_by(column)
        .limit(size)
        .subquery()
    )
    upto = await conn.scalar(sa.select(sa.func.max(ahead.c.number)))
    return None if upto is None else Chunk(after, str(upto))


async def _lock_cards(conn: AsyncConnection, chunk: Chunk) -> None:
    """On PostgreSQL, lock a chunk's card rows in number order before touching them: a store's
    upload locks its cards in number order too, so the two wait for each other, never both for
    each other.  With the cards locked, what a chunk's selection reads of them (their lots and
    purchases) holds still until it commits.  SQLite's one writer already serialises them."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.select(cards.c.number)
            .where(chunk.of(cards.c.number, conn))
            .order_by(cards.c.number)
            .with_for_update()
        )


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
    amounts: sa.Select[Any],
    chunk: Chunk,
    note: str,
) -> tuple[int, int]:
    """Credit each card of ``amounts`` (columns ``number``, ``amount``) in ``chunk`` a new
    lot, paying debt first; one journal transaction per card.  Returns the cards credited and
    the kopecks."""
    source_rows = amounts.subquery("chosen")
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
            )
            .select_from(cards.join(source_rows, source_rows.c.number == cards.c.number))
            .where(chunk.of(cards.c.number, conn)),
        )
    )
    # The lots just made: the operation's lots of the chunk's cards, along (source_ref, card).
    made = sa.and_(
        lots.c.source_ref == campaign_id, lots.c.source == source, chunk.of(lots.c.card, conn)
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
            ).where(made),
        )
    )
    # Last, the feed cursor: its row lock serialises every feed writer until commit.
    cursor = await next_cursor(conn)
    # The debt paid is what the new lot does not hold; the lots just made say how much
    # (UPDATE … FROM on both databases: one pass, no per-card subquery).
    await conn.execute(
        cards.update()
        .where(cards.c.number == lots.c.card, made)
        .values(
            debt_kop=cards.c.debt_kop - (lots.c.amount_kop - lots.c.remaining_kop), cursor=cursor
        )
    )
    count, total = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(lots.c.amount_kop), 0)).where(
                made
            )
        )
    ).one()
    return int(count), int(total)


#: The next chunk of at most so many cards after a position, and the position after it; None
#: when no card is left.
NextChunk = Callable[[AsyncConnection, str | None, int], Awaitable[tuple[Chunk, str] | None]]
ApplyChunk = Callable[[AsyncConnection, Chunk], Awaitable[dict[str, int]]]


def _next_size(size: int, elapsed_s: float) -> int:
    """The next chunk's size after one of ``size`` cards took ``elapsed_s``: aimed at
    ``CHUNK_SECONDS``, at most doubling, within the bounds."""
    aimed = int(size * CHUNK_SECONDS / max(elapsed_s, 0.001))
    return min(CHUNK_CARDS_MAX, max(CHUNK_CARDS_MIN, min(aimed, 2 * size)))


async def _in_chunks(
    db: Database,
    operation_id: str,
    *,
    phase: str,
    next_chunk: NextChunk,
    apply: ApplyChunk,
    totals: str,
) -> Any:
    """Carry an office mass operation on from its recorded progress, a chunk of cards per short
    transaction, until no card is left; returns its row, finished.

    Each chunk locks the operation's row and reads its progress first, so two drivers of one
    operation (a re-submission beside the housekeeping) take turns and never apply a card twice.
    What a chunk did is added to the row's ``totals`` (``cards``/``total_kop`` for the
    operation, ``cancel_result`` for a cancel) in the same transaction.
    """
    size = min(CHUNK_CARDS, CHUNK_CARDS_MAX)
    while True:
        started = time.monotonic()
        async with db.write() as conn:
            row = await _existing(conn, operation_id, lock=True)
            assert row is not None, "the operation's row is made before its first chunk"
            if row.state != phase:
                return row
            found = await next_chunk(conn, row.progress_card, size)
            if found is None:
                await conn.execute(
                    schema.campaigns.update()
                    .where(schema.campaigns.c.campaign_id == operation_id)
                    .values(state=_DONE[phase], progress_card=None)
                )
                return await _existing(conn, operation_id)
            chunk, position = found
            await _lock_cards(conn, chunk)
            done = await apply(conn, chunk)
            values: dict[str, Any] = {"progress_card": position}
            if totals == "cancel_result":
                result = dict(row.cancel_result or {})
                for key, amount in done.items():
                    result[key] = int(result.get(key, 0)) + amount
                values["cancel_result"] = result
            else:
                values["cards"] = row.cards + done["cards"]
                values["total_kop"] = row.total_kop + done["total_kop"]
            await conn.execute(
                schema.campaigns.update()
                .where(schema.campaigns.c.campaign_id == operation_id)
                .values(**values)
            )
        size = _next_size(size, time.monotonic() - started)


_DONE: Final = {"running": "done", "cancelling": "cancelled"}


async def _cards_after(
    conn: AsyncConnection, after: str | None, size: int
) -> tuple[Chunk, str] | None:
    """The next range of ``size`` cards of the ledger, whichever a selection means."""
    chunk = await _range_after(conn, cards.c.number, sa.true(), after, size)
    return None if chunk is None else (chunk, str(chunk.upto))


async def _start(
    db: Database, operation_id: str, kind: str, fingerprint: str, values: dict[str, Any]
) -> Any:
    """The operation's row: made ``running`` now, or the one a first submission made (a
    re-submission of another request under the same id is a conflict)."""
    try:
        async with db.write() as conn:
            existing = await _existing(conn, operation_id)
            if existing is not None:
                _replay(existing, kind, fingerprint)
                return existing
            await conn.execute(
                schema.campaigns.insert().values(
                    campaign_id=operation_id,
                    kind=kind,
                    state="running",
                    request_hash=fingerprint,
                    cards=0,
                    total_kop=0,
                    **values,
                )
            )
            return await _existing(conn, operation_id)
    except sa.exc.IntegrityError:
        async with db.read() as conn:
            existing = await _existing(conn, operation_id)
        if existing is None:
            raise RuntimeError(f"unique violation without a {kind} {operation_id}") from None
        _replay(existing, kind, fingerprint)
        return existing


# --- campaigns ----------------------------------------------------------------------------------


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
    await _start(
        db,
        campaign_id,
        "campaign",
        _request_hash(body),
        {
            "amount_kop": amount_kop,
            "expires_on": expires_on,
            "note": note,
            "selection": selection.model_dump(mode="json"),
            "created_by": login,
            "created_at": now,
        },
    )
    return describe(await _drive_campaign(db, campaign_id, today))


async def _drive_campaign(db: Database, campaign_id: str, today: date) -> Any:
    async with db.read() as conn:
        row = await _existing(conn, campaign_id)
    assert row is not None
    selection = Selection.from_stored(row.selection)
    now = aware(row.created_at)

    async def apply(conn: AsyncConnection, chunk: Chunk) -> dict[str, int]:
        chosen = cards_query(selection, today, within=lambda column: chunk.of(column, conn))
        amounts = chosen.add_columns(sa.literal(row.amount_kop, sa.BigInteger).label("amount"))
        count, total = await _credit_set(
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

    return await _in_chunks(
        db, campaign_id, phase="running", next_chunk=_cards_after, apply=apply, totals="cards"
    )


async def cancel_campaign(
    db: Database, campaign_id: str, now: datetime, login: str | None
) -> dict[str, Any]:
    """Debit what is still unspent of the campaign's lots; report what had been spent."""
    async with db.write() as conn:
        row = await _existing(conn, campaign_id, lock=True)
        if row is None or row.kind != "campaign":
            raise BonusError(ErrorCode.NOT_FOUND, "Бонус-акция не найдена", campaign_id=campaign_id)
        if row.state == "running":
            raise BonusError(ErrorCode.OPERATION_IN_PROGRESS, campaign_id=campaign_id)
        if row.state == "done":
            await conn.execute(
                schema.campaigns.update()
                .where(schema.campaigns.c.campaign_id == campaign_id)
                .values(
                    state="cancelling",
                    progress_card=None,
                    cancelled_at=now,
                    cancelled_by=login,
                    cancel_result={"debited_kop": 0, "spent_kop": 0, "cards_with_spent": 0},
                )
            )
    return describe(await _drive_cancel_campaign(db, campaign_id))


async def _drive_cancel_campaign(db: Database, campaign_id: str) -> Any:
    async with db.read() as conn:
        row = await _existing(conn, campaign_id)
    assert row is not None
    note = f"отмена бонус-акции {campaign_id}"
    now = aware(row.cancelled_at)

    mine = sa.and_(lots.c.source_ref == campaign_id, lots.c.source == "campaign")

    async def next_chunk(
        conn: AsyncConnection, after: str | None, size: int
    ) -> tuple[Chunk, str] | None:
        # The campaign's cards, along the lots' (source_ref, card) index.
        chunk = await _range_after(conn, lots.c.card, mine, after, size)
        return None if chunk is None else (chunk, str(chunk.upto))

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
                    _pair(conn, lots.c.lot_id, lots.c.remaining_kop),
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

    return await _in_chunks(
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


# --- zeroings -----------------------------------------------------------------------------------


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
    await _start(
        db,
        zeroing_id,
        "zeroing",
        _request_hash(body),
        {
            "before_date": before_date,
            "note": note,
            "selection": selection.model_dump(mode="json"),
            "created_by": login,
            "created_at": now,
        },
    )
    return describe(await _drive_zeroing(db, zeroing_id, today))


async def _drive_zeroing(db: Database, zeroing_id: str, today: date) -> Any:
    async with db.read() as conn:
        row = await _existing(conn, zeroing_id)
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
                    _pairs_agg(conn, lots.c.lot_id, lots.c.remaining_kop),
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

    return await _in_chunks(
        db, zeroing_id, phase="running", next_chunk=_cards_after, apply=apply, totals="cards"
    )


async def cancel_zeroing(
    db: Database, zeroing_id: str, today: date, now: datetime, login: str | None
) -> dict[str, Any]:
    """Give back exactly what the zeroing took, as non-expiring points (debt paid first)."""
    async with db.write() as conn:
        row = await _existing(conn, zeroing_id, lock=True)
        if row is None or row.kind != "zeroing":
            raise BonusError(ErrorCode.NOT_FOUND, "Обнуление не найдено", campaign_id=zeroing_id)
        if row.state == "running":
            raise BonusError(ErrorCode.OPERATION_IN_PROGRESS, campaign_id=zeroing_id)
        if row.state == "done":
            await conn.execute(
                schema.campaigns.update()
                .where(schema.campaigns.c.campaign_id == zeroing_id)
                .values(
                    state="cancelling",
                    progress_card=None,
                    cancelled_at=now,
                    cancelled_by=login,
                    cancel_result={"returned_kop": 0, "cards": 0},
                )
            )
    return describe(await _drive_cancel_zeroing(db, zeroing_id, today))


async def _drive_cancel_zeroing(db: Database, zeroing_id: str, today: date) -> Any:
    async with db.read() as conn:
        row = await _existing(conn, zeroing_id)
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
        count, total = await _credit_set(
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

    return await _in_chunks(
        db,
        zeroing_id,
        phase="cancelling",
        next_chunk=next_chunk,
        apply=apply,
        totals="cancel_result",
    )


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
            await _drive_zeroing(db, row.campaign_id, today)
        else:
            cancelled_on = local_date(aware(row.cancelled_at), settings.zone)
            await _drive_cancel_zeroing(db, row.campaign_id, cancelled_on)
    return len(rows)


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
