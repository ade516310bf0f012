"""The central ledger's tables (SQLAlchemy Core); Alembic migrations create them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

#: One row whose value only grows: the change feed's cursor. Updating it inside a transaction
#: serialises the feed's writers, so cursor order is commit order and no reader skips a change.
feed = sa.Table(
    "feed",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("cursor", sa.BigInteger, nullable=False),
)

stores = sa.Table(
    "stores",
    metadata,
    sa.Column("store_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("address", sa.String(500)),
    sa.Column("opening_hours", sa.String(200)),
    sa.Column("phone", sa.String(40)),
    sa.Column("token_hash", sa.String(128), nullable=False),
    sa.Column("last_applied_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_sync_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    #: Operations whose figures, as the store computed them, differ from the booked ones.
    sa.Column("ops_differing", sa.BigInteger, nullable=False, server_default="0"),
    #: active, disabled (syncs refused, no redemption), closing (drains, no new operations),
    #: closed (for good).
    sa.Column("state", sa.String(16), nullable=False, server_default="active"),
    sa.Column("state_reason", sa.String(500)),
    sa.Column("state_changed_at", sa.DateTime(timezone=True)),
    #: When a closing store was first told so (its later greetings can close it).
    sa.Column("closing_told_at", sa.DateTime(timezone=True)),
    #: The highest journal seq the store reported (``X-Bonus-Journal-Head``), and when it moved.
    sa.Column("reported_head_seq", sa.BigInteger),
    sa.Column("reported_head_at", sa.DateTime(timezone=True)),
    #: A rotated token's predecessor: it works until the store uses the new one, or until then.
    sa.Column("previous_token_hash", sa.String(128)),
    sa.Column("previous_token_until", sa.DateTime(timezone=True)),
)

cards = sa.Table(
    "cards",
    metadata,
    sa.Column("number", sa.String(40), primary_key=True),
    sa.Column("barcode", sa.String(40), unique=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("merged_into", sa.String(40)),
    sa.Column("phone", sa.String(10)),
    sa.Column("phone_hash", sa.String(64)),
    sa.Column("virtual", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("verified", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("debt_kop", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_purchase_on", sa.Date),
    sa.Column("cursor", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_store", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("cards_phone", "phone"),
    sa.Index("cards_cursor", "cursor", "number"),
)

clients = sa.Table(
    "clients",
    metadata,
    sa.Column("card", sa.String(40), sa.ForeignKey("cards.number"), primary_key=True),
    sa.Column("first_name", sa.String(100)),
    sa.Column("last_name", sa.String(100)),
    sa.Column("middle_name", sa.String(100)),
    sa.Column("email", sa.String(200)),
    sa.Column("birth_date", sa.Date),
    sa.Column("sex", sa.String(8)),
    sa.Column("consent_personal_data", sa.Boolean, nullable=False),
    sa.Column("consent_advertising", sa.Boolean, nullable=False),
    sa.Column("consented_at", sa.DateTime(timezone=True), nullable=False),
)

lots = sa.Table(
    "lots",
    metadata,
    sa.Column("lot_id", sa.String(80), primary_key=True),
    sa.Column("card", sa.String(40), sa.ForeignKey("cards.number"), nullable=False),
    sa.Column("amount_kop", sa.BigInteger, nullable=False),
    sa.Column("remaining_kop", sa.BigInteger, nullable=False),
    sa.Column("created_on", sa.Date, nullable=False),
    sa.Column("expires_on", sa.Date),
    sa.Column("active_from", sa.Date),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("source_ref", sa.String(80)),
    sa.CheckConstraint("remaining_kop >= 0 AND remaining_kop <= amount_kop", name="lot_remaining"),
    sa.Index("lots_card", "card"),
    sa.Index("lots_expiry", "expires_on"),
    sa.Index("lots_source_ref", "source_ref", "card"),
)

holds = sa.Table(
    "holds",
    metadata,
    sa.Column("hold_id", sa.String(80), primary_key=True),
    sa.Column("card", sa.String(40), sa.ForeignKey("cards.number"), nullable=False),
    sa.Column("store_id", sa.String(64), nullable=False),
    sa.Column("amount_kop", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Index("holds_card", "card", "state"),
)

#: The journal: every change of every card, immutable.
transactions = sa.Table(
    "transactions",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("card", sa.String(40), nullable=False),
    sa.Column("store_id", sa.String(64)),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("amount_kop", sa.BigInteger, nullable=False),
    sa.Column("lots", sa.JSON, nullable=False),
    sa.Column("receipt_id", sa.String(80)),
    sa.Column("campaign_id", sa.String(80)),
    sa.Column("op_id", sa.String(64)),
    sa.Column("at_store", sa.DateTime(timezone=True)),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("note", sa.String(500)),
    sa.Index("transactions_card", "card", "id"),
    sa.Index("transactions_receipt", "receipt_id"),
    sa.Index("transactions_store", "store_id", "id"),
    sa.Index("transactions_campaign", "campaign_id", "id"),
    sa.Index("transactions_kind_at", "kind", "received_at"),
    sa.Index("transactions_received", "received_at"),
)

#: Operations received from stores: exactly-once bookkeeping and the original results.
store_ops = sa.Table(
    "store_ops",
    metadata,
    sa.Column("store_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("op_id", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("card", sa.String(40), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(500)),
    sa.Column("debt_added_kop", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    #: Where the store's figures differ from the booked ones (``Difference`` list), or null.
    sa.Column("differences", sa.JSON),
)

receipts = sa.Table(
    "receipts",
    metadata,
    sa.Column("store_id", sa.String(64), primary_key=True),
    sa.Column("receipt_id", sa.String(80), primary_key=True),
    sa.Column("card", sa.String(40), nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("lines", sa.JSON, nullable=False),
    sa.Column("allocations", sa.JSON, nullable=False),
    sa.Column("accrual_lot", sa.String(80)),
    sa.Column("accrued_kop", sa.BigInteger, nullable=False),
    sa.Column("redeemed_kop", sa.BigInteger, nullable=False),
    sa.Column("returned", sa.JSON, nullable=False),
    sa.Column("refunded_kop", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("annulled", sa.Boolean, nullable=False, server_default=sa.false()),
)

settings_versions = sa.Table(
    "settings_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("cursor", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(100)),
)

# --- the office ---------------------------------------------------------------------------------

staff = sa.Table(
    "staff",
    metadata,
    sa.Column("login", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("permissions", sa.JSON, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

staff_sessions = sa.Table(
    "staff_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("login", sa.String(64), sa.ForeignKey("staff.login"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

#: Every office action: who, when, what, with what result.
audit = sa.Table(
    "audit",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("login", sa.String(64)),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200)),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Index("audit_at", "at"),
)

#: Refused office requests without a session (wrong passwords, logins over their limits, no
#: token), counted per window, source, action, login and code instead of a row each: a flood
#: adds to a few counters instead of growing the audit (``central/audit_refusals.py``).
audit_refusals = sa.Table(
    "audit_refusals",
    metadata,
    sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("address", sa.String(64), primary_key=True),
    sa.Column("action", sa.String(64), primary_key=True),
    sa.Column("login", sa.String(64), primary_key=True),
    sa.Column("code", sa.String(32), primary_key=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("attempts", sa.BigInteger, nullable=False),
    sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
)

#: The login limiter's state, shared by every server process: failed logins in a row per login
#: name (``login:<name>``) and per client address (``address:<address>``), and until when
#: further attempts are refused (``central/login_limits.py``).
login_throttle = sa.Table(
    "login_throttle",
    metadata,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("blocked_until", sa.DateTime(timezone=True)),
    sa.Index("login_throttle_last_failure", "last_failure_at"),
)

#: Addresses each account logged in from: there the account's own delay does not apply, so a
#: flood against a login from elsewhere does not lock its owner out.
staff_addresses = sa.Table(
    "staff_addresses",
    metadata,
    sa.Column("login", sa.String(64), sa.ForeignKey("staff.login"), primary_key=True),
    sa.Column("address", sa.String(64), primary_key=True),
    sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("staff_addresses_last_login", "last_login_at"),
)

#: Campaigns (mass accruals) and zeroings, with their state and totals.
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("campaign_id", sa.String(80), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # campaign | zeroing
    sa.Column("state", sa.String(16), nullable=False),  # done | cancelled
    sa.Column("amount_kop", sa.BigInteger),
    sa.Column("expires_on", sa.Date),
    sa.Column("before_date", sa.Date),
    sa.Column("note", sa.String(500), nullable=False),
    sa.Column("selection", sa.JSON, nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("cards", sa.BigInteger, nullable=False),
    sa.Column("total_kop", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("cancelled_by", sa.String(64)),
    sa.Column("cancelled_at", sa.DateTime(timezone=True)),
    sa.Column("cancel_result", sa.JSON),
    #: How far a running operation (or its cancel) got: the last card (or journal row) it did.
    sa.Column("progress_card", sa.String(40)),
)
