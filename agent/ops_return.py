"""A return: a receipt's accrual reversed and its redemption refunded, wholly or in part."""

from __future__ import annotations

import logging
import sqlite3
from decimal import Decimal
from typing import Any

from agent import store
from agent.context import request_hash
from agent.models import (
    ReturnLineOut,
    ReturnRequest,
    ReturnResponse,
)
from agent.ops_base import (
    OperationsBase,
    _balance_out,
    _dump,
    new_op_id,
)
from shared.codec import allocations_from_json
from shared.effects import (
    SoldReceipt,
    return_effect,
    return_plan,
    sold_lines,
)
from shared.errors import BonusError, ErrorCode
from shared.journal import (
    LotAmount,
    Return,
    ReturnLine,
)
from shared.lots import balance
from shared.returns import ReturnExceedsSale

log = logging.getLogger(__name__)


class ReturnOperations(OperationsBase):
    """Returns."""

    # --- return -------------------------------------------------------------------------------

    async def return_(self, request: ReturnRequest) -> dict[str, Any]:
        """Reverse a receipt's accrual and refund its redemption, wholly or in part."""
        fingerprint = request_hash(request.model_dump(mode="json"))
        replayed = self._replay(self.ctx.db.reader, "return", request.return_id, fingerprint)
        if replayed is not None:
            return replayed
        self._refuse_new_when_closed()

        def _write(conn: sqlite3.Connection) -> Any:
            replayed = self._replay(conn, "return", request.return_id, fingerprint)
            if replayed is not None:
                return replayed
            return self._commit_return(conn, request, fingerprint)

        return await self.ctx.db.write(_write)

    def _commit_return(
        self, conn: sqlite3.Connection, request: ReturnRequest, fingerprint: str
    ) -> dict[str, Any]:
        ctx = self.ctx
        receipt = store.find_receipt(conn, request.receipt_id)
        if receipt is None:
            raise BonusError(ErrorCode.RECEIPT_NOT_FOUND)
        found = store.find_card(conn, receipt.card)
        assert found is not None, "a receipt's card is in the replica"
        sold = SoldReceipt(
            receipt_id=receipt.receipt_id,
            card=receipt.card,
            lines=sold_lines(receipt.lines),
            allocations=tuple(allocations_from_json(receipt.allocations)),
            accrual_lot=receipt.accrual_lot,
            returned={line_id: Decimal(qty) for line_id, qty in receipt.returned.items()},
            refunded_kop=receipt.refunded_kop,
        )
        requested = (
            None if request.lines is None else {line.line_id: line.qty for line in request.lines}
        )
        try:
            plan = return_plan(sold, requested)
        except ReturnExceedsSale as exc:
            raise BonusError(ErrorCode.RETURN_EXCEEDS_SALE, reason=str(exc)) from exc
        now = ctx.clock.now()
        today = ctx.today()
        op_id = new_op_id()
        effect = return_effect(found.wallet, sold, plan, day=today, refund_lot_id=f"{op_id}:r")
        response = ReturnResponse(
            return_id=request.return_id,
            receipt_id=request.receipt_id,
            operation_id=op_id,
            accrual_reversed=plan.accrual_reversed_kop,
            redemption_refunded=plan.redemption_refunded_kop,
            debt_added=effect.reversal.debt_added_kop,
            lines=[
                ReturnLineOut(
                    line_id=line.line_id,
                    qty=line.qty,
                    accrual_reversed=line.accrual_reversed_kop,
                    redemption_refunded=line.redemption_refunded_kop,
                )
                for line in plan.lines
            ],
            balance=_balance_out(balance(effect.wallet, today, now)),
        )
        operation = Return(
            card=receipt.card,
            receipt_id=request.receipt_id,
            return_id=request.return_id,
            day=today,
            lines=tuple(ReturnLine(line_id=line.line_id, qty=line.qty) for line in plan.lines),
            accrual_lot=receipt.accrual_lot,
            accrual_reversed_kop=plan.accrual_reversed_kop,
            redemption_refunded_kop=plan.redemption_refunded_kop,
            refund_lots=tuple(
                LotAmount(lot_id=given.lot_id, amount_kop=given.amount_kop)
                for given in effect.given
            ),
        )
        store.append_entry(
            conn,
            op_id=op_id,
            idem_key=request.return_id,
            request_hash=fingerprint,
            operation=operation,
            response=_dump(response),
            created_at=now,
        )
        store.save_wallet(conn, receipt.card, effect.wallet)
        store.update_receipt_returns(
            conn,
            request.receipt_id,
            {line_id: str(qty) for line_id, qty in effect.receipt.returned.items()},
            effect.receipt.refunded_kop,
        )
        return _dump(response)
