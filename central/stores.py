"""The registry of stores, their secret tokens (stored as hashes) and their life: a store is
``active``; ``disabled`` (its syncs refused, so it redeems nothing; what it records waits at the
store) and enabled again; ``closing`` (it uploads what it holds and records nothing new) until
it reports a journal the central server holds entirely, then ``closed`` for good.  A token is
rotated with an overlap: the old one works until the store first uses the new one, or until the
overlap ends."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.apply import aware
from shared.protocol import STORE_STATES

StoreState = Literal["active", "disabled", "closing", "closed"]
assert get_args(StoreState) == STORE_STATES  # the protocol's list, in one order
#: How long a rotated token's predecessor keeps working by default, and at most (hours): long
#: enough to install the new token at a store, short enough not to keep a leaked one alive.
TOKEN_OVERLAP_DEFAULT_H: Final = 72.0
TOKEN_OVERLAP_MAX_H: Final = 24.0 * 30
#: Which states each change may start from.
_CHANGES: Final[dict[str, tuple[str, ...]]] = {
    "disabled": ("active",),
    "active": ("disabled",),
    "closing": ("active", "disabled"),
    "closed": ("closing",),
}


class StoreExists(ValueError):
    """A store id that is taken."""


def hash_token(token: str) -> str:
    """A store token's hash; tokens are 256-bit random, so a plain SHA-256 is enough."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Store:
    """A store as the sync endpoint sees it."""

    store_id: str
    name: str
    last_applied_seq: int
    last_sync_at: datetime | None
    state: str = "active"
    closing_told_at: datetime | None = None
    reported_head_seq: int | None = None


async def add_store(
    conn: AsyncConnection,
    store_id: str,
    name: str,
    now: datetime,
    *,
    address: str | None = None,
    opening_hours: str | None = None,
    phone: str | None = None,
) -> str:
    """Register a store; returns its token (shown once, only its hash is kept)."""
    exists = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(schema.stores)
        .where(schema.stores.c.store_id == store_id)
    )
    if exists:
        raise StoreExists(store_id)
    token = secrets.token_urlsafe(32)
    await conn.execute(
        schema.stores.insert().values(
            store_id=store_id,
            name=name,
            address=address,
            opening_hours=opening_hours,
            phone=phone,
            token_hash=hash_token(token),
            created_at=now,
        )
    )
    return token


async def rotate_token(
    conn: AsyncConnection, store_id: str, now: datetime, overlap: timedelta
) -> str | None:
    """Give a store a new token; the old one keeps working for ``overlap`` or until the store
    first uses the new one (no overlap: it stops at once).  None for an unknown store."""
    token = secrets.token_urlsafe(32)
    values: dict[str, object] = {"token_hash": hash_token(token)}
    if overlap > timedelta(0):
        values |= {
            "previous_token_hash": schema.stores.c.token_hash,
            "previous_token_until": now + overlap,
        }
    else:
        values |= {"previous_token_hash": None, "previous_token_until": None}
    result = await conn.execute(
        schema.stores.update()
        .where(schema.stores.c.store_id == store_id, schema.stores.c.state != "closed")
        .values(**values)
    )
    return token if result.rowcount else None


@dataclass(frozen=True)
class Authenticated:
    """A store whose token matched; ``new_token_first_used`` when it used a rotated token while
    the old one still worked (the caller ends the overlap)."""

    store: Store
    new_token_first_used: bool


async def authenticate(
    conn: AsyncConnection, store_id: str, token: str, now: datetime
) -> Authenticated | None:
    """The store whose token (or still-working previous token) this is, or None."""
    row = (
        await conn.execute(sa.select(schema.stores).where(schema.stores.c.store_id == store_id))
    ).first()
    if row is None:
        return None
    given = hash_token(token)
    current = hmac.compare_digest(row.token_hash, given)
    previous = (
        row.previous_token_hash is not None
        and row.previous_token_until is not None
        and aware(row.previous_token_until) > now
        and hmac.compare_digest(row.previous_token_hash, given)
    )
    if not current and not previous:
        return None
    store = Store(
        row.store_id,
        row.name,
        row.last_applied_seq,
        row.last_sync_at,
        row.state,
        aware(row.closing_told_at) if row.closing_told_at else None,
        row.reported_head_seq,
    )
    return Authenticated(store, current and row.previous_token_hash is not None)


async def end_token_overlap(conn: AsyncConnection, store_id: str) -> None:
    """The store has used its new token: the old one stops working."""
    await conn.execute(
        schema.stores.update()
        .where(schema.stores.c.store_id == store_id)
        .values(previous_token_hash=None, previous_token_until=None)
    )


class StateChangeRefused(ValueError):
    """A store's state cannot change so (unknown store, or not from its current state)."""


async def change_state(
    conn: AsyncConnection, store_id: str, state: StoreState, now: datetime, reason: str | None
) -> str:
    """Move a store to ``state``; returns the state it was in.  The same state again changes
    nothing (idempotent)."""
    row = (
        await conn.execute(
            sa.select(schema.stores.c.state)
            .where(schema.stores.c.store_id == store_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise StateChangeRefused(f"no store {store_id}")
    if row.state == state:
        return str(row.state)
    if row.state not in _CHANGES[state]:
        raise StateChangeRefused(f"store {store_id} is {row.state}: it cannot become {state}")
    values: dict[str, object] = {"state": state, "state_reason": reason, "state_changed_at": now}
    if state == "closing":
        values["closing_told_at"] = None
    await conn.execute(
        schema.stores.update().where(schema.stores.c.store_id == store_id).values(**values)
    )
    return str(row.state)


async def note_greeting(
    conn: AsyncConnection, store: Store, journal_head: int | None, now: datetime
) -> str:
    """Record what a store's greeting says of its journal; a closing store that was told so and
    reports nothing the central server lacks is closed now.  Returns the store's state."""
    values: dict[str, object] = {}
    state = store.state
    if journal_head is not None and journal_head != store.reported_head_seq:
        # Written when it moves: a store greeting every round with the same head costs no write.
        values |= {"reported_head_seq": journal_head, "reported_head_at": now}
    if store.state == "closing":
        if store.closing_told_at is None:
            values["closing_told_at"] = now
        elif journal_head is not None and journal_head <= store.last_applied_seq:
            values |= {"state": "closed", "state_changed_at": now}
            state = "closed"
    if values:
        await conn.execute(
            schema.stores.update()
            .where(schema.stores.c.store_id == store.store_id)
            .values(**values)
        )
    return state


async def list_stores(conn: AsyncConnection) -> list[dict[str, object]]:
    """Every store with its sync health."""
    rows = (await conn.execute(sa.select(schema.stores).order_by(schema.stores.c.store_id))).all()
    return [
        {
            "store_id": row.store_id,
            "name": row.name,
            "address": row.address,
            "opening_hours": row.opening_hours,
            "phone": row.phone,
            "last_applied_seq": row.last_applied_seq,
            "last_sync_at": row.last_sync_at.isoformat() if row.last_sync_at else None,
            "ops_differing": row.ops_differing,
            "state": row.state,
            "state_reason": row.state_reason,
            "state_changed_at": row.state_changed_at.isoformat() if row.state_changed_at else None,
            "reported_head_seq": row.reported_head_seq,
            # Operations the store reported that the central server does not hold yet (as of
            # its last greeting; None for a store that never reported its journal).
            "backlog": (
                None
                if row.reported_head_seq is None
                else max(0, row.reported_head_seq - row.last_applied_seq)
            ),
            "token_overlap_until": (
                row.previous_token_until.isoformat() if row.previous_token_until else None
            ),
        }
        for row in rows
    ]
