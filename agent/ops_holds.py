"""Holds: points set aside for an order, and released."""

from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta
from typing import Any, Literal

from agent import store
from agent.context import request_hash
from agent.models import (
    HoldRequest,
    HoldResponse,
)
from agent.ops_base import (
    OperationsBase,
    _balance_out,
    _dump,
    new_op_id,
)
from shared.effects import (
    hold_effect,
    release_effect,
)
from shared.errors import BonusError, ErrorCode
from shared.journal import (
    HoldPlaced,
    HoldReleased,
)
from shared.lots import balance

log = logging.getLogger(__name__)


class HoldOperations(OperationsBase):
    """Holds."""

    # --- holds --------------------------------------------------------------------------------

    async def hold(self, request: HoldRequest) -> dict[str, Any]:
        """Set points aside for an order, idempotent on the hold id."""
        fingerprint = request_hash(request.model_dump(mode="json"))
        replayed = self._replay(self.ctx.db.reader, "hold", request.hold_id, fingerprint)
        if replayed is not None:
            return replayed
        self._refuse_new_when_closed()
        if request.amount <= 0:
            raise BonusError(ErrorCode.VALIDATION_ERROR, field="amount", reason="must be positive")
        if request.ttl_s > self.ctx.settings.hold_ttl_max_s:
            raise BonusError(
                ErrorCode.VALIDATION_ERROR, field="ttl_s", max=self.ctx.settings.hold_ttl_max_s
            )
        await self.ctx.require_fresh()

        def _write(conn: sqlite3.Connection) -> Any:
            replayed = self._replay(conn, "hold", request.hold_id, fingerprint)
            if replayed is not None:
                return replayed
            card = self._card(conn, request.card)
            if self.ctx.settings.redemption_confirmation == "code":
                if request.verification_id is None:
                    raise BonusError(ErrorCode.VERIFICATION_REQUIRED)
                self._use_verification(conn, request.verification_id, card.number)
            now = self.ctx.clock.now()
            today = self.ctx.today()
            expires_at = now + timedelta(seconds=request.ttl_s)
            available = balance(card.wallet, today, now).available_kop
            if request.amount > available:
                raise BonusError(ErrorCode.INSUFFICIENT_BALANCE, available=f"{available / 100:.2f}")
            operation = HoldPlaced(
                card=card.number,
                hold_id=request.hold_id,
                amount_kop=request.amount,
                expires_at=expires_at,
            )
            wallet = hold_effect(card.wallet, operation)
            op_id = new_op_id()
            response = HoldResponse(
                hold_id=request.hold_id,
                card=card.number,
                amount=request.amount,
                expires_at=expires_at,
                state="active",
                balance=_balance_out(balance(wallet, today, now)),
            )
            seq = store.append_entry(
                conn,
                op_id=op_id,
                idem_key=request.hold_id,
                request_hash=fingerprint,
                operation=operation,
                response=_dump(response),
                created_at=now,
            )
            store.save_wallet(conn, card.number, wallet)
            store.insert_hold(
                conn,
                store.HoldRow(
                    request.hold_id, card.number, request.amount, expires_at, "active", seq
                ),
            )
            if request.verification_id is not None:
                store.update_verification(conn, request.verification_id, used_by=op_id)
            return _dump(response)

        return await self.ctx.db.write(_write)

    async def release_hold(self, hold_id: str) -> dict[str, Any]:
        """Release a hold early; releasing it again answers the same."""

        def _write(conn: sqlite3.Connection) -> Any:
            hold = store.find_hold(conn, hold_id)
            if hold is None:
                raise BonusError(ErrorCode.HOLD_NOT_FOUND)
            if hold.state == "consumed":
                raise BonusError(ErrorCode.HOLD_RESOLVED, state=hold.state)
            found = store.find_card(conn, hold.card)
            assert found is not None
            now = self.ctx.clock.now()
            wallet = release_effect(found.wallet, hold_id)
            state = hold.state
            if state == "active":
                ended: Literal["released", "expired"] = (
                    "released" if hold.expires_at > now else "expired"
                )
                state = ended
                store.append_entry(
                    conn,
                    op_id=new_op_id(),
                    idem_key=hold_id,
                    request_hash="",
                    operation=HoldReleased(card=hold.card, hold_id=hold_id, state=ended),
                    response={},
                    created_at=now,
                )
                store.set_hold_state(conn, hold_id, state)
                store.save_wallet(conn, hold.card, wallet)
            response = HoldResponse(
                hold_id=hold_id,
                card=hold.card,
                amount=hold.amount_kop,
                expires_at=hold.expires_at,
                state=state,
                balance=_balance_out(balance(wallet, self.ctx.today(), now)),
            )
            return _dump(response)

        return await self.ctx.db.write(_write)
