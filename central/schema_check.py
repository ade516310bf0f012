"""Which database a command opens, and the refusal of one without the schema.

Only ``bonus-central migrate`` creates a database.  Every other command first checks that the
one it was pointed at holds a schema of this release: a relative SQLite path run from another
directory, or a wrong PostgreSQL database, must not become a fresh empty ledger that takes an
office account or a store's token and is then never used.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from central.db import current_revision, known_revisions

MIGRATE_HINT = "run `bonus-central migrate` with the same configuration first"


class DatabaseRefused(Exception):
    """A database a command must not use; the message says which and why."""


def masked_url(url: str) -> str:
    """The database URL with its password hidden, to show in messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable database URL>"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


async def require_schema(url: str) -> str:
    """The revision the database at ``url`` is at; ``DatabaseRefused`` when it has no schema of
    this release, cannot be opened, or (SQLite) does not exist — nothing is created."""
    shown = masked_url(url)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise DatabaseRefused(
            f"no database at {shown} (file {path.absolute()} does not exist): {MIGRATE_HINT}"
        )
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            revision = await conn.run_sync(current_revision)
    except (OSError, sa.exc.DBAPIError) as exc:
        raise DatabaseRefused(f"cannot open the database {shown}: {exc}") from exc
    finally:
        await engine.dispose()
    if revision is None:
        raise DatabaseRefused(f"the database {shown} has no schema: {MIGRATE_HINT}")
    if revision not in known_revisions():
        raise DatabaseRefused(
            f"the database {shown} is at revision {revision}, which this release does not know: "
            "it was migrated by a newer release (see docs/upgrading.md)"
        )
    return revision
