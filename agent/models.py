"""The till's API as pydantic models: requests are validated by them, responses built from them,
and the OpenAPI document is generated from them."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from shared.amounts import AmountIn, AmountOut, DayIn
from shared.receipts import RECEIPT_LINES_MAX

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]
CardRef = Annotated[str, Field(min_length=1, max_length=40, description="Card number or barcode.")]


def _quantity_canonical(value: Decimal) -> Decimal:
    # 1, "1.0" and "1.000" are one quantity: without this a retried sale written differently
    # would fingerprint differently and be refused as an idempotency conflict.
    normal = value.normalize()
    return normal.quantize(Decimal(1)) if normal == normal.to_integral_value() else normal


Quantity = Annotated[
    Decimal,
    Field(gt=0, le=100000, max_digits=12, decimal_places=3),
    AfterValidator(_quantity_canonical),
]


class Request(BaseModel):
    """A till's request: unknown fields are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Response(BaseModel):
    """An answer to a till."""


# --- errors -----------------------------------------------------------------------------------


class ErrorBody(Response):
    code: str = Field(description="Stable machine-readable code.")
    message: str = Field(description="Text for the cashier, in Russian.")
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(Response):
    error: ErrorBody


# --- cards ------------------------------------------------------------------------------------


class CardOut(Response):
    number: str
    status: Literal["active", "blocked"]
    phone_last4: str | None
    verified: bool


class ExpiringOut(Response):
    date: date
    amount: AmountOut


class BalanceOut(Response):
    available: AmountOut = Field(description="What can be redeemed now.")
    non_expiring: AmountOut
    expiring: list[ExpiringOut] = Field(description="Expiring points by their last day.")
    held: AmountOut
    debt: AmountOut
    pending: AmountOut = Field(description="Accrued, usable from a later day.")


class Refusal(Response):
    code: str
    message: str


class LookupRequest(Request):
    phone: str | None = Field(None, max_length=40)
    card: CardRef | None = None

    @model_validator(mode="after")
    def _one_key(self) -> LookupRequest:
        if (self.phone is None) == (self.card is None):
            raise ValueError("give exactly one of phone or card")
        return self


class LookupResponse(Response):
    card: CardOut
    balance: BalanceOut
    redemption_allowed: bool
    redemption_refusal: Refusal | None = None


class Consents(Request):
    personal_data: bool
    advertising: bool = False


