"""Office staff: accounts with argon2-hashed passwords, expiring sessions, permissions."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema

SESSION_TTL = timedelta(hours=12)
#: argon2's defaults (64 MiB, 3 passes; about 150 ms of one CPU).  Hashing is CPU work for a
#: thread (``central/passwords.py``), never for the event loop.
_hasher = PasswordHasher()
#: The hash of nobody's password, with the hasher that made it (its parameters must be the
#: hasher's own, or an unknown login would be told apart by its time).
_dummy: tuple[PasswordHasher, str] | None = None


def hash_password(password: str) -> str:
    """The argon2 hash kept for a password (CPU-heavy: run it in a thread)."""
    return _hasher.hash(password)


def password_matches(stored_hash: str | None, password: str) -> bool:
    """Whether a password matches its stored hash (CPU-heavy: run it in a thread).

    Without a hash (an unknown or inactive login) the password is checked against a hash of
    nobody's, with the same parameters, so that the answer takes as long as for a real account.
    """
    global _dummy
    hasher = _hasher
    if stored_hash is None:
        if _dummy is None or _dummy[0] is not hasher:
            _dummy = (hasher, hasher.hash("not a password of anybody"))
        with contextlib.suppress(VerificationError, InvalidHashError):
            hasher.verify(_dummy[1], password)
        return False
    try:
        return bool(hasher.verify(stored_hash, password))
    except (VerificationError, InvalidHashError):
        return False


class Permission(StrEnum):
    """What an office account may do (SmartApteka's names in the comments)."""

    CAMPAIGNS = "campaigns"  # «Скидки|Бонус акции»
    ZEROING = "zeroing"  # «Скидки|Обнуление бонусов»
    ANNULMENT = "annulment"  # аннулирование бонусов чека
    JOURNAL = "journal"  # the journal and the cards (read)
    STORES = "stores"
    SETTINGS = "settings"


class StaffExists(ValueError):
    """A login that is taken."""


@dataclass(frozen=True)
class StaffMember:
    """A logged-in office worker."""

    login: str
    name: str
    permissions: frozenset[Permission]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def add_staff(
    conn: AsyncConnection,
    login: str,
    name: str,
    password_hash: str,
    permissions: set[Permission],
    now: datetime,
) -> None:
    """Create an office account with a password hashed beforehand (``hash_password``, in a
    thread and outside this transaction)."""
    exists = await conn.scalar(
        sa.select(sa.func.count()).select_from(schema.staff).where(schema.staff.c.login == login)
    )
    if exists:
        raise StaffExists(login)
    await conn.execute(
        schema.staff.insert().values(
            login=login,
            name=name,
            password_hash=password_hash,
            permissions=sorted(str(p) for p in permissions),
            created_at=now,
        )
    )


async def stored_hash(conn: AsyncConnection, login: str) -> str | None:
    """The password hash of an active account; None for an unknown or inactive login."""
    value = await conn.scalar(
        sa.select(schema.staff.c.password_hash).where(
            schema.staff.c.login == login, schema.staff.c.active
        )
    )
    return str(value) if value is not None else None


async def open_session(conn: AsyncConnection, login: str, now: datetime) -> tuple[str, datetime]:
    """A new session of an account whose password was checked; returns (token, expiry)."""
    token = secrets.token_urlsafe(32)
    expires_at = now + SESSION_TTL
    await conn.execute(
        schema.staff_sessions.insert().values(
            token_hash=_token_hash(token), login=login, created_at=now, expires_at=expires_at
        )
    )
    return token, expires_at


async def log_out(conn: AsyncConnection, token: str) -> None:
    """End a session."""
    await conn.execute(
        schema.staff_sessions.delete().where(
            schema.staff_sessions.c.token_hash == _token_hash(token)
        )
    )


async def member_of_session(conn: AsyncConnection, token: str, now: datetime) -> StaffMember | None:
    """The office worker of an unexpired session."""
    row = (
        await conn.execute(
            sa.select(schema.staff.c.login, schema.staff.c.name, schema.staff.c.permissions)
            .select_from(schema.staff_sessions.join(schema.staff))
            .where(
                schema.staff_sessions.c.token_hash == _token_hash(token),
                schema.staff_sessions.c.expires_at > now,
                schema.staff.c.active,
            )
        )
    ).first()
    if row is None:
        return None
    known = {p.value for p in Permission}
    return StaffMember(
        row.login, row.name, frozenset(Permission(p) for p in row.permissions if p in known)
    )
