"""Program settings as numbered versions; the newest is in force and reaches stores by the feed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.db import next_cursor
from shared.settings import ProgramSettings


async def current_settings(conn: AsyncConnection) -> tuple[ProgramSettings, int]:
    """The settings in force and the cursor at which they were set (0 for the defaults)."""
    row = (
        await conn.execute(
            sa.select(schema.settings_versions)
            .order_by(schema.settings_versions.c.version.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return ProgramSettings(), 0
    return ProgramSettings.model_validate(row.body), int(row.cursor)


async def set_settings(
    conn: AsyncConnection, changes: dict[str, Any], now: datetime, by: str | None = None
) -> ProgramSettings:
    """Record a new version with these changes; refuses invalid values (pydantic)."""
    current, _ = await current_settings(conn)
    body = current.model_dump(mode="json")
    body.update(changes)
    body["version"] = current.version + 1
    new = ProgramSettings.model_validate(body)
    cursor = await next_cursor(conn)
    await conn.execute(
        schema.settings_versions.insert().values(
            version=new.version,
            body=new.model_dump(mode="json"),
            cursor=cursor,
            created_at=now,
            created_by=by,
        )
    )
    return new


#: How long a superseded settings version may still be used by a store that had not heard of its
#: successor yet.  A store uploads its sales at least hourly while it is online; one that was
#: offline longer than this is booked with the oldest version it could still have had, and the
#: difference is recorded (docs/sync-protocol.md, "The central server derives every effect").
SETTINGS_GRACE: Final = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class SettingsBook:
    """Every settings version the central server issued, as a batch judges a store's claim."""

    versions: dict[int, ProgramSettings]
    issued_at: dict[int, datetime]  # version 1 (the defaults) has no moment: always there

    @property
    def current(self) -> ProgramSettings:
        """The version in force now."""
        return self.versions[max(self.versions)]

    def floor(self, now: datetime) -> int:
        """The oldest version a store may still claim at ``now``: the one in force at
        ``now − SETTINGS_GRACE``."""
        cutoff = now - SETTINGS_GRACE
        in_force = [v for v, at in self.issued_at.items() if at <= cutoff]
        return max(in_force, default=1)

    def for_claim(self, version: int, now: datetime) -> ProgramSettings | None:
        """The settings to derive a store's operation with: the version it claims, or the floor
        when it claims an older one; None when the central server never issued it."""
        if version not in self.versions:
            return None
        return self.versions[max(version, self.floor(now))]


async def settings_book(conn: AsyncConnection, cache: dict[int, ProgramSettings]) -> SettingsBook:
    """The issued versions; ``cache`` keeps their parsed bodies (a version never changes)."""
    rows = (
        await conn.execute(
            sa.select(
                schema.settings_versions.c.version, schema.settings_versions.c.created_at
            ).order_by(schema.settings_versions.c.version)
        )
    ).all()
    missing = [row.version for row in rows if row.version not in cache]
    if missing:
        bodies = await conn.execute(
            sa.select(schema.settings_versions.c.version, schema.settings_versions.c.body).where(
                schema.settings_versions.c.version.in_(missing)
            )
        )
        for version, body in bodies.all():
            cache[int(version)] = ProgramSettings.model_validate(body)
    versions = {1: ProgramSettings()} | {int(row.version): cache[int(row.version)] for row in rows}
    issued_at = {int(row.version): _aware(row.created_at) for row in rows}
    return SettingsBook(versions, issued_at)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
