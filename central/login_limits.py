"""Limits on office logins: per client address and per login name, kept in the database.

Every failed login counts against two keys: the client's address (``address:…``) and the login
name (``login:…``), whether or not an account has that name — an unknown login pays exactly what
a known one does, so the answers tell nothing of which logins exist.  The first failures of a
key are free; each further one blocks the key for 1, 2, 4 … seconds, up to a cap; a key's count
starts again ``forget_s`` after its last failure.  While a key is blocked, attempts are refused
with ``login_rate_limited`` before any password is hashed, and they neither count nor extend the
block, so the block ends on time whatever the flood.  A key one failure short of a block has
one attempt hashed at a time in a process (``InFlight``), so the attempts that arrive as a
block ends do not all get their guess in before the first of them fails.

Why it cannot lock the office out:

- A flood from one address, or a few, trips those addresses whatever logins it tries (and for
  longest: the address's cap is the longer one); it is then refused without hashing.
- The login name's delay is capped (``login_account_delay_max_s``), so a flood against one login
  from many addresses slows that login, never locks it for good, and never touches other logins.
- An address the account has logged in from (``staff_addresses``, for ``known_address_days``)
  skips the login name's delay, not its own: the owner at their usual desk logs in during such a
  flood.  An attacker gains nothing from it without having logged in as that account before.

The state is in the database, so every server process (``workers``, several instances on one
PostgreSQL) sees the same counts.  Each failure is one short write transaction (one statement
counts both keys); the checks are reads, and a process remembers the address blocks it has seen
until they end (``KnownBlocks``), so that a blocked flood costs no query at all.  Rows of keys
whose count has reset are pruned (``prune``).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.config import CentralConfig

#: The first delay after the free failures; each further failure doubles it, up to the cap.
FIRST_DELAY_S = 1
#: Addresses kept per account: the newest ones.
KNOWN_ADDRESSES_PER_ACCOUNT_MAX = 20
#: Blocks one process remembers (``KnownBlocks``).
BLOCKS_CACHED_MAX = 10_000
#: Rows deleted per statement by ``prune`` (so that a sweep after a flood holds SQLite's writer
#: lock only briefly at a time).
PRUNE_CHUNK_ROWS = 500


@dataclass(frozen=True)
class LoginPolicy:
    """The limits, from the central server's configuration."""

    address_failures_free: int = 10
    address_delay_max_s: int = 900
    account_failures_free: int = 5
    account_delay_max_s: int = 300
    forget_s: int = 3600
    known_address_days: int = 90
    refusal_pause_s: float = 0.5
    refusal_pauses_max: int = 256

    @classmethod
    def from_config(cls, config: CentralConfig) -> LoginPolicy:
        return cls(
            address_failures_free=config.login_address_failures_free,
            address_delay_max_s=config.login_address_delay_max_s,
            account_failures_free=config.login_account_failures_free,
            account_delay_max_s=config.login_account_delay_max_s,
            forget_s=config.login_failures_forget_s,
            known_address_days=config.login_known_address_days,
            refusal_pause_s=config.login_refusal_pause_s,
            refusal_pauses_max=config.login_refusal_pauses_max,
        )


class RefusalPauses:
    """A short pause before a refused login is answered, at most ``pauses_max`` at once.

    A flood's clients send their next attempt when the last is answered: answering a refusal
    at once only makes them send more, and each costs the event loop that store sync shares.
    A pause costs nothing but a waiting coroutine, so a client refused ``pause_s`` later sends
    a few attempts a second instead of hundreds.  Bounded: beyond ``pauses_max`` refusals are
    answered at once, so a flood of many connections holds no more than that many.
    """

    def __init__(self, pause_s: float, pauses_max: int) -> None:
        self.pause_s = pause_s
        self.pauses_max = pauses_max
        self._pausing = 0

    @property
    def pausing(self) -> int:
        """Refusals waiting out their pause now."""
        return self._pausing

    async def pause(self) -> None:
        if self.pause_s <= 0 or self._pausing >= self.pauses_max:
            return
        self._pausing += 1
        try:
            await asyncio.sleep(self.pause_s)
        finally:
            self._pausing -= 1


