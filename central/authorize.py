"""Online authorisation of redemptions against the chain-wide balance.

While the central server is reachable, a store asks here before redeeming.  An approval sets the
amount aside as a short hold (``auth:<id>``) visible to every store through the change feed, so
two stores cannot both spend the same points; the sale that follows consumes the hold, and an
unused one ends by itself.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import sqlalchemy as sa

from central import schema
from central.apply import aware
from central.db import Database
from central.ledger import LedgerTx, auth_hold_id
from central.program import current_settings
from shared.errors import BonusError, ErrorCode
from shared.lots import Hold, balance, local_date
from shared.protocol import AuthorizeRequest, AuthorizeResponse


async def authorize(
    db: Database, store_id: str, request: AuthorizeRequest, now: datetime, hold_s: int
) -> AuthorizeResponse:
    """Approve a redemption when the chain-wide balance (plus the store's pending net) covers it."""
    hold_id = auth_hold_id(request.authorization_id)
    async with db.write() as conn:
        existing = (
            await conn.execute(sa.select(schema.holds).where(schema.holds.c.hold_id == hold_id))
        ).first()
        if existing is not None:
            # The same authorisation asked again (a retry): the same answer.
            return AuthorizeResponse(
                approved=True, available=existing.amount_kop, expires_at=aware(existing.expires_at)
            )
        settings, _ = await current_settings(conn)
        tx = LedgerTx(conn, now, lock=not db.sqlite)
        await tx.load([request.card])
        card = tx.resolve(request.card)
        if card is None:
            raise BonusError(ErrorCode.CARD_NOT_FOUND)
        if card.status == "blocked":
            raise BonusError(ErrorCode.CARD_BLOCKED)
        available = balance(card.wallet, local_date(now, settings.zone), now).net_kop
        available += request.pending_delta
        if request.amount > available:
            return AuthorizeResponse(approved=False, available=max(0, available))
        expires_at = now + timedelta(seconds=hold_s)
        tx.new_holds.append(
            {
                "hold_id": hold_id,
                "card": card.number,
                "store_id": store_id,
                "amount_kop": request.amount,
                "expires_at": expires_at,
                "state": "active",
            }
        )
        card.wallet = replace(
            card.wallet, holds=(*card.wallet.holds, Hold(hold_id, request.amount, expires_at))
        )
        card.changed = True
        await tx.flush()
        return AuthorizeResponse(approved=True, available=available, expires_at=expires_at)