class Profile(Request):
    first_name: str | None = Field(None, max_length=100)
    last_name: str | None = Field(None, max_length=100)
    middle_name: str | None = Field(None, max_length=100)
    email: str | None = Field(None, max_length=200, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    birth_date: DayIn | None = None
    sex: Literal["female", "male"] | None = None


class RegisterRequest(Request):
    phone: str = Field(max_length=40)
    card: CardRef | None = Field(None, description="A physical card; none = a virtual card.")
    profile: Profile | None = None
    consents: Consents


class VerificationOut(Response):
    verification_id: str
    channel: Literal["sms", "call"]
    expires_at: datetime
    resend_after_s: int
    skip_after_s: int | None = Field(
        None, description="Registration only: the code may be skipped after this."
    )


class RegisterResponse(Response):
    card: CardOut
    balance: BalanceOut
    created: bool = Field(description="False when the phone already had a card.")
    verification: VerificationOut | None
    verification_error: Refusal | None = None


# --- verifications ----------------------------------------------------------------------------


class VerificationRequest(Request):
    card: CardRef
    purpose: Literal["registration", "redemption"]
    receipt_id: Id | None = None
    phone: str | None = Field(
        None, max_length=40, description="The customer's phone, when the store does not know it."
    )


class ConfirmRequest(Request):
    code: str = Field(min_length=4, max_length=8, pattern=r"^[0-9]+$")


class ConfirmResponse(Response):
    verification_id: str
    confirmed: bool


# --- receipts ---------------------------------------------------------------------------------


class LineIn(Request):
    line_id: Id
    sku: str = Field(min_length=1, max_length=64)
    name: str = Field("", max_length=256)
    qty: Quantity
    price: AmountIn
    amount: AmountIn = Field(description="Line total after other discounts.")
    vital: bool = Field(False, description="ЖНВЛП.")
    category: str | None = Field(None, max_length=64)


Lines = Annotated[list[LineIn], Field(min_length=1, max_length=RECEIPT_LINES_MAX)]


def _unique_lines(lines: list[LineIn]) -> None:
    seen = set()
    for line in lines:
        if line.line_id in seen:
            raise ValueError(f"line_id {line.line_id!r} appears twice")
        seen.add(line.line_id)


class CalculateRequest(Request):
    card: CardRef
    lines: Lines
    redeem: AmountIn | None = None

    @model_validator(mode="after")
    def _lines_unique(self) -> CalculateRequest:
        _unique_lines(self.lines)
        return self


class LineOut(Response):
    line_id: str
    accrued: AmountOut
    redeemed: AmountOut
    max_redeem: AmountOut


class CalculateResponse(Response):
    accrued: AmountOut
    max_redeem: AmountOut
    redeem: AmountOut
    lines: list[LineOut]
    balance: BalanceOut
    redemption_allowed: bool
    redemption_refusal: Refusal | None = None
    verification_required: bool


class SaleRequest(Request):
    receipt_id: Id
    card: CardRef
    lines: Lines
    redeem: AmountIn = 0
    verification_id: Id | None = None
    hold_id: Id | None = None
    cashier: str | None = Field(None, max_length=100)

    @model_validator(mode="after")
    def _lines_unique(self) -> SaleRequest:
        _unique_lines(self.lines)
        return self


class SaleResponse(Response):
    receipt_id: str
    operation_id: str
    accrued: AmountOut
    redeemed: AmountOut
    lines: list[LineOut]
    balance: BalanceOut


class ReturnLineIn(Request):
    line_id: Id
    qty: Quantity


class ReturnRequest(Request):
    return_id: Id
    receipt_id: Id
    lines: Annotated[list[ReturnLineIn], Field(max_length=RECEIPT_LINES_MAX)] | None = None

    @model_validator(mode="after")
    def _lines_unique(self) -> ReturnRequest:
        if self.lines is not None:
            ids = [line.line_id for line in self.lines]
            if len(ids) != len(set(ids)):
                raise ValueError("a line appears twice in the return")
        return self


class ReturnLineOut(Response):
    line_id: str
    qty: Decimal
    accrual_reversed: AmountOut
    redemption_refunded: AmountOut


class ReturnResponse(Response):
    return_id: str
    receipt_id: str
    operation_id: str
    accrual_reversed: AmountOut
    redemption_refunded: AmountOut
    debt_added: AmountOut
    lines: list[ReturnLineOut]
    balance: BalanceOut


# --- holds ------------------------------------------------------------------------------------


class HoldRequest(Request):
    hold_id: Id
    card: CardRef
    amount: AmountIn
    ttl_s: int = Field(ge=60, le=30 * 86400)
    verification_id: Id | None = None


class HoldResponse(Response):
    hold_id: str
    card: str
    amount: AmountOut
    expires_at: datetime
    state: Literal["active", "consumed", "released", "expired"]
    balance: BalanceOut


# --- transactions -----------------------------------------------------------------------------


class TransactionOut(Response):
    operation_id: str
    kind: str
    at: datetime
    amount: AmountOut = Field(description="Signed change of the balance.")
    accrued: AmountOut
    redeemed: AmountOut
    receipt_id: str | None = None
    synced: bool


class TransactionsResponse(Response):
    card: str
    transactions: list[TransactionOut]


# --- status -----------------------------------------------------------------------------------


class StatusResponse(Response):
    store_id: str
    online: bool = Field(
        description="Whether the last request to the central server succeeded (connected)."
    )
    last_central_error: str | None = Field(
        None, description="The last failed request to the central server: what went wrong."
    )
    last_central_error_at: datetime | None = Field(None, description="When it failed.")
    last_sync_at: datetime | None
    sync_age_s: float | None
    redemption_allowed: bool
    redemption_refusal: Refusal | None = None
    pending_ops: int
    settings_version: int
    last_upload_error: str | None = None
    last_download_error: str | None = None
    central_clock_offset_s: float | None = None
    provider: str
    provider_error: str | None = None
    cards: int
    phone_lookup_allowed: bool = Field(
        description="Whether cards can be found by phone (and customers registered)."
    )
    phone_lookup_refusal: Refusal | None = None
    phone_key_problem: str | None = Field(
        None, description="Why the store has no usable phone key file, if it has none."
    )
    phone_key_id: str | None = Field(None, description="The id of the store's phone key.")
    store_state: str = Field(
        "active",
        description=(
            "The store at the central server: active, disabled (no redemption), closing or "
            "closed (no new operations)."
        ),
    )
    version: str