def delay_s(failures: int, free: int, max_s: int) -> int:
    """Seconds a key is blocked after its ``failures``-th failure in a row: none for the first
    ``free``, then 1, 2, 4 … up to ``max_s``."""
    if failures <= free:
        return 0
    exponent = failures - free - 1
    if exponent >= max_s.bit_length():
        return max_s
    return min(max_s, FIRST_DELAY_S << exponent)


def address_key(address: str) -> str:
    return f"address:{address}"


def account_key(login: str) -> str:
    return f"login:{login}"


def _aware(moment: datetime) -> datetime:
    # SQLite gives back naive UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _wait_s(blocked_until: datetime | None, now: datetime) -> int:
    if blocked_until is None:
        return 0
    left = (_aware(blocked_until) - now).total_seconds()
    return max(1, math.ceil(left)) if left > 0 else 0


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


class KnownBlocks:
    """The address blocks this process has read or set, until they end: refusing a flood from a
    blocked address then costs no query.  Only a cache — the database holds the state — and
    exact as one, because an address's block never ends early (a success does not start an
    address's count again).  Bounded: the oldest go first."""

    def __init__(self, size_max: int = BLOCKS_CACHED_MAX) -> None:
        self.size_max = size_max
        self._until: dict[str, datetime] = {}

    def wait_s(self, key: str, now: datetime) -> int:
        until = self._until.get(key)
        if until is None:
            return 0
        wait = _wait_s(until, now)
        if not wait:
            del self._until[key]
        return wait

    def remember(self, blocks: dict[str, datetime], now: datetime) -> None:
        if len(self._until) + len(blocks) > self.size_max:
            self._until = {key: until for key, until in self._until.items() if until > now}
            while self._until and len(self._until) + len(blocks) > self.size_max:
                del self._until[next(iter(self._until))]  # the oldest remembered
        self._until.update(blocks)


@dataclass(frozen=True)
class Check:
    """What the limits say of one attempt before its password is hashed."""

    #: Seconds until it may be tried; 0 = now.
    wait_s: int
    #: Keys whose next failure blocks them: one attempt at a time may be hashed for each
    #: (``InFlight``), or the attempts that arrive while a block is ending would all get in.
    watched: tuple[str, ...]


