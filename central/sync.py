"""The store-facing side of the central server: exactly-once upload of journal batches."""

from __future__ import annotations

import itertools
import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.apply import ApplyContext, apply_op, load_for_batch, write_receipts
from central.bulk import insert_rows, one_of
from central.db import Database, head_cursor
from central.ledger import LedgerTx
from central.metrics import CentralMetrics
from central.program import settings_book
from service.phonekey import PhoneHasher
from shared.errors import BonusError, ErrorCode
from shared.journal import Registration
from shared.protocol import Op, OpResult, UploadResponse

log = logging.getLogger(__name__)


#: Registrations applied from one batch at most: each needs a slow phone hash (about 10 ms of a
#: core), computed before the batch's transaction. The batch's operations from the next
#: registration on are left for the store's next batch (``acked_seq`` tells it where to resume),
#: so that an upload answers within the store's timeout even after a week offline.
REGISTRATIONS_PER_BATCH_MAX = 100


class SyncGap(BonusError):
    """A batch that starts after the next expected sequence number."""


async def phone_key(db: Database) -> bytes:
    """Protocol 1's chain-wide HMAC key of phone hashes (``shared.phones.phone_hash``)."""
    async with db.read() as conn:
        value = await conn.scalar(
            sa.select(schema.meta.c.value).where(schema.meta.c.key == "phone_key")
        )
    assert value is not None, "migrate creates the phone key"
    return bytes.fromhex(value)


async def upload(
    db: Database,
    store_id: str,
    batch: list[Op],
    now: datetime,
    hasher: PhoneHasher,
    *,
    metrics: CentralMetrics | None = None,
) -> UploadResponse:
    """Apply a batch exactly once and acknowledge exactly the batch.

    An operation already applied (its ``op_id`` known, under whatever sequence number) answers
    its original result and is never applied again; a gap is refused; a sequence number already
    used by another operation is a conflict. Only a prefix of the batch is applied when it
    carries more than ``REGISTRATIONS_PER_BATCH_MAX`` registrations; ``acked_seq`` says how far.
    The operations applied for the first time are counted in ``metrics`` once committed.
    """
    ops = sorted(batch, key=lambda op: op.seq)
    for previous, following in itertools.pairwise(ops):
        if following.seq != previous.seq + 1:
            raise BonusError(
                ErrorCode.VALIDATION_ERROR, reason="a batch has no gaps", seq=following.seq
            )
    if len({op.op_id for op in ops}) != len(ops):
        raise BonusError(ErrorCode.VALIDATION_ERROR, reason="an operation id appears twice")
    registrations = [i for i, op in enumerate(ops) if op.kind == "register"]
    if len(registrations) > REGISTRATIONS_PER_BATCH_MAX:
        ops = ops[: registrations[REGISTRATIONS_PER_BATCH_MAX]]
    # Before the batch gate and its transaction: other stores' batches do not wait for these
    # hashes, and the threads compute them in parallel.
    phone_hashes = await hasher.hash_many(
        op.operation.phone
        for op in ops
        if isinstance(op.operation, Registration) and op.operation.phone is not None
    )
    # One batch at a time per process (``Database.batch_gate``): see there why.
    async with db.batch_gate, db.write() as conn:
        query = sa.select(schema.stores.c.last_applied_seq).where(
            schema.stores.c.store_id == store_id
        )
        if not db.sqlite:
            query = query.with_for_update()
        last_applied = int(await conn.scalar(query) or 0)
        if ops[0].seq > last_applied + 1:
            raise BonusError(
                ErrorCode.VALIDATION_ERROR,
                "Пропуск в последовательности операций магазина",
                reason="sync_gap",
                resume_from=last_applied + 1,
            )
        originals = await _original_results(conn, store_id, ops)
        fresh = [op for op in ops if op.op_id not in originals]
        for op in fresh:
            if op.seq <= last_applied:
                # Another operation under a number already applied: the store's journal was
                # replaced (restored from a backup, a new machine). Nothing is applied; the
                # store renumbers its unsent operations after ``last_applied_seq``.
                log.warning(
                    "store %s sent seq %d with an unknown op_id, applied up to %d: its journal "
                    "was replaced",
                    store_id,
                    op.seq,
                    last_applied,
                )
                raise BonusError(
                    ErrorCode.IDEMPOTENCY_CONFLICT,
                    reason="sequence number already used by another operation",
                    seq=op.seq,
                    last_applied_seq=last_applied,
                )
        moved = [op for op in originals.values() if op.seq > last_applied]
        if moved:
            log.warning(
                "store %s: %d operations already applied under other sequence numbers "
                "(its journal was renumbered), answered as duplicates",
                store_id,
                len(moved),
            )
        if ops[-1].seq > last_applied:
            # Moved even when every operation is a duplicate under a new number: the store's
            # next batch starts after this one.
            await conn.execute(
                schema.stores.update()
                .where(schema.stores.c.store_id == store_id)
                .values(last_applied_seq=ops[-1].seq)
            )
        results = dict(originals)
        checkpoint = 0
        fresh_results: list[OpResult] = []
        if fresh:
            book = await settings_book(conn, db.settings_cache)
            tx = LedgerTx(conn, now, lock=not db.sqlite)
            ctx = ApplyContext(store_id, book, phone_hashes, now)
            await load_for_batch(tx, ctx, fresh)
            fresh_results = [await apply_op(tx, ctx, op) for op in fresh]
            await tx.write()
            await write_receipts(conn, ctx)
            await insert_rows(
                conn,
                schema.store_ops,
                [
                    {
                        "store_id": store_id,
                        "seq": op.seq,
                        "op_id": op.op_id,
                        "kind": op.kind,
                        "card": op.card,
                        "status": result.status,
                        "reason": result.reason,
                        "debt_added_kop": result.debt_added_kop,
                        "received_at": now,
                        "differences": [d.model_dump() for d in result.differences] or None,
                    }
                    for op, result in zip(fresh, fresh_results, strict=True)
                ],
            )
            differing = [r for r in fresh_results if r.differences]
            if differing:
                await conn.execute(
                    schema.stores.update()
                    .where(schema.stores.c.store_id == store_id)
                    .values(ops_differing=schema.stores.c.ops_differing + len(differing))
                )
            results.update({result.op_id: result for result in fresh_results})
            rejected = [r for r in fresh_results if r.status == "rejected"]
            if rejected:
                log.warning(
                    "store %s: %d operations rejected, first: seq %d %s",
                    store_id,
                    len(rejected),
                    rejected[0].seq,
                    rejected[0].reason,
                )
            if differing:
                first = differing[0]
                log.warning(
                    "store %s: %d operations booked with other figures than the store's, "
                    "first: seq %d %s",
                    store_id,
                    len(differing),
                    first.seq,
                    ", ".join(f"{d.field} {d.store} → {d.central}" for d in first.differences),
                )
            # Last: the feed cursor, whose row lock serialises every feed writer until commit.
            checkpoint = await tx.publish()
        if not checkpoint:
            checkpoint = await head_cursor(conn)
        # Exactly what the batch covered, never beyond: the store may hold operations after it
        # that the central server has not seen (``last_applied`` can be ahead of this batch when
        # the store's journal was restored and its numbers were used before).
        response = UploadResponse(
            acked_seq=ops[-1].seq,
            results=[results[op.op_id] for op in ops],
            checkpoint=checkpoint,
            server_time=now,
        )
    if metrics is not None:
        metrics.count_results((op.kind for op in fresh), fresh_results)
    return response


