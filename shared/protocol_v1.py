"""Protocol version 1, as release v0.1.0 speaks it: its messages, and its journal payloads read
as the typed operations of ``shared/journal.py``.

Stores are upgraded one by one, so the central server goes on reading the uploads of agents not
yet upgraded, and an upgraded agent reads the operations its journal recorded before the upgrade
(``agent/db.py`` migration ``0004_typed_journal``).  A version 1 payload carried the store's
figures in ``effect``; they become the store's figures of the typed operation, which the central
server compares with its own and never books.  What cannot be read as an operation is refused
with pydantic's ``ValidationError``, naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from shared.amounts import DayIn
from shared.journal import (
    CardNumber,
    Consents,
    HoldPlaced,
    HoldReleased,
    Key,
    Kop,
    LotAmount,
    Moment,
    Operation,
    Profile,
    Quantity,
    Registration,
    Return,
    ReturnLine,
    Sale,
    SaleLine,
    Verification,
)
from shared.protocol import SEQ_MAX, Message

VERSION = 1

OpKindV1 = Literal["register", "verify", "sale", "return", "hold", "hold_release"]


class OpV1(Message):
    """One journal operation as version 1 sent it: the payload as the agent recorded it."""

    seq: int = Field(strict=True, ge=1, le=SEQ_MAX)
    op_id: str = Field(min_length=1, max_length=64)
    kind: OpKindV1
    card: str = Field(min_length=1, max_length=40)
    created_at: datetime
    payload: dict[str, Any]


class UploadRequestV1(Message):
    """A version 1 batch."""

    ops: list[OpV1] = Field(min_length=1, max_length=1000)


class OpResultV1(Message):
    """A version 1 result."""

    seq: int
    op_id: str
    status: Literal["applied", "rejected"]
    reason: str | None = None
    debt_added_kop: int = 0


class UploadResponseV1(Message):
    """A version 1 answer to a batch."""

    acked_seq: int
    results: list[OpResultV1]
    checkpoint: int
    server_time: datetime


class HelloV1(Message):
    """The greeting as version 1 reads it."""

    protocol_min: int
    protocol_max: int
    server_time: datetime
    store_id: str
    phone_key: str
    last_applied_seq: int
    head_cursor: int


# --- payloads -----------------------------------------------------------------------------------


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _SaleLineV1(_Payload):
    line_id: Annotated[str, Field(min_length=1, max_length=64)]
    sku: Annotated[str, Field(max_length=64)]
    qty: Quantity
    amount: Kop
    vital: StrictBool
    accrued: Kop
    redeemed: Kop


class _SaleEffectV1(_Payload):
    accrued: Kop
    redeemed: Kop
    delta: int = Field(strict=True)
    debt_paid: Kop = 0


class _SaleV1(_Payload):
    card: CardNumber
    receipt_id: Key
    day: DayIn
    lines: list[_SaleLineV1] = Field(min_length=1, max_length=500)
    hold_id: Key | None = None
    authorization_id: Annotated[str, Field(min_length=1, max_length=160)] | None = None
    cashier: Annotated[str, Field(max_length=100)] | None = None
    settings_version: int = Field(strict=True, ge=1)
    accrual_lot: Key | None = None
    accrual_expires_on: DayIn | None = None
    accrual_active_from: DayIn | None = None
    effect: _SaleEffectV1


class _ReturnEffectV1(_Payload):
    accrual_reversed: Kop
    redemption_refunded: Kop
    delta: int = Field(strict=True)
    debt_added: Kop = 0
    burned: Kop = 0
    refund_lots: list[tuple[Key, Kop]] = Field(default_factory=list, max_length=10_000)


class _ReturnLineV1(_Payload):
    line_id: Annotated[str, Field(min_length=1, max_length=64)]
    qty: Quantity


class _ReturnV1(_Payload):
    card: CardNumber
    receipt_id: Key
    return_id: Key
    accrual_lot: Key | None = None
    day: DayIn
    lines: list[_ReturnLineV1] = Field(min_length=1, max_length=500)
    effect: _ReturnEffectV1


class _HoldV1(_Payload):
    card: CardNumber
    hold_id: Key
    amount: Annotated[int, Field(strict=True, gt=0, le=10**13)]
    expires_at: Moment
    effect: dict[str, Any]


class _HoldReleaseV1(_Payload):
    card: CardNumber
    hold_id: Key
    state: Literal["released", "expired"]
    effect: dict[str, Any]


class _RegisterV1(_Payload):
    card: CardNumber
    # Removed from the store's journal once the central server had them.
    phone: Annotated[str, Field(pattern=r"^[0-9]{10}$")] | None = None
    profile: Profile | None = None
    virtual: StrictBool
    consents: Consents
    effect: dict[str, Any]


class _VerifyV1(_Payload):
    card: CardNumber
    effect: dict[str, Any]


def operation_from_v1(kind: str, payload: Any) -> Operation:
    """A version 1 journal payload as a typed operation; ``ValidationError`` if unreadable."""
    if kind == "sale":
        sale = _SaleV1.model_validate(payload)
        return Sale(
            card=sale.card,
            receipt_id=sale.receipt_id,
            day=sale.day,
            lines=tuple(
                SaleLine(
                    line_id=line.line_id,
                    sku=line.sku,
                    qty=line.qty,
                    amount_kop=line.amount,
                    vital=line.vital,
                    accrued_kop=line.accrued,
                    redeemed_kop=line.redeemed,
                )
                for line in sale.lines
            ),
            # A version 1 store committed a sale only when it redeemed what was asked.
            redeem_kop=sale.effect.redeemed,
            hold_id=sale.hold_id,
            authorization_id=sale.authorization_id,
            cashier=sale.cashier,
            settings_version=sale.settings_version,
            accrual_expires_on=sale.accrual_expires_on,
            accrual_active_from=sale.accrual_active_from,
        )
    if kind == "return":
        ret = _ReturnV1.model_validate(payload)
        return Return(
            card=ret.card,
            receipt_id=ret.receipt_id,
            return_id=ret.return_id,
            day=ret.day,
            lines=tuple(ReturnLine(line_id=line.line_id, qty=line.qty) for line in ret.lines),
            accrual_lot=ret.accrual_lot,
            accrual_reversed_kop=ret.effect.accrual_reversed,
            redemption_refunded_kop=ret.effect.redemption_refunded,
            refund_lots=tuple(
                LotAmount(lot_id=lot_id, amount_kop=amount)
                for lot_id, amount in ret.effect.refund_lots
            ),
        )
    if kind == "hold":
        hold = _HoldV1.model_validate(payload)
        return HoldPlaced(
            card=hold.card, hold_id=hold.hold_id, amount_kop=hold.amount, expires_at=hold.expires_at
        )
    if kind == "hold_release":
        release = _HoldReleaseV1.model_validate(payload)
        return HoldReleased(card=release.card, hold_id=release.hold_id, state=release.state)
    if kind == "register":
        registration = _RegisterV1.model_validate(payload)
        return Registration(
            card=registration.card,
            phone=registration.phone,
            virtual=registration.virtual,
            profile=registration.profile,
            consents=registration.consents,
        )
    if kind == "verify":
        return Verification(card=_VerifyV1.model_validate(payload).card)
    raise ValueError(f"unknown operation kind {kind!r}")
