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
from central.db import Database
from central.ledger import LedgerTx
from central.program import current_settings
from shared.errors import BonusError, ErrorCode
from shared.lots import Hold, balance, local_date
from shared.protocol import AuthorizeRequest, AuthorizeResponse, auth_hold_id


async def authorize(
    db: Database, store_id: str, request: AuthorizeRequest, now: datetime, hold_s: int
) -> AuthorizeResponse:
    """Approve a redemption when the card's chain-wide balance covers it.

    The balance is the one the card will have once the store's queue has reached this server,
    counting only what can lower it: the central ledger's net (usable points − active holds −
    debt), plus the store's own holds its queue or this sale ends (``releases``: its pending
    authorisations, the holds it consumed or released, the hold this sale consumes), plus its
    pending net effect when that is a debit (a claimed credit counts as zero), minus its
    pending holds.  Asked again under the same id (a retried receipt), the earlier approval counts as
    released and the new amount is decided afresh.
    """
    hold_id = auth_hold_id(request.authorization_id)
    async with db.write() as conn:
        settings, _ = await current_settings(conn)
        previous = (
            await conn.execute(
                sa.select(
                    schema.holds.c.card, schema.holds.c.state, schema.holds.c.amount_kop
                ).where(schema.holds.c.hold_id == hold_id)
            )
        ).first()
        if previous is not None and previous.state == "consumed":
            # The sale it authorised has reached this server already: nothing is left to decide.
            return AuthorizeResponse(approved=True, available=previous.amount_kop)
        tx = LedgerTx(conn, now, lock=not db.sqlite)
        await tx.load([request.card] if previous is None else [request.card, previous.card])
        card = tx.resolve(request.card)
        if card is None:
            raise BonusError(ErrorCode.CARD_NOT_FOUND)
        if card.status == "blocked":
            raise BonusError(ErrorCode.CARD_BLOCKED)
        # Only this store's own holds can be ended by its claim, and its pending credits count
        # as nothing: whatever a store claims can only lower what it may redeem.
        ended = {
            hold for hold in {*request.releases, hold_id} if card.hold_stores.get(hold) == store_id
        }
        available = (
            balance(card.wallet, local_date(now, settings.zone), now).net_kop
            + sum(
                hold.amount_kop
                for hold in card.wallet.holds
                if hold.hold_id in ended and hold.active_at(now)
            )
            + min(request.pending_delta, 0)
            - request.pending_held
        )
        if request.amount > available:
            return AuthorizeResponse(approved=False, available=max(0, available))
        expires_at = now + timedelta(seconds=hold_s)
        if previous is None:
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
        else:
            # A retried receipt: its one authorisation hold now sets aside the new amount (for
            # the card it names now; a card it named before is published again without it).
            await conn.execute(
                schema.holds.update()
                .where(schema.holds.c.hold_id == hold_id)
                .values(
                    card=card.number,
                    amount_kop=request.amount,
                    expires_at=expires_at,
                    state="active",
                )
            )
            before = tx.cards.get(previous.card)
            if before is not None and before is not card:
                before.wallet = replace(
                    before.wallet,
                    holds=tuple(hold for hold in before.wallet.holds if hold.hold_id != hold_id),
                )
                before.changed = True
        others = tuple(hold for hold in card.wallet.holds if hold.hold_id != hold_id)
        card.wallet = replace(
            card.wallet, holds=(*others, Hold(hold_id, request.amount, expires_at))
        )
        card.hold_stores[hold_id] = store_id
        card.changed = True
        await tx.flush()
        return AuthorizeResponse(approved=True, available=available, expires_at=expires_at)
