"""The store-facing side of the central server: exactly-once upload of journal batches."""

from __future__ import annotations

import itertools
import logging
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from agent.phonekey import PhoneHasher
from central import schema
from central.apply import ApplyContext, apply_op, load_for_batch, write_receipts
from central.bulk import insert_rows, one_of
from central.db import Database, head_cursor
from central.ledger import LedgerTx
from central.program import settings_book
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
    db: Database, store_id: str, batch: list[Op], now: datetime, hasher: PhoneHasher
) -> UploadResponse:
    """Apply a batch exactly once: duplicates answer their original results, a gap is refused.

    Only a prefix of the batch is applied when it carries more than
    ``REGISTRATIONS_PER_BATCH_MAX`` registrations; ``acked_seq`` says how far.
    """
    ops = sorted(batch, key=lambda op: op.seq)
    for previous, following in itertools.pairwise(ops):
        if following.seq != previous.seq + 1:
            raise BonusError(
                ErrorCode.VALIDATION_ERROR, reason="a batch has no gaps", seq=following.seq
            )
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
        duplicates = [op for op in ops if op.seq <= last_applied]
        fresh = [op for op in ops if op.seq > last_applied]
        results: list[OpResult] = []
        if duplicates:
            results.extend(await _original_results(conn, store_id, duplicates))
        checkpoint = 0
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
            await conn.execute(
                schema.stores.update()
                .where(schema.stores.c.store_id == store_id)
                .values(
                    last_applied_seq=fresh[-1].seq,
                    ops_differing=schema.stores.c.ops_differing + len(differing),
                )
            )
            # Last: the feed cursor, whose row lock serialises every feed writer until commit.
            checkpoint = await tx.publish()
            results.extend(fresh_results)
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
        if not checkpoint:
            checkpoint = await head_cursor(conn)
        return UploadResponse(
            acked_seq=max(last_applied, ops[-1].seq),
            results=results,
            checkpoint=checkpoint,
            server_time=now,
        )


async def _original_results(conn: AsyncConnection, store_id: str, ops: list[Op]) -> list[OpResult]:
    rows = {
        row.seq: row
        for row in (
            await conn.execute(
                sa.select(schema.store_ops).where(
                    schema.store_ops.c.store_id == store_id,
                    one_of(schema.store_ops.c.seq, [op.seq for op in ops], conn.dialect),
                )
            )
        ).all()
    }
    results = []
    for op in ops:
        row = rows.get(op.seq)
        if row is None or row.op_id != op.op_id:
            # The store sends another operation under a number already applied: its journal
            # was replaced. Refuse rather than guess; the office has to look at it.
            raise BonusError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                reason="sequence number already used by another operation",
                seq=op.seq,
            )
        results.append(
            OpResult(
                seq=op.seq,
                op_id=op.op_id,
                status=row.status,
                reason=row.reason,
                debt_added_kop=row.debt_added_kop,
                differences=row.differences or [],
            )
        )
    return results
