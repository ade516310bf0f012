"""Redemption beyond the one-hour rule: online authorisation against the chain-wide balance
while the central server answers, and the bounded offline risk when it does not.

The central server gets ``online_authorization_timeout_s`` to answer; after that the store
falls back to its own rules, and the offline caps of the program settings (on by default)
bound what it may redeem alone.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime

from agent import store
from agent.context import AgentContext
from shared.errors import BonusError, ErrorCode
from shared.journal import HoldReleased, Return, Sale
from shared.protocol import AuthorizeRequest, AuthorizeResponse, auth_hold_id

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the central server said: approved (with its id), or None when it did not answer."""

    authorization_id: str | None


@dataclass(frozen=True, slots=True)
class PendingView:
    """What the central server cannot know yet of a card: this store's unacknowledged queue."""

    delta_kop: int
    held_kop: int
    releases: list[str]


def pending_view(
    conn: sqlite3.Connection,
    card: str,
    consumed_hold: str | None,
    today: date,
    now: datetime,
    store_id: str,
) -> PendingView:
    """The card's pending effect as the central server's authorisation takes it.

    ``delta_kop``: the net effect on usable points and debt (an accrual not usable yet left
    out); ``held_kop``: holds placed here, not uploaded, still active (but the one this sale
    consumes); ``releases``: holds the central server may still count that the queue or this
    sale ends.
    """
    acked = int(store.get_meta(conn, "acked_seq") or 0)
    delta = 0
    releases: set[str] = set()
    for entry in store.pending_entries_for(conn, [card], acked):
        operation = entry.operation
        if isinstance(operation, Sale):
            accrued = operation.claimed_accrued_kop
            if operation.accrual_active_from and operation.accrual_active_from > today:
                accrued = 0
            delta += accrued - operation.claimed_redeemed_kop
            releases.add(auth_hold_id(f"{store_id}:{operation.receipt_id}"))
            if operation.authorization_id:
                releases.add(auth_hold_id(operation.authorization_id))
            if operation.hold_id:
                releases.add(operation.hold_id)
        elif isinstance(operation, Return):
            delta += operation.redemption_refunded_kop - operation.accrual_reversed_kop
        elif isinstance(operation, HoldReleased):
            releases.add(operation.hold_id)
    if consumed_hold is not None:
        releases.add(consumed_hold)
    held = sum(
        hold.amount_kop
        for hold in store.holds_placed_after(conn, card, acked)
        if hold.state == "active" and hold.expires_at > now and hold.hold_id != consumed_hold
    )
    return PendingView(delta, held, sorted(releases))


async def authorize_online(
    ctx: AgentContext,
    card: str,
    amount_kop: int,
    authorization_id: str,
    consumed_hold: str | None = None,
) -> Decision:
    """Ask the central server; refuse on a decline, fall back to local rules on silence.

    The central server counts none of this store's pending credits (a store's claim can only
    lower what it may redeem): declined while the queue holds credits of the card, the store
    uploads them in one quick round and asks again.
    """
    if ctx.central is None:
        return Decision(None)
    answer, view = await _ask(ctx, card, amount_kop, authorization_id, consumed_hold)
    if (
        answer is not None
        and not answer.approved
        and view.delta_kop > 0
        and ctx.quick_round is not None
        and await ctx.quick_round(ctx.config.sync_quick_round_timeout_s)
    ):
        answer, view = await _ask(ctx, card, amount_kop, authorization_id, consumed_hold)
    if answer is None:
        log.info("central authorisation unavailable; redeeming under the offline rules")
        return Decision(None)
    if not answer.approved:
        raise BonusError(
            ErrorCode.INSUFFICIENT_BALANCE,
            reason="chain_wide_balance",
            available=f"{answer.available / 100:.2f}",
        )
    return Decision(authorization_id)


async def _ask(
    ctx: AgentContext, card: str, amount_kop: int, authorization_id: str, consumed_hold: str | None
) -> tuple[AuthorizeResponse | None, PendingView]:
    assert ctx.central is not None
    view = pending_view(
        ctx.db.reader, card, consumed_hold, ctx.today(), ctx.clock.now(), ctx.config.store_id
    )
    request = AuthorizeRequest(
        authorization_id=authorization_id,
        card=card,
        amount=amount_kop,
        pending_delta=view.delta_kop,
        pending_held=view.held_kop,
        releases=view.releases,
    )
    return await ctx.central(request), view


def check_offline_caps(
    ctx: AgentContext, conn: sqlite3.Connection, card: str, amount_kop: int, today: date
) -> None:
    """Refuse a redemption made without central authorisation beyond the offline caps."""
    settings = ctx.settings
    if (
        settings.offline_redemption_max_kop is not None
        and amount_kop > settings.offline_redemption_max_kop
    ):
        raise BonusError(
            ErrorCode.REDEMPTION_OFFLINE_LIMIT,
            limit="per_redemption",
            max=f"{settings.offline_redemption_max_kop / 100:.2f}",
        )
    if settings.offline_redemption_store_total_max_kop is not None:
        mark = ctx.freshness.mark
        since = mark.wall_at.isoformat() if mark else ""
        row = conn.execute(
            "SELECT coalesce(sum(json_extract(payload, '$.redeem_kop')), 0) FROM journal "
            "WHERE kind = 'sale' AND json_extract(payload, '$.authorization_id') IS NULL "
            "AND created_at > ?",
            (since,),
        ).fetchone()
        total = int(row[0]) if row else 0
        if total + amount_kop > settings.offline_redemption_store_total_max_kop:
            raise BonusError(ErrorCode.REDEMPTION_OFFLINE_LIMIT, limit="store_total_since_sync")
    if settings.offline_redemptions_per_card_day_max is not None:
        row = conn.execute(
            "SELECT count(*) FROM journal WHERE kind = 'sale' AND card = ? "
            "AND json_extract(payload, '$.day') = ? "
            "AND json_extract(payload, '$.authorization_id') IS NULL "
            "AND json_extract(payload, '$.redeem_kop') > 0",
            (card, today.isoformat()),
        ).fetchone()
        if row and int(row[0]) >= settings.offline_redemptions_per_card_day_max:
            raise BonusError(ErrorCode.REDEMPTION_OFFLINE_LIMIT, limit="per_card_day")
