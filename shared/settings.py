"""Program settings: one versioned model with Standard-N's defaults.

Settings live on the central server as numbered versions and reach every store with the sync.
Each field carries a one-line description; ``docs/settings.md`` is checked against them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

Percent = Annotated[Decimal, Field(ge=0, le=100, max_digits=5, decimal_places=2)]
Rounding = Literal["kopeck", "rouble"]
Confirmation = Literal["code", "none"]


class ProgramSettings(BaseModel):
    """Every rule of the bonus program that the office can change, with its default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(
        1, ge=1, description="Number of this settings version; stores apply the highest."
    )
    accrual_rate_vital_pct: Percent = Field(
        Decimal("1"), description="Accrual rate for ЖНВЛП (vital) lines, percent of the money paid."
    )
    accrual_rate_other_pct: Percent = Field(
        Decimal("5"), description="Accrual rate for every other line, percent of the money paid."
    )
    accrual_rate_by_category_pct: dict[str, Percent] = Field(
        default_factory=dict,
        description="Per-category accrual rates that replace the rate for non-vital lines.",
    )
    accrual_excluded_skus: frozenset[str] = Field(
        frozenset(), description="SKUs that earn no points."
    )
    accrual_excluded_categories: frozenset[str] = Field(
        frozenset(), description="Categories (segments) that earn no points."
    )
    redemption_excluded_skus: frozenset[str] = Field(
        frozenset(), description="SKUs that cannot be paid with points."
    )
    redemption_excluded_categories: frozenset[str] = Field(
        frozenset(), description="Categories (segments) that cannot be paid with points."
    )
    redemption_share_max_pct: Percent = Field(
        Decimal("50"),
        description="Largest share of each eligible line (after other discounts) payable by points.",
    )
    accrual_rounding: Rounding = Field(
        "kopeck", description="Receipt accrual rounded down to the kopeck or to whole roubles."
    )
    redemption_step: Rounding = Field(
        "kopeck", description="Redemption amounts in steps of one kopeck or of whole roubles."
    )
    accrual_lifetime_months: int | None = Field(
        6,
        ge=1,
        le=120,
        description="Calendar months a purchase accrual lives; null = never expires.",
    )
    accrual_activation_delay_days: int = Field(
        0,
        ge=0,
        le=365,
        description="Purchase accruals become usable this many days after the sale.",
    )
    time_zone: str = Field(
        "Europe/Moscow",
        description="Time zone of the program's calendar days (expiry, last purchase).",
    )
    redemption_confirmation: Confirmation = Field(
        "code", description="Whether a redemption needs a code sent to the customer."
    )
    registration_confirmation: Confirmation = Field(
        "code", description="Whether a registration asks for a code sent to the customer."
    )
    registration_code_skip_after_s: int = Field(
        30,
        ge=0,
        le=3600,
        description="Seconds after which the cashier may skip the registration code.",
    )
    verification_code_ttl_s: int = Field(
        300, ge=30, le=3600, description="Seconds a confirmation code stays valid."
    )
    verification_attempts_max: int = Field(
        5, ge=1, le=20, description="Wrong entries allowed for one confirmation code."
    )
    verification_resend_after_s: int = Field(
        60,
        ge=0,
        le=3600,
        description="Seconds before another code may be sent for the same purpose.",
    )
    verification_codes_per_phone_hour_max: int = Field(
        10, ge=1, le=100, description="Codes one phone may receive in any hour."
    )
    sync_staleness_max_s: int = Field(
        3600, ge=60, le=86400, description="Oldest last complete sync at which a store may redeem."
    )
    hold_ttl_max_s: int = Field(
        7 * 86400, ge=60, le=30 * 86400, description="Longest time-to-live of a hold."
    )
    debt_allowed: bool = Field(
        True, description="Reversals beyond the balance become debt, paid first by later credits."
    )
    # The offline caps are on by default: without them two stores that cannot reach the central
    # server may each spend a card's whole balance (docs/settings.md says why these values).
    offline_redemption_max_kop: int | None = Field(
        100_000,
        ge=0,
        description="Cap on one redemption made without central authorisation; null = none.",
    )
    offline_redemption_store_total_max_kop: int | None = Field(
        500_000,
        ge=0,
        description="Cap on the total redeemed offline by a store since its last sync; null = none.",
    )
    offline_redemptions_per_card_day_max: int | None = Field(
        1, ge=0, description="Cap on offline redemptions per card and day; null = none."
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The program's time zone."""
        return ZoneInfo(self.time_zone)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied; what was computed from the old values is not kept."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("rates_bp", None)
        return copy

    @cached_property
    def rates_bp(self) -> RatesBp:
        """The percentages the receipt rules multiply by, as integer basis points (computed once
        per settings version: every receipt line of every store needs them)."""
        return RatesBp(
            vital=pct_to_bp(self.accrual_rate_vital_pct),
            other=pct_to_bp(self.accrual_rate_other_pct),
            by_category={k: pct_to_bp(v) for k, v in self.accrual_rate_by_category_pct.items()},
            redemption_share=pct_to_bp(self.redemption_share_max_pct),
        )


@dataclass(frozen=True, slots=True)
class RatesBp:
    """A settings version's rates in basis points (1 % = 100)."""

    vital: int
    other: int
    by_category: dict[str, int]
    redemption_share: int


def pct_to_bp(percent: Decimal) -> int:
    """A percentage with at most two decimals as integer basis points (1.5 % → 150)."""
    basis_points = percent * 100
    if basis_points != basis_points.to_integral_value():
        raise ValueError("percentages carry at most two decimals")
    return int(basis_points)


DEFAULT_SETTINGS = ProgramSettings()
