"""The central server derives every effect itself: where a store's figures differ from the ones
it booked, the operation's ``store_ops`` row keeps the differences, and the store counts them
(the office's store list shows the count).

Revision ID: 0004_derived_effects
Revises: 0003_campaign_journal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_derived_effects"
down_revision = "0003_campaign_journal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("store_ops", sa.Column("differences", sa.JSON))
    op.add_column(
        "stores", sa.Column("ops_differing", sa.BigInteger, nullable=False, server_default="0")
    )


def downgrade() -> None:
    with op.batch_alter_table("stores") as batch:
        batch.drop_column("ops_differing")
    with op.batch_alter_table("store_ops") as batch:
        batch.drop_column("differences")
