"""Annulment (аннулирование бонусов чека): the office cancels the accrual of one purchase
receipt; its redemption stays.  What the customer already spent of it becomes debt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from central import schema
from central.db import Database
from central.ledger import LedgerTx, TxRow
from shared.errors import BonusError, ErrorCode
from shared.lots import take_from_lot


async def annul_receipt(
    db: Database, store_id: str, receipt_id: str, now: datetime, note: str, login: str | None
) -> dict[str, Any]:
    """Take back what is left of a receipt's accrual (after its returns); idempotent."""
    async with db.write() as conn:
        receipt = (
            await conn.execute(
                sa.select(schema.receipts).where(
                    schema.receipts.c.store_id == store_id,
                    schema.receipts.c.receipt_id == receipt_id,
                )
            )
        ).first()
        if receipt is None:
            raise BonusError(ErrorCode.RECEIPT_NOT_FOUND)
        reversed_before = int(
            await conn.scalar(
                sa.select(
                    sa.func.coalesce(sa.func.sum(-schema.transactions.c.amount_kop), 0)
                ).where(
                    schema.transactions.c.receipt_id == receipt_id,
                    schema.transactions.c.store_id == store_id,
                    schema.transactions.c.kind.in_(["accrual_reversal", "annulment"]),
                )
            )
            or 0
        )
        if receipt.annulled:
            return {
                "receipt_id": receipt_id,
                "store_id": store_id,
                "annulled_kop": 0,
                "debt_added_kop": 0,
                "already": True,
            }
        to_annul = receipt.accrued_kop - reversed_before
        debt_added = 0
        if to_annul > 0 and receipt.accrual_lot:
            tx = LedgerTx(conn, now, lock=not db.sqlite)
            await tx.load([receipt.card])
            card = tx.resolve(receipt.card)
            assert card is not None, "a receipt's card exists"
            await tx.ensure_lots(card.number, [receipt.accrual_lot])
            card.wallet, taken, debt_added = take_from_lot(
                card.wallet, receipt.accrual_lot, to_annul
            )
            card.changed = True
            tx.record(
                TxRow(
                    card.number,
                    "annulment",
                    -to_annul,
                    [[receipt.accrual_lot, taken]],
                    store_id=store_id,
                    receipt_id=receipt_id,
                    note=note or None,
                )
            )
            await tx.flush()
        await conn.execute(
            schema.receipts.update()
            .where(
                schema.receipts.c.store_id == store_id, schema.receipts.c.receipt_id == receipt_id
            )
            .values(annulled=True)
        )
        return {
            "receipt_id": receipt_id,
            "store_id": store_id,
            "annulled_kop": max(0, to_annul),
            "debt_added_kop": debt_added,
            "already": False,
        }
