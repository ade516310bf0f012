"""The cards' phone hashes become slow, keyed hashes stores cannot reverse (docs/security.md):
the old HMAC hashes go, and ``bonus-central phones rehash`` makes the new ones.

An HMAC hash left here would reach stores of the new protocol, and with the old key, which
every store of the old protocol holds in its database, it gives the phone back in microseconds.
Stores of the old protocol are told to upgrade before they follow the change feed.

Revision ID: 0005_phone_hashes
Revises: 0004_derived_effects
"""

from __future__ import annotations

from alembic import op

revision = "0005_phone_hashes"
down_revision = "0004_derived_effects"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # New hashes are tagged "<key id>:<hex>"; the old ones are 64 hex digits, without a colon.
    op.execute("UPDATE cards SET phone_hash = NULL WHERE phone_hash NOT LIKE '%:%'")


def downgrade() -> None:
    # The old hashes cannot be made here (the old key is not in reach of a migration); stores of
    # the old protocol compute them from cards.phone.
    pass
