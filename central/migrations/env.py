"""Alembic environment: migrations run on the connection the caller hands in."""

from __future__ import annotations

from alembic import context

from central.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the project always passes its own connection
    raise RuntimeError("run migrations through `bonus-central migrate`")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
