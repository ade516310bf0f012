"""Program settings as numbered versions; the newest is in force and reaches stores by the feed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
