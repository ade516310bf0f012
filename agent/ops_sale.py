"""A sale: accrual and redemption, atomic and idempotent on the receipt id."""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime
from typing import Any

from agent import store
from agent.authorization import authorize_online, check_offline_caps
from agent.context import request_hash
from agent.models import (
    SaleRequest,
    SaleResponse,
)
from agent.ops_base import (
    OperationsBase,
    _balance_out,
    _card_of,
    _dump,
    _line_outs,
    _lines,
    _SalePlan,
    new_op_id,
)
from shared.codec import allocations_to_json
from shared.effects import (
    receipt_figures,
    recorded_lines,
    release_effect,
    sale_effect,
    sold_line_rows,
)
from shared.errors import BonusError, ErrorCode
from shared.journal import (
    Sale,
    accrual_lot_id,
)
from shared.lots import Wallet, balance
from shared.protocol import auth_hold_id
from shared.receipts import max_redeem

log = logging.getLogger(__name__)


class SaleOperations(OperationsBase):
    """Sales."""

    # --- sale ---------------------------------------------------------------------------------

    async def sale(self, request: SaleRequest) -> dict[str, Any]:
        """Commit a sale: accrual and redemption, atomic and idempotent on the receipt id."""
        body = request.model_dump(mode="json")
        fingerprint = request_hash(body)
        self._refuse_new_when_closed("sale", request.receipt_id, fingerprint)
        if request.redeem > 0:
            # A retry answers as the first time, even once the sync has gone stale since; a
            # sale without redemption has nothing to check first and is replayed by the writer.
            replayed = self._replay(self.ctx.db.reader, "sale", request.receipt_id, fingerprint)
            if replayed is not None:
                return replayed
            await self.ctx.require_fresh()
        needs_code = self.ctx.settings.redemption_confirmation == "code"
        # A hold was confirmed by a code when it was placed; the sale consuming it needs none
        # for what the hold covers (checked with the hold itself, in the transaction).
        if (
            request.redeem > 0
            and needs_code
            and request.verification_id is None
            and request.hold_id is None
        ):
            raise BonusError(ErrorCode.VERIFICATION_REQUIRED)
        authorization_id: str | None = None
        if request.redeem > 0 and self.ctx.central is not None:
            # The store's own checks first (a sale it refuses sets nothing aside anywhere);
            # then, while the central server answers, the chain-wide balance decides (two
            # stores cannot spend the same points); otherwise the offline caps.
            plan = self._plan_sale(self.ctx.db.reader, request, online=True)
            decision = await authorize_online(
                self.ctx,
                plan.card.number,
                request.redeem,
                f"{self.ctx.config.store_id}:{request.receipt_id}",
                request.hold_id,
            )
            authorization_id = decision.authorization_id

        def _write(conn: sqlite3.Connection) -> Any:
            replayed = self._replay(conn, "sale", request.receipt_id, fingerprint)
            if replayed is not None:
                return replayed
            return self._commit_sale(conn, request, fingerprint, authorization_id)

        return await self.ctx.db.write(_write)

    def _plan_sale(
        self, conn: sqlite3.Connection, request: SaleRequest, *, online: bool
    ) -> _SalePlan:
        """Every check of a sale, without writing: the card, its hold and confirmation, the
        offline caps (unless ``online``: authorised by the central server) and the amounts."""
        ctx = self.ctx
        card = self._card(conn, request.card)
        now = ctx.clock.now()
        today = ctx.today()
        # The central server's authorisation of this very receipt (asked now or by an earlier
        # try) sets aside the points this sale redeems: they are not counted twice.
        own_authorization = auth_hold_id(f"{ctx.config.store_id}:{request.receipt_id}")
        consumed = [own_authorization]
        wallet = release_effect(card.wallet, own_authorization)
        held_kop = 0
        if request.hold_id is not None:
            wallet, held_kop = self._take_hold(conn, request.hold_id, card.number, now)
            wallet = release_effect(wallet, own_authorization)
            consumed.append(request.hold_id)
        if request.redeem > 0 and ctx.settings.redemption_confirmation == "code":
            if request.verification_id is not None:
                self._use_verification(conn, request.verification_id, card.number)
            elif request.redeem > held_kop:
                raise BonusError(ErrorCode.VERIFICATION_REQUIRED, reason="more than the hold")
        if request.redeem > 0 and not online:
            check_offline_caps(ctx, conn, card.number, request.redeem, today)
        current = balance(wallet, today, now)
        lines = _lines(request.lines)
        figures = receipt_figures(lines, request.redeem, today, ctx.settings, current.available_kop)
        if request.redeem > 0 and figures.redeemed_kop != request.redeem:
            if request.redeem > current.available_kop:
                raise BonusError(
                    ErrorCode.INSUFFICIENT_BALANCE,
                    available=f"{current.available_kop / 100:.2f}",
                )
            most = max_redeem(lines, ctx.settings, current.available_kop)
            raise BonusError(ErrorCode.REDEMPTION_EXCEEDS_MAX, max_redeem=f"{most / 100:.2f}")
        return _SalePlan(card, wallet, tuple(lines), figures, tuple(consumed), today, now)

    def _commit_sale(
        self,
        conn: sqlite3.Connection,
        request: SaleRequest,
        fingerprint: str,
        authorization_id: str | None,
    ) -> dict[str, Any]:
        ctx = self.ctx
        plan = self._plan_sale(conn, request, online=authorization_id is not None)
        card, figures, now = plan.card, plan.figures, plan.now
        op_id = new_op_id()
        sale = Sale(
            card=card.number,
            receipt_id=request.receipt_id,
            day=plan.today,
            lines=recorded_lines(plan.lines, figures),
            redeem_kop=request.redeem,
            hold_id=request.hold_id,
            authorization_id=authorization_id,
            cashier=request.cashier,
            settings_version=ctx.settings.version,
            accrual_expires_on=figures.accrual_expires_on,
            accrual_active_from=figures.accrual_active_from,
        )
        effect = sale_effect(
            plan.wallet,
            sale,
            figures,
            lot_id=accrual_lot_id(op_id),
            now=now,
            consumed_holds=plan.consumed_holds,
        )
        assert effect.debt_added_kop == 0, "a store redeems only what the balance covers"
        response = SaleResponse(
            receipt_id=request.receipt_id,
            operation_id=op_id,
            accrued=figures.accrued_kop,
            redeemed=figures.redeemed_kop,
            lines=_line_outs(figures),
            balance=_balance_out(balance(effect.wallet, plan.today, now)),
        )
        seq = store.append_entry(
            conn,
            op_id=op_id,
            idem_key=request.receipt_id,
            request_hash=fingerprint,
            operation=sale,
            response=_dump(response),
            created_at=now,
        )
        store.save_wallet(conn, card.number, effect.wallet)
        store.insert_receipt(
            conn,
            store.ReceiptRow(
                receipt_id=request.receipt_id,
                card=card.number,
                seq=seq,
                lines=sold_line_rows(sale, figures),
                allocations=allocations_to_json(list(effect.allocations)),
                accrual_lot=effect.accrual_lot.lot_id if effect.accrual_lot else None,
                returned={},
                refunded_kop=0,
            ),
        )
        if request.hold_id is not None:
            store.set_hold_state(conn, request.hold_id, "consumed")
        if request.verification_id is not None and request.redeem > 0:
            store.update_verification(conn, request.verification_id, used_by=op_id)
        return _dump(response)

    def _take_hold(
        self, conn: sqlite3.Connection, hold_id: str, card: str, now: datetime
    ) -> tuple[Wallet, int]:
        """The card's wallet without the hold, and the amount the hold set aside."""
        hold = store.find_hold(conn, hold_id)
        if hold is None or _card_of(conn, hold.card) != card:
            raise BonusError(ErrorCode.HOLD_NOT_FOUND)
        if hold.state != "active":
            raise BonusError(ErrorCode.HOLD_RESOLVED, state=hold.state)
        if hold.expires_at <= now:
            raise BonusError(ErrorCode.HOLD_EXPIRED)
        found = store.find_card(conn, card)
        assert found is not None
        return release_effect(found.wallet, hold_id), hold.amount_kop
