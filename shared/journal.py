"""The journal's operations: one frozen, typed model per kind, told apart by ``kind``.

A store records every operation it makes as one of these, with the inputs the rules need (the
receipt's lines, the redemption asked for, a hold's amount) and the figures the store itself
computed from them (each line's accrual and redemption, a return's reversal). The store's replica
and the central server read attributes, never ``payload["…"]``; the central server derives every
effect again from the inputs (``shared/effects.py``) and keeps the store's figures only to compare.

Amounts are integer kopecks in ``*_kop`` fields, days are dates, moments are aware date-times, and
the card an operation belongs to is its ``card`` field, in one place. What these models refuse is
what no store can have written: a wrong type, a missing field, a negative amount, a day that is not
``YYYY-MM-DD``; what they accept can still be impossible for the rules, and the central server
rejects that with a stable reason (``shared/effects.py``).
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
)

from shared.amounts import DayIn
from shared.receipts import RECEIPT_LINES_MAX, Line
from shared.returns import SoldLine

#: No amount in the journal is larger: 100 billion roubles.  Bigger numbers are refused, so that
#: no sum of them can overflow a database's 64-bit integer.
KOP_MAX: Final = 10**13

Kop = Annotated[int, Field(strict=True, ge=0, le=KOP_MAX)]
PositiveKop = Annotated[int, Field(strict=True, gt=0, le=KOP_MAX)]
Key = Annotated[str, Field(min_length=1, max_length=80)]
CardNumber = Annotated[str, Field(min_length=1, max_length=40)]
Quantity = Annotated[Decimal, Field(gt=0, le=100_000, max_digits=12, decimal_places=3)]
Phone10 = Annotated[str, Field(pattern=r"^[0-9]{10}$")]


def _moment_in(value: Any) -> Any:
    # pydantic would also read a number as a Unix time; a journal writes ISO 8601 text.
    if isinstance(value, datetime) or (isinstance(value, str) and _MOMENT.match(value)):
        return value
    raise ValueError("a moment is written as ISO 8601 with its offset")


_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}")

#: A moment as the journal writes it: ISO 8601 with an offset.
Moment = Annotated[AwareDatetime, BeforeValidator(_moment_in)]


class Record(BaseModel):
    """A journal record: immutable, and unknown fields are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- sale -------------------------------------------------------------------------------------


class SaleLine(Record):
    """A receipt line as sold: the rules' inputs, and what the store computed for it."""

    line_id: Annotated[str, Field(min_length=1, max_length=64)]
    sku: Annotated[str, Field(max_length=64)]
    qty: Quantity
    amount_kop: Kop = Field(description="The line's total after other discounts.")
    vital: StrictBool = Field(description="ЖНВЛП.")
    category: Annotated[str, Field(max_length=64)] | None = None
    accrued_kop: Kop = Field(description="The store's figure: points this line accrued.")
    redeemed_kop: Kop = Field(description="The store's figure: points that paid for this line.")

    def rule_line(self) -> Line:
        """The line as the receipt rules see it."""
        return Line(self.line_id, self.sku, self.qty, self.amount_kop, self.vital, self.category)

    def sold(self, accrued_kop: int, redeemed_kop: int) -> SoldLine:
        """The line as returns see it, with the given (derived) figures."""
        return SoldLine(self.line_id, self.qty, accrued_kop, redeemed_kop)


class Sale(Record):
    """A sale: accrual on the lines, and a redemption of points asked for by the cashier."""

    kind: Literal["sale"] = "sale"
    card: CardNumber
    receipt_id: Key
    day: DayIn = Field(description="The sale's calendar day in the program's time zone.")
    lines: Annotated[tuple[SaleLine, ...], Field(min_length=1, max_length=RECEIPT_LINES_MAX)]
    redeem_kop: Kop = Field(description="Points the cashier asked to redeem.")
    hold_id: Key | None = Field(None, description="The hold this sale consumes.")
    authorization_id: Annotated[str, Field(min_length=1, max_length=160)] | None = Field(
        None, description="The central server's online authorisation of the redemption."
    )
    cashier: Annotated[str, Field(max_length=100)] | None = None
    settings_version: int = Field(strict=True, ge=1, description="The settings the store used.")
    accrual_expires_on: DayIn | None = Field(
        None, description="The store's figure: the accrual's last day (null: never expires)."
    )
    accrual_active_from: DayIn | None = Field(
        None, description="The store's figure: the accrual's first usable day (null: at once)."
    )

    @property
    def claimed_accrued_kop(self) -> int:
        """The store's figure for the receipt's accrual."""
        return sum(line.accrued_kop for line in self.lines)

    @property
    def claimed_redeemed_kop(self) -> int:
        """The store's figure for the receipt's redemption."""
        return sum(line.redeemed_kop for line in self.lines)


