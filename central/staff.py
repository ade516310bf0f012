"""Office staff: accounts with argon2-hashed passwords, expiring sessions, permissions."""

from __future__ import annotations

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
_hasher = PasswordHasher()
#: Verified against when the login does not exist, so that timing does not tell logins apart.
_DUMMY_HASH = _hasher.hash("not a password of anybody")


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
    password: str,
    permissions: set[Permission],
    now: datetime,
) -> None:
    """Create an office account."""
    exists = await conn.scalar(
        sa.select(sa.func.count()).select_from(schema.staff).where(schema.staff.c.login == login)
    )
    if exists:
        raise StaffExists(login)
    await conn.execute(
        schema.staff.insert().values(
            login=login,
            name=name,
            password_hash=_hasher.hash(password),
            permissions=sorted(str(p) for p in permissions),
            created_at=now,
        )
    )


async def log_in(
    conn: AsyncConnection, login: str, password: str, now: datetime
) -> tuple[str, datetime] | None:
    """Check a password and open a session; returns (token, expiry) or None."""
    row = (
        await conn.execute(
            sa.select(schema.staff).where(schema.staff.c.login == login, schema.staff.c.active)
        )
    ).first()
    stored = row.password_hash if row is not None else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
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
