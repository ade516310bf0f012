"""The Alembic migrations build exactly the schema that ``central/schema.py`` describes."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from central.db import Database, migrate
from central.schema import metadata


async def test_migrated_sqlite_schema_matches_the_tables_in_code(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'central.db'}")
    try:
        await migrate(db.engine)
        await migrate(db.engine)  # a second run changes nothing

        def differences(connection: sa.Connection) -> list[object]:
            context = MigrationContext.configure(connection)
            return [
                diff
                for diff in compare_metadata(context, metadata)
                # SQLite cannot tell a server default's spelling apart; types are compared.
                if not (isinstance(diff, list) and diff and diff[0][0] == "modify_default")
            ]

        async with db.engine.connect() as conn:
            found = await conn.run_sync(differences)
        assert found == []
    finally:
        await db.close()