class InFlight:
    """Watched keys with an attempt being hashed in this process."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def claim(self, keys: tuple[str, ...]) -> bool:
        """Take the keys for one attempt; False when another attempt holds one of them."""
        if any(key in self._keys for key in keys):
            return False
        self._keys.update(keys)
        return True

    def release(self, keys: tuple[str, ...]) -> None:
        self._keys.difference_update(keys)


async def check_attempt(
    conn: AsyncConnection,
    policy: LoginPolicy,
    login: str,
    address: str,
    now: datetime,
    known_blocks: KnownBlocks | None = None,
) -> Check:
    """Whether this login from this address may be tried now (a read)."""
    throttle = schema.login_throttle
    keys = {
        address_key(address): policy.address_failures_free,
        account_key(login): policy.account_failures_free,
    }
    rows = (
        await conn.execute(
            sa.select(
                throttle.c.key,
                throttle.c.failures,
                throttle.c.last_failure_at,
                throttle.c.blocked_until,
            ).where(
                throttle.c.key.in_(sorted(keys)),
                throttle.c.last_failure_at >= now - timedelta(seconds=policy.forget_s),
            )
        )
    ).all()
    waits = {row.key: _wait_s(row.blocked_until, now) for row in rows}
    watched = tuple(sorted(row.key for row in rows if row.failures >= keys[row.key]))
    wait = waits.get(address_key(address), 0)
    if wait and known_blocks is not None:
        blocked_until = next(row.blocked_until for row in rows if row.key == address_key(address))
        known_blocks.remember({address_key(address): _aware(blocked_until)}, now)
    account_wait = waits.get(account_key(login), 0)
    if account_wait > wait and not await _known_address(conn, policy, login, address, now):
        wait = account_wait
    return Check(wait, watched)


async def _known_address(
    conn: AsyncConnection, policy: LoginPolicy, login: str, address: str, now: datetime
) -> bool:
    known = schema.staff_addresses
    found = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(known)
        .where(
            known.c.login == login,
            known.c.address == address,
            known.c.last_login_at > now - timedelta(days=policy.known_address_days),
        )
    )
    return bool(found)


async def record_failure(
    conn: AsyncConnection, policy: LoginPolicy, login: str, address: str, now: datetime
) -> dict[str, datetime]:
    """Count a failed login against its address and its login name, inside the caller's write
    transaction; returns the blocks it set (key → until when).

    One statement counts both keys (and a second sets the blocks, when one is due), so that the
    transaction — on SQLite the one writer lock — is short even when the event loop is busy.
    """
    throttle = schema.login_throttle
    limits = {
        address_key(address): (policy.address_failures_free, policy.address_delay_max_s),
        account_key(login): (policy.account_failures_free, policy.account_delay_max_s),
    }
    forgotten_before = now - timedelta(seconds=policy.forget_s)
    statement = _insert(conn, throttle).values(
        # One lock order for every process: two failures never deadlock.
        [{"key": key, "failures": 1, "last_failure_at": now} for key in sorted(limits)]
    )
    counted = await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["key"],
            set_={
                "failures": sa.case(
                    (throttle.c.last_failure_at >= forgotten_before, throttle.c.failures + 1),
                    else_=1,
                ),
                "last_failure_at": statement.excluded.last_failure_at,
            },
        ).returning(throttle.c.key, throttle.c.failures)
    )
    blocks = {}
    for key, failures in counted.all():
        free, max_s = limits[key]
        delay = delay_s(int(failures), free, max_s)
        if delay:
            blocks[key] = now + timedelta(seconds=delay)
    if blocks:
        await conn.execute(
            throttle.update()
            .where(throttle.c.key.in_(sorted(blocks)))
            .values(
                blocked_until=sa.case(
                    *((throttle.c.key == key, until) for key, until in sorted(blocks.items()))
                )
            )
        )
    return blocks


async def record_success(
    conn: AsyncConnection, policy: LoginPolicy, login: str, address: str, now: datetime
) -> None:
    """After a successful login: the login name's count starts again (the address's does not,
    or one valid account would buy an address fresh guesses at others), and the address is
    known to the account."""
    throttle = schema.login_throttle
    known = schema.staff_addresses
    await conn.execute(throttle.delete().where(throttle.c.key == account_key(login)))
    statement = _insert(conn, known).values(login=login, address=address, last_login_at=now)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["login", "address"],
            set_={"last_login_at": statement.excluded.last_login_at},
        )
    )
    # Only the newest addresses are kept: an account used from everywhere cannot grow the table.
    newest = (
        sa.select(known.c.address)
        .where(known.c.login == login)
        .order_by(known.c.last_login_at.desc())
        .limit(KNOWN_ADDRESSES_PER_ACCOUNT_MAX)
    )
    await conn.execute(
        known.delete().where(
            known.c.login == login, known.c.address.not_in(newest.scalar_subquery())
        )
    )


async def prune(conn: AsyncConnection, policy: LoginPolicy, now: datetime) -> int:
    """Delete up to ``PRUNE_CHUNK_ROWS`` rows of keys whose count has reset and whose block has
    ended, and of addresses no longer known; the number deleted."""
    throttle = schema.login_throttle
    known = schema.staff_addresses
    stale = (
        sa.select(throttle.c.key)
        .where(
            throttle.c.last_failure_at < now - timedelta(seconds=policy.forget_s),
            sa.or_(throttle.c.blocked_until.is_(None), throttle.c.blocked_until < now),
        )
        .limit(PRUNE_CHUNK_ROWS)
    )
    deleted = (await conn.execute(throttle.delete().where(throttle.c.key.in_(stale)))).rowcount
    old = now - timedelta(days=policy.known_address_days)
    deleted += (await conn.execute(known.delete().where(known.c.last_login_at < old))).rowcount
    return int(deleted)