# --- return -----------------------------------------------------------------------------------


class ReturnLine(Record):
    """A returned quantity of one line of the receipt."""

    line_id: Annotated[str, Field(min_length=1, max_length=64)]
    qty: Quantity


class LotAmount(Record):
    """An amount given back to (or taken from) one lot."""

    lot_id: Key
    amount_kop: Kop


class Return(Record):
    """A return of lines of a receipt sold at this store."""

    kind: Literal["return"] = "return"
    card: CardNumber = Field(description="The receipt's card.")
    receipt_id: Key
    return_id: Key
    day: DayIn
    lines: Annotated[tuple[ReturnLine, ...], Field(min_length=1, max_length=RECEIPT_LINES_MAX)]
    accrual_lot: Key | None = Field(None, description="The store's figure: the sale's accrual lot.")
    accrual_reversed_kop: Kop = Field(description="The store's figure.")
    redemption_refunded_kop: Kop = Field(description="The store's figure.")
    refund_lots: tuple[LotAmount, ...] = Field(
        (), max_length=10_000, description="Where the store gave the refund back (its replica)."
    )


# --- holds ------------------------------------------------------------------------------------


class HoldPlaced(Record):
    """Points set aside for an order."""

    kind: Literal["hold"] = "hold"
    card: CardNumber
    hold_id: Key
    amount_kop: PositiveKop
    expires_at: Moment


class HoldReleased(Record):
    """A hold ended early, or found expired when released."""

    kind: Literal["hold_release"] = "hold_release"
    card: CardNumber
    hold_id: Key
    state: Literal["released", "expired"]


# --- customers --------------------------------------------------------------------------------


class Profile(Record):
    """What a customer told the till about themselves (kept centrally only)."""

    first_name: Annotated[str, Field(max_length=100)] | None = None
    last_name: Annotated[str, Field(max_length=100)] | None = None
    middle_name: Annotated[str, Field(max_length=100)] | None = None
    email: Annotated[str, Field(max_length=200)] | None = None
    birth_date: DayIn | None = None
    sex: Literal["female", "male"] | None = None


class Consents(Record):
    """The customer's two consents."""

    personal_data: StrictBool
    advertising: StrictBool = False


class Registration(Record):
    """A customer registered at this store.  The phone and the profile are removed from the
    store's journal once the central server has them (``phone`` is then null)."""

    kind: Literal["register"] = "register"
    card: CardNumber
    phone: Phone10 | None
    virtual: StrictBool
    profile: Profile | None = None
    consents: Consents


class Verification(Record):
    """The customer confirmed their phone with a code."""

    kind: Literal["verify"] = "verify"
    card: CardNumber


Operation = Annotated[
    Sale | Return | HoldPlaced | HoldReleased | Registration | Verification,
    Field(discriminator="kind"),
]
OpKind = Literal["register", "verify", "sale", "return", "hold", "hold_release"]

#: Reads and writes operations as JSON.
OPERATION: Final[TypeAdapter[Operation]] = TypeAdapter(Operation)


def operation_json(operation: Operation) -> str:
    """An operation as the journal stores it (compact JSON)."""
    return operation.model_dump_json()


def operation_from_json(text: str | bytes) -> Operation:
    """An operation from its stored JSON."""
    return OPERATION.validate_json(text)


def accrual_lot_id(op_id: str) -> str:
    """The lot a sale's accrual makes: named after the operation, so the store and the central
    server give it the same id without either being told."""
    return f"{op_id}:a"