async def _original_results(
    conn: AsyncConnection, store_id: str, ops: list[Op]
) -> dict[str, OpResult]:
    """The recorded results of the batch's operations already applied, by op id, each under the
    sequence number the store sends it with now."""
    sent = {op.op_id: op for op in ops}
    rows = (await conn.execute(_applied_ops(list(sent), conn.dialect))).all()
    results = {}
    for row in rows:
        op = sent[row.op_id]
        if row.store_id != store_id:
            # An op id is unique in the whole chain (UUIDv7); another store's means a journal
            # copied from another store. Refuse rather than guess.
            raise BonusError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                reason="operation id already used by another store",
                seq=op.seq,
            )
        results[op.op_id] = OpResult(
            seq=op.seq,
            op_id=op.op_id,
            status=row.status,
            reason=row.reason,
            debt_added_kop=row.debt_added_kop,
            differences=row.differences or [],
        )
    return results


def _applied_ops(op_ids: list[str], dialect: Dialect) -> sa.Select[Any]:
    """The ``store_ops`` rows of these op ids.

    On PostgreSQL one probe of the op id index per operation (a lateral subquery for each):
    ``op_id = ANY(…)`` lets the planner choose one sequential scan comparing every row with every
    op id instead, which it does when its statistics still show the table small — a new
    table, or a plan cached while it was — and which then costs in proportion to the table
    (bench/central_upload_profile.py: 240 ms a batch of 500 at 10,000 rows, growing).
    """
    if dialect.name != "postgresql":
        return sa.select(schema.store_ops).where(one_of(schema.store_ops.c.op_id, op_ids, dialect))
    ids = (
        sa.func.unnest(sa.bindparam("op_ids", op_ids, type_=postgresql.ARRAY(sa.String)))
        .table_valued("op_id")
        .render_derived(name="ids")
    )
    found = (
        sa.select(schema.store_ops)
        .where(schema.store_ops.c.op_id == ids.c.op_id)
        .limit(1)
        .lateral("found")
    )
    return sa.select(found).select_from(ids.join(found, sa.true()))
