"""Office mass operations (campaigns, zeroings and their cancels): their rows, and the driver
that runs them in chunks, set-based in the database.

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
from shared.errors import BonusError, ErrorCode

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


def json_pair(conn: AsyncConnection, lot_id: Any, amount: Any) -> Any:
    """``[[lot_id, amount]]`` as a JSON value built by the database."""
    if conn.dialect.name == "postgresql":
        return sa.func.json_build_array(sa.func.json_build_array(lot_id, amount))
    return sa.func.json_array(sa.func.json_array(lot_id, amount))


def json_pairs_agg(conn: AsyncConnection, lot_id: Any, amount: Any) -> Any:
    """The aggregate of ``[lot_id, amount]`` pairs as a JSON array."""
    if conn.dialect.name == "postgresql":
        return sa.func.json_agg(sa.func.json_build_array(lot_id, amount))
    return sa.func.json_group_array(sa.func.json_array(lot_id, amount))


def request_hash(body: dict[str, Any]) -> str:
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


async def range_after(
    conn: AsyncConnection, column: Any, where: Any, after: str | None, size: int
) -> tuple[Chunk, str] | None:
    """The chunk of the next ``size`` values of ``column`` (along its index) after ``after``,
    and the position after it (its last value); None when none is left."""
    ahead = (
        sa.select(column.label("number"))
        .where(where, _after(column, after))
        .order_by(column)
        .limit(size)
        .subquery()
    )
    upto = await conn.scalar(sa.select(sa.func.max(ahead.c.number)))
    return None if upto is None else (Chunk(after, str(upto)), str(upto))


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


async def existing_operation(conn: AsyncConnection, campaign_id: str, *, lock: bool = False) -> Any:
    query = sa.select(schema.campaigns).where(schema.campaigns.c.campaign_id == campaign_id)
    if lock:
        # Two cancels at once (a double click) must not both debit: on PostgreSQL the second
        # waits here and then sees the first one's state. SQLite's one writer already
        # serialises them (the clause is not rendered there).
        query = query.with_for_update()
    return (await conn.execute(query)).first()


def replay_operation(existing: Any, kind: str, fingerprint: str) -> dict[str, Any]:
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


async def credit_set(
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
                json_pair(conn, lots.c.lot_id, lots.c.amount_kop),
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


def next_size(size: int, elapsed_s: float) -> int:
    """The next chunk's size after one of ``size`` cards took ``elapsed_s``: aimed at
    ``CHUNK_SECONDS``, at most doubling, within the bounds."""
    aimed = int(size * CHUNK_SECONDS / max(elapsed_s, 0.001))
    return min(CHUNK_CARDS_MAX, max(CHUNK_CARDS_MIN, min(aimed, 2 * size)))


async def in_chunks(
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
            row = await existing_operation(conn, operation_id, lock=True)
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
                return await existing_operation(conn, operation_id)
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
        size = next_size(size, time.monotonic() - started)


_DONE: Final = {"running": "done", "cancelling": "cancelled"}


async def cards_after(
    conn: AsyncConnection, after: str | None, size: int
) -> tuple[Chunk, str] | None:
    """The next range of ``size`` cards of the ledger, whichever a selection means."""
    return await range_after(conn, cards.c.number, sa.true(), after, size)


async def begin_cancel(
    db: Database,
    operation_id: str,
    kind: str,
    not_found: str,
    now: datetime,
    login: str | None,
    totals: dict[str, int],
) -> None:
    """Mark a finished operation ``cancelling`` (its cancel's totals at zero), once: a cancel
    already under way or done is left as it is (the caller carries it on or answers it); one
    still running is ``409 operation_in_progress``; another kind or id is ``404``."""
    async with db.write() as conn:
        row = await existing_operation(conn, operation_id, lock=True)
        if row is None or row.kind != kind:
            raise BonusError(ErrorCode.NOT_FOUND, not_found, campaign_id=operation_id)
        if row.state == "running":
            raise BonusError(ErrorCode.OPERATION_IN_PROGRESS, campaign_id=operation_id)
        if row.state == "done":
            await conn.execute(
                schema.campaigns.update()
                .where(schema.campaigns.c.campaign_id == operation_id)
                .values(
                    state="cancelling",
                    progress_card=None,
                    cancelled_at=now,
                    cancelled_by=login,
                    cancel_result=totals,
                )
            )


async def start_operation(
    db: Database,
    operation_id: str,
    kind: str,
    body: dict[str, Any],
    login: str | None,
    now: datetime,
) -> Any:
    """The operation's row, with the request's ``body`` (its columns): made ``running`` now,
    or the one a first submission made (a re-submission of another request under the same id
    is a conflict)."""
    fingerprint = request_hash(body)
    values = {**body, "created_by": login, "created_at": now}
    try:
        async with db.write() as conn:
            existing = await existing_operation(conn, operation_id)
            if existing is not None:
                replay_operation(existing, kind, fingerprint)
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
            return await existing_operation(conn, operation_id)
    except sa.exc.IntegrityError:
        async with db.read() as conn:
            existing = await existing_operation(conn, operation_id)
        if existing is None:
            raise RuntimeError(f"unique violation without a {kind} {operation_id}") from None
        replay_operation(existing, kind, fingerprint)
        return existing


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
