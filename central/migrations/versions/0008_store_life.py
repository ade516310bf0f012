"""Stores over their life: a state (active, disabled, closing, closed) with its reason and time,
the journal head a store last reported (its backlog, and when a closing store has drained), and
a rotated token's predecessor with the time it stops working.

Revision ID: 0008_store_life
Revises: 0007_office_chunks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_store_life"
down_revision = "0007_office_chunks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stores") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="active"))
        batch.add_column(sa.Column("state_reason", sa.String(500)))
        batch.add_column(sa.Column("state_changed_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("closing_told_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("reported_head_seq", sa.BigInteger))
        batch.add_column(sa.Column("reported_head_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("previous_token_hash", sa.String(128)))
        batch.add_column(sa.Column("previous_token_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("stores") as batch:
        for name in (
            "previous_token_until",
            "previous_token_hash",
            "reported_head_at",
            "reported_head_seq",
            "closing_told_at",
            "state_changed_at",
            "state_reason",
            "state",
        ):
            batch.drop_column(name)
