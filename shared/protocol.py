"""The sync protocol between store agents and the central server (pydantic models).

Upload: batches of journal operations, applied exactly once in sequence order.  Download: pages of
card states and settings after a monotonic cursor, or a compressed snapshot for a new store.
See ``docs/sync-protocol.md``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal, NotRequired

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from shared.journal import KOP_MAX, Operation, OpKind
from shared.settings import ProgramSettings

#: The protocol version this code speaks; the central server accepts a range.  Version 2 carries
#: typed operations (``shared/journal.py``); the central server still reads version 1's uploads
#: (``shared/protocol_v1.py``) while stores are upgraded one by one.
PROTOCOL_VERSION: Final = 2
PROTOCOL_MIN: Final = 1
PROTOCOL_MAX: Final = 2
PROTOCOL_HEADER: Final = "X-Bonus-Protocol"
STORE_HEADER: Final = "X-Store-Id"
#: Optional, from a store: the highest seq of its journal (its backlog, and whether a closing
#: store has drained).  Older agents do not send it.
JOURNAL_HEAD_HEADER: Final = "X-Bonus-Journal-Head"
#: On every sync answer: the store's state at the central server (active, disabled, closing,
#: closed); a header so that agents that do not know it are not disturbed.
STORE_STATE_HEADER: Final = "X-Bonus-Store-State"
#: The states a store can be in at the central server (``central/stores.py`` moves them).
STORE_STATES: Final = ("active", "disabled", "closing", "closed")
#: The agent's release, ``bonus-agent/0.2.0`` (optional: earlier agents send aiohttp's own).
AGENT_HEADER: Final = "User-Agent"
AGENT_PRODUCT: Final = "bonus-agent"

#: Limits of one upload batch.
UPLOAD_OPS_MAX: Final = 1000
UPLOAD_BYTES_MAX: Final = 8 * 1024 * 1024
#: Most card states in one page of changes.
CHANGES_PAGE_MAX: Final = 5000

#: Sequence numbers and cursors fit a signed 64-bit integer.
SEQ_MAX: Final = 2**63 - 1

__all__ = ["KOP_MAX", "OpKind"]


class Rejection(StrEnum):
    """Why the central server rejected an operation that cannot have happened (stable codes)."""

    CARD_UNKNOWN = "card_unknown"
    CARD_BLOCKED = "card_blocked"
    CARD_PHONE_CONFLICT = "card_phone_conflict"
    REGISTRATION_WITHOUT_PHONE = "registration_without_phone"
    RECEIPT_REUSED = "receipt_reused"
    RECEIPT_UNKNOWN = "receipt_unknown"
    RETURN_EXCEEDS_SALE = "return_exceeds_sale"
    SETTINGS_VERSION_UNKNOWN = "settings_version_unknown"
    IMPOSSIBLE_LINES = "impossible_lines"
    HOLD_ID_TAKEN = "hold_id_taken"
    HOLD_TOO_LONG = "hold_too_long"


class Message(BaseModel):
    """A protocol message: unknown fields are refused so that a mismatch shows at once."""

    model_config = ConfigDict(extra="forbid")


class Hello(Message):
    """The central server's greeting: versions, time, and what a store needs to start."""

    protocol_min: int
    protocol_max: int
    server_time: datetime
    store_id: str
    phone_key_id: str = Field(
        description=(
            "Which key (and cost) the phone hashes in card states are made with; the key "
            "itself never travels in the protocol."
        )
    )
    last_applied_seq: int
    head_cursor: int


class Op(Message):
    """One journal operation of a store, numbered."""

    seq: int = Field(strict=True, ge=1, le=SEQ_MAX)
    op_id: str = Field(min_length=1, max_length=64)
    created_at: AwareDatetime = Field(description="The store's clock when it was recorded.")
    operation: Operation

    @property
    def kind(self) -> OpKind:
        """The operation's kind."""
        return self.operation.kind

    @property
    def card(self) -> str:
        """The card the operation belongs to."""
        return self.operation.card


class UploadRequest(Message):
    """A batch of operations in sequence order, without gaps."""

    ops: list[Op] = Field(min_length=1, max_length=UPLOAD_OPS_MAX)


class Difference(Message):
    """One figure where the store's claim and the central server's derivation differ."""

    field: str
    store: int | str | None
    central: int | str | None


class OpResult(Message):
    """What the central server did with one operation."""

    seq: int
    op_id: str
    status: Literal["applied", "rejected"]
    reason: str | None = Field(None, description="Why it was rejected: a stable code.")
    debt_added_kop: int = 0
    differences: list[Difference] = Field(
        default_factory=list,
        description="Where the store's figures differ from the ones the central server booked.",
    )


