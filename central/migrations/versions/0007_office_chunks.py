"""Office mass operations (campaigns, zeroings and their cancels) run in chunks of cards, each in
a short transaction of its own, so that no store's upload waits for a whole campaign: the
operation records how far it got, and a cancel walks the campaign's lots in card order along
their (source_ref, card) index.

Revision ID: 0007_office_chunks
Revises: 0006_login_limits
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_office_chunks"
down_revision = "0006_login_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("progress_card", sa.String(40)))
    op.drop_index("lots_source_ref", table_name="lots")
    op.create_index("lots_source_ref", "lots", ["source_ref", "card"])


def downgrade() -> None:
    op.drop_index("lots_source_ref", table_name="lots")
    op.create_index("lots_source_ref", "lots", ["source_ref"])
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("progress_card")
