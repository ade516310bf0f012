"""Login limits: the limiter's state per login name and client address, the addresses each
account logged in from, and the counted (not row-per-request) audit of refused anonymous
office requests.

Revision ID: 0006_login_limits
Revises: 0005_phone_hashes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_login_limits"
down_revision = "0005_phone_hashes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_refusals",
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("login", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("window_start", "address", "action", "login", "code"),
    )
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(
        "login_throttle_last_failure", "login_throttle", ["last_failure_at"], unique=False
    )
    op.create_table(
        "staff_addresses",
        sa.Column("login", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["login"], ["staff.login"]),
        sa.PrimaryKeyConstraint("login", "address"),
    )
    op.create_index(
        "staff_addresses_last_login", "staff_addresses", ["last_login_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("staff_addresses_last_login", table_name="staff_addresses")
    op.drop_table("staff_addresses")
    op.drop_index("login_throttle_last_failure", table_name="login_throttle")
    op.drop_table("login_throttle")
    op.drop_table("audit_refusals")