class UploadResponse(Message):
    """The batch's results; ``checkpoint`` is a cursor that includes all of them."""

    acked_seq: int
    results: list[OpResult]
    checkpoint: int
    server_time: datetime


class LotState(Message):
    """A lot as stores see it (amounts in kopecks)."""

    id: str
    amount: int
    remaining: int
    created_on: str
    expires_on: str | None
    active_from: str | None
    source: str
    ref: str | None


class HoldState(Message):
    """An active hold."""

    id: str
    amount: int
    expires_at: str


class CardState(Message):
    """Everything a store keeps of a card (no names, no phone number)."""

    number: str
    barcode: str | None
    status: Literal["active", "blocked", "merged"]
    merged_into: str | None = None
    phone_hash: str | None
    phone_last4: str | None
    verified: bool
    debt: int
    lots: list[LotState]
    holds: list[HoldState]
    last_purchase_on: str | None
    cursor: int


# The snapshot's lines as plain dicts: the same fields and types as ``CardState``, ``LotState``
# and ``HoldState`` (``tests/shared/test_protocol.py`` holds them equal), validated by pydantic
# without building a model per card (``agent/bootstrap.py``). Lots and holds list their fields in
# alphabetical order: validated dicts come out in this order, which is the order of the agent's
# canonical JSON (``sort_keys``).


@with_config(ConfigDict(extra="forbid"))
class LotLine(TypedDict):
    """``LotState`` as a dict."""

    active_from: str | None
    amount: int
    created_on: str
    expires_on: str | None
    id: str
    ref: str | None
    remaining: int
    source: str


@with_config(ConfigDict(extra="forbid"))
class HoldLine(TypedDict):
    """``HoldState`` as a dict."""

    amount: int
    expires_at: str
    id: str


@with_config(ConfigDict(extra="forbid"))
class CardLine(TypedDict):
    """``CardState`` as a dict: one line of a snapshot after the header."""

    number: str
    barcode: str | None
    status: Literal["active", "blocked", "merged"]
    merged_into: NotRequired[str | None]
    phone_hash: str | None
    phone_last4: str | None
    verified: bool
    debt: int
    lots: list[LotLine]
    holds: list[HoldLine]
    last_purchase_on: str | None
    cursor: int


class ChangesResponse(Message):
    """A page of changes after a cursor."""

    cards: list[CardState]
    settings: ProgramSettings | None
    next_cursor: int
    next_card: str | None = Field(description="Where the next page starts within next_cursor.")
    more: bool
    head_cursor: int
    server_time: datetime


class SnapshotHeader(Message):
    """The first line of a snapshot stream."""

    cursor: int
    settings: ProgramSettings
    cards: int
    server_time: datetime


class AuthorizeRequest(Message):
    """A store asks to redeem from a card's chain-wide balance before committing a sale."""

    authorization_id: str = Field(min_length=1, max_length=160)
    card: str = Field(min_length=1, max_length=40)
    amount: int = Field(strict=True, gt=0, le=KOP_MAX, description="Kopecks to redeem.")
    pending_delta: int = Field(
        0,
        strict=True,
        ge=-KOP_MAX,
        le=KOP_MAX,
        description=(
            "Net effect (kopecks) on the card's usable points and debt of this store's "
            "operations not yet uploaded (accruals not yet usable left out). Counts only "
            "against the card: a positive figure (pending credits) counts as zero."
        ),
    )
    pending_held: int = Field(
        0,
        strict=True,
        ge=0,
        le=KOP_MAX,
        description=(
            "Kopecks set aside by this store's holds not yet uploaded and still active, "
            "except the hold this sale consumes."
        ),
    )
    releases: list[Annotated[str, Field(min_length=1, max_length=120)]] = Field(
        default_factory=list,
        max_length=1000,
        description=(
            "Holds the central server may still count that this store's queue or this sale "
            "ends: the authorisation holds of its pending sales, holds its pending operations "
            "consumed or released, and the hold this sale consumes. Only this store's own "
            "holds count."
        ),
    )


class AuthorizeResponse(Message):
    """The decision; an approval sets the amount aside for a short time for this store."""

    approved: bool
    available: int = Field(description="Chain-wide available kopecks, before this amount.")
    expires_at: datetime | None = None


def auth_hold_id(authorization_id: str) -> str:
    """The hold under which the central server's online authorisation sets points aside."""
    return f"auth:{authorization_id}"
