"""A campaign's journal page reads its newest transactions straight from the index: the
campaign index gets the transaction id as its second column (a campaign of a million cards has
a million transactions; the page needs the last hundred).

Revision ID: 0003_campaign_journal
Revises: 0002_office
"""

from __future__ import annotations

from alembic import op

revision = "0003_campaign_journal"
down_revision = "0002_office"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("transactions_campaign", table_name="transactions")
    op.create_index("transactions_campaign", "transactions", ["campaign_id", "id"])


def downgrade() -> None:
    op.drop_index("transactions_campaign", table_name="transactions")
    op.create_index("transactions_campaign", "transactions", ["campaign_id"])
