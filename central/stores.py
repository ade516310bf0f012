"""The registry of stores and their secret tokens (stored as hashes)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema


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


async def rotate_token(conn: AsyncConnection, store_id: str) -> str | None:
    """Give a store a new token; the old one stops working at once."""
    token = secrets.token_urlsafe(32)
    result = await conn.execute(
        schema.stores.update()
        .where(schema.stores.c.store_id == store_id)
        .values(token_hash=hash_token(token))
    )
    return token if result.rowcount else None


async def authenticate(conn: AsyncConnection, store_id: str, token: str) -> Store | None:
    """The store whose token this is, or None."""
    row = (
        await conn.execute(sa.select(schema.stores).where(schema.stores.c.store_id == store_id))
    ).first()
    if row is None or not hmac.compare_digest(row.token_hash, hash_token(token)):
        return None
    return Store(row.store_id, row.name, row.last_applied_seq, row.last_sync_at)


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
        }
        for row in rows
    ]
