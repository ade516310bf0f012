"""The chain's phone key at the central server: the hashes stores find cards by.

The central server computes each card's phone hash once, when the registration arrives, keeps it
in ``cards.phone_hash`` and ships it in card states, so a store's bootstrap hashes nothing. The
hash is slow on purpose (``shared.phones.PhoneKey``): uploads compute it in threads before the
batch's transaction, and ``rehash`` converts the cards made before it (or under another cost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

from central import schema
from central.db import Database, next_cursor
from service.phonekey import PhoneHasher
from shared.phones import PhoneHashParams, PhoneKey

log = logging.getLogger(__name__)

#: The meta row of the key (hex); ``migrate`` creates it.
PHONE_HASH_KEY_META: Final = "phone_hash_key"
#: Cards converted per transaction by ``rehash``: an interruption loses at most this much work.
REHASH_CHUNK_CARDS: Final = 500


async def load_phone_key(db: Database, params: PhoneHashParams) -> PhoneKey:
    """The chain's phone key, at the cost the configuration sets."""
    async with db.read() as conn:
        value = await conn.scalar(
            sa.select(schema.meta.c.value).where(schema.meta.c.key == PHONE_HASH_KEY_META)
        )
    assert value is not None, "migrate creates the phone hash key"
    key = PhoneKey(bytes.fromhex(value), params)
    if params.cheap:
        log.warning(
            "phone hashes have a test cost (%d KiB, %d passes): not for customers' phones",
            params.memory_kib,
            params.time_cost,
        )
    return key


@dataclass
class RehashProgress:
    """Where a ``rehash`` stands."""

    converted: int = 0
    checked: int = 0
    last_card: str = ""
    elapsed_s: float = 0.0


def _stale(key: PhoneKey) -> sa.ColumnElement[bool]:
    """Cards whose hash is missing or not of this key, among those that must have one
    (a merged card is found through its primary and has none)."""
    cards = schema.cards
    return sa.and_(
        cards.c.phone.is_not(None),
        cards.c.status != "merged",
        sa.or_(cards.c.phone_hash.is_(None), ~cards.c.phone_hash.startswith(key.key_id + ":")),
    )


async def count_stale(db: Database, key: PhoneKey) -> int:
    """How many cards still need their hash made with this key."""
    async with db.read() as conn:
        found = await conn.scalar(
            sa.select(sa.func.count()).select_from(schema.cards).where(_stale(key))
        )
    return int(found or 0)


async def rehash(
    db: Database,
    hasher: PhoneHasher,
    *,
    chunk_cards: int = REHASH_CHUNK_CARDS,
    report: Callable[[RehashProgress], None] | None = None,
) -> RehashProgress:
    """Give every card that needs one a hash of the current key, a chunk at a time.

    Resumable: it looks for what is still stale, so a run stopped anywhere (Ctrl-C, a crash)
    goes on where it left off. It can run beside the server: each chunk is hashed outside any
    transaction and written in a short one, and a card whose phone or status changed meanwhile
    is left to the next run. Each chunk's cards move to a new cursor of the change feed: stores
    that hold them take the new hashes with their next sync.
    """
    key = hasher.key
    cards = schema.cards
    progress = RehashProgress()
    started = time.monotonic()
    while True:
        async with db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(cards.c.number, cards.c.phone)
                    .where(_stale(key), cards.c.number > progress.last_card)
                    .order_by(cards.c.number)
                    .limit(chunk_cards)
                )
            ).all()
        if not rows:
            break
        hashes = await hasher.hash_many(str(row.phone) for row in rows)
        async with db.write() as conn:
            cursor = await next_cursor(conn)
            for row in rows:
                result = await conn.execute(
                    cards.update()
                    .where(
                        cards.c.number == row.number,
                        cards.c.phone == row.phone,
                        cards.c.status != "merged",
                    )
                    .values(phone_hash=hashes[str(row.phone)], cursor=cursor)
                )
                progress.converted += result.rowcount
        progress.checked += len(rows)
        progress.last_card = str(rows[-1].number)
        progress.elapsed_s = time.monotonic() - started
        if report is not None:
            report(progress)
    progress.elapsed_s = time.monotonic() - started
    return progress
