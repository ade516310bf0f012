"""Limits on office logins: per client address and per login name, kept in the database.

Every failed login counts against two keys: the client's address (``address:…``) and the login
name (``login:…``), whether or not an account has that name — an unknown login pays exactly what
a known one does, so the answers tell nothing of which logins exist.  The first failures of a
key are free; each further one blocks the key for 1, 2, 4 … seconds, up to a cap; a key's count
starts again ``forget_s`` after its last failure.  While a key is blocked, attempts are refused
with ``login_rate_limited`` before any password is hashed, and they neither count nor extend the
block, so the block ends on time whatever the flood.

Why it cannot lock the office out:

- An attacker's own address trips first and longest (more free failures, but a longer cap): a
  flood from one place, or a few, is refused at once without hashing.
- The login name's delay is capped (``login_account_delay_max_s``), so a flood against one login
  from many addresses slows that login, never locks it for good, and never touches other logins.
- An address the account has logged in from (``staff_addresses``, for ``known_address_days``)
  skips the login name's delay, not its own: the owner at their usual desk logs in during such a
  flood.  An attacker gains nothing from it without having logged in as that account before.

The state is in the database, so every server process (``workers``, several instances on one
PostgreSQL) sees the same counts.  Each failure is one short write transaction; the checks are
reads.  Rows of keys whose count has reset are pruned (``prune``).
"""

from __future__ import annotations

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

    @classmethod
    def from_config(cls, config: CentralConfig) -> LoginPolicy:
        return cls(
            address_failures_free=config.login_address_failures_free,
            address_delay_max_s=config.login_address_delay_max_s,
            account_failures_free=config.login_account_failures_free,
            account_delay_max_s=config.login_account_delay_max_s,
            forget_s=config.login_failures_forget_s,
            known_address_days=config.login_known_address_days,
        )


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


async def refusal_wait_s(
    conn: AsyncConnection, policy: LoginPolicy, login: str, address: str, now: datetime
) -> int:
    """Seconds until this login from this address may be tried again; 0 = now."""
    throttle = schema.login_throttle
    rows = (
        await conn.execute(
            sa.select(throttle.c.key, throttle.c.blocked_until).where(
                throttle.c.key.in_([address_key(address), account_key(login)]),
                throttle.c.blocked_until > now,
            )
        )
    ).all()
    waits = {row.key: _wait_s(row.blocked_until, now) for row in rows}
    wait = waits.get(address_key(address), 0)
    account_wait = waits.get(account_key(login), 0)
    if account_wait > wait and not await _known_address(conn, policy, login, address, now):
        wait = account_wait
    return wait


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
) -> int:
    """Count a failed login against its address and its login name, inside the caller's write
    transaction; returns the longer of the blocks it set (0 = none)."""
    throttle = schema.login_throttle
    limits = {
        address_key(address): (policy.address_failures_free, policy.address_delay_max_s),
        account_key(login): (policy.account_failures_free, policy.account_delay_max_s),
    }
    keys = sorted(limits)  # one lock order for every process: two failures never deadlock
    await conn.execute(
        _insert(conn, throttle)
        .values([{"key": key, "failures": 0, "last_failure_at": now} for key in keys])
        .on_conflict_do_nothing(index_elements=["key"])
    )
    rows = (
        await conn.execute(
            sa.select(throttle.c.key, throttle.c.failures, throttle.c.last_failure_at)
            .where(throttle.c.key.in_(keys))
            .order_by(throttle.c.key)
            .with_for_update()
        )
    ).all()
    longest = 0
    for row in rows:
        free, max_s = limits[row.key]
        recent = now - _aware(row.last_failure_at) <= timedelta(seconds=policy.forget_s)
        failures = (row.failures if recent else 0) + 1
        delay = delay_s(failures, free, max_s)
        longest = max(longest, delay)
        await conn.execute(
            throttle.update()
            .where(throttle.c.key == row.key)
            .values(
                failures=failures,
                last_failure_at=now,
                blocked_until=now + timedelta(seconds=delay) if delay else None,
            )
        )
    return longest


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
