"""Redemption beyond the one-hour rule: online authorisation against the chain-wide balance
while the central server answers, and the bounded offline risk when it does not.

The central server gets ``online_authorization_timeout_s`` to answer; after that the store
falls back to its own rules, and the offline caps of the program settings (off by default)
bound what it may redeem alone.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import date

from agent import store
from agent.context import AgentContext
from shared.errors import BonusError, ErrorCode
from shared.protocol import AuthorizeRequest, AuthorizeResponse

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the central server said: approved (with its id), or None when it did not answer."""

    authorization_id: str | None


def pending_delta(conn: sqlite3.Connection, card: str) -> int:
    """The net effect on a card of this store's operations the central server has not seen."""
    acked = int(store.get_meta(conn, "acked_seq") or 0)
    entries = store.pending_entries_for(conn, [card], acked)
    return sum(int(entry.payload.get("effect", {}).get("delta", 0)) for entry in entries)


async def authorize_online(
    ctx: AgentContext, card: str, amount_kop: int, authorization_id: str
) -> Decision:
    """Ask the central server; refuse on a decline, fall back to local rules on silence."""
    if ctx.central is None:
        return Decision(None)
    request = AuthorizeRequest(
        authorization_id=authorization_id,
        card=card,
        amount=amount_kop,
        pending_delta=pending_delta(ctx.db.reader, card),
    )
    answer: AuthorizeResponse | None = await ctx.central(request)
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
            "SELECT coalesce(sum(json_extract(payload, '$.effect.redeemed')), 0) FROM journal "
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
            "AND json_extract(payload, '$.effect.redeemed') > 0",
            (card, today.isoformat()),
        ).fetchone()
        if row and int(row[0]) >= settings.offline_redemptions_per_card_day_max:
            raise BonusError(ErrorCode.REDEMPTION_OFFLINE_LIMIT, limit="per_card_day")
