"""The receipt calculation: accrual per line, the maximum redeemable amount, spreading a redemption.

All amounts are integer kopecks; rates are integer basis points (1 % = 100 bp).  Every function
is pure and exact: the per-line parts always add up to the receipt's totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from shared.money import KOPECKS_PER_ROUBLE, split_largest_remainder
from shared.settings import ProgramSettings

BP_WHOLE: Final = 10_000
#: A receipt has at most this many lines; a till sending more is refused, not slowed down.
RECEIPT_LINES_MAX: Final = 500


@dataclass(frozen=True, slots=True)
class Line:
    """One receipt line as the rules see it (the till's name and price are not needed here)."""

    line_id: str
    sku: str
    qty: Decimal
    amount_kop: int
    vital: bool = False
    category: str | None = None

    def __post_init__(self) -> None:
        assert self.amount_kop >= 0, "a line amount is never negative"
        assert self.qty > 0, "a line quantity is positive"


@dataclass(frozen=True, slots=True)
class LineResult:
    """What the calculation gives one line."""

    line_id: str
    accrued_kop: int
    redeemed_kop: int
    max_redeem_kop: int


@dataclass(frozen=True, slots=True)
class ReceiptResult:
    """The whole calculation of a receipt; the line parts add up to the totals."""

    lines: tuple[LineResult, ...]
    accrued_kop: int
    redeemed_kop: int
    max_redeem_kop: int


def accrual_rate_bp(line: Line, settings: ProgramSettings) -> int:
    """The accrual rate of a line: 0 when excluded, ЖНВЛП's rate, a category's rate, or the rest's."""
    if line.sku in settings.accrual_excluded_skus:
        return 0
    if line.category is not None and line.category in settings.accrual_excluded_categories:
        return 0
    rates = settings.rates_bp
    if line.vital:
        return rates.vital
    if line.category is not None and line.category in rates.by_category:
        return rates.by_category[line.category]
    return rates.other


def redeemable(line: Line, settings: ProgramSettings) -> bool:
    """Whether points may pay for this line at all."""
    if line.sku in settings.redemption_excluded_skus:
        return False
    return not (
        line.category is not None and line.category in settings.redemption_excluded_categories
    )


def line_redeem_caps(lines: Sequence[Line], settings: ProgramSettings) -> list[int]:
    """Each line's own cap: its share of the line amount, rounded down; 0 for excluded lines."""
    share_bp = settings.rates_bp.redemption_share
    return [
        line.amount_kop * share_bp // BP_WHOLE if redeemable(line, settings) else 0
        for line in lines
    ]


def round_to_step(amount_kop: int, step: str) -> int:
    """Round a non-negative amount down to the step: a kopeck (unchanged) or a whole rouble."""
    if step == "rouble":
        return amount_kop - amount_kop % KOPECKS_PER_ROUBLE
    return amount_kop


def max_redeem(lines: Sequence[Line], settings: ProgramSettings, available_kop: int) -> int:
    """The most a receipt can be paid with points: the available balance and the lines' caps.

    The cap of the receipt is the sum of the lines' own caps, so a redemption up to it can always
    be spread without any line paying more than its cap; the result is in redemption steps.
    """
    return _max_of_caps(line_redeem_caps(lines, settings), settings, available_kop)


def _max_of_caps(caps: Sequence[int], settings: ProgramSettings, available_kop: int) -> int:
    return round_to_step(max(0, min(available_kop, sum(caps))), settings.redemption_step)


def spread_redemption(total_kop: int, lines: Sequence[Line], caps: Sequence[int]) -> list[int]:
    """Spread a redemption over lines pro rata to their amounts, no line above its own cap.

    Lines whose pro-rata part would exceed their cap are filled to the cap and the rest is spread
    again over the others (water-filling); every split is by the largest-remainder method.
    """
    if total_kop > sum(caps):
        raise ValueError("redemption is above the sum of the lines' caps")
    parts = [0] * len(lines)
    open_lines = [i for i, cap in enumerate(caps) if cap > 0]
    left = total_kop
    while left > 0:
        shares = split_largest_remainder(left, [lines[i].amount_kop for i in open_lines])
        still_open = []
        for i, share in zip(open_lines, shares, strict=True):
            room = caps[i] - parts[i]
            taken = min(share, room)
            parts[i] += taken
            left -= taken
            if parts[i] < caps[i]:
                still_open.append(i)
        # Each pass fills at least one line to its cap or places everything, so this ends.
        assert still_open or left == 0, "caps were checked to cover the total"
        open_lines = still_open
    return parts


def accrue(
    lines: Sequence[Line], redeemed_kop: Sequence[int], settings: ProgramSettings
) -> list[int]:
    """Accrual per line on the part of each line paid with money, rounded down per receipt.

    The receipt's exact accrual is rounded down once (to the kopeck or the rouble, as set) and
    split over the lines in proportion to their exact accruals, so the lines add up to it.
    """
    weights = []
    for line, redeemed in zip(lines, redeemed_kop, strict=True):
        paid_kop = line.amount_kop - redeemed
        assert paid_kop >= 0, "a line never pays more with points than it costs"
        weights.append(paid_kop * accrual_rate_bp(line, settings))
    total_kop = sum(weights) // BP_WHOLE
    if settings.accrual_rounding == "rouble":
        total_kop -= total_kop % KOPECKS_PER_ROUBLE
    if total_kop == 0:
        return [0] * len(lines)
    return split_largest_remainder(total_kop, weights)


def calculate(
    lines: Sequence[Line],
    settings: ProgramSettings,
    available_kop: int,
    redeem_kop: int = 0,
) -> ReceiptResult:
    """Calculate a receipt: the requested redemption is clamped to the maximum and spread.

    A till that must not be clamped (a sale being committed) compares ``redeem_kop`` with
    ``max_redeem_kop`` itself and refuses the difference.
    """
    caps = line_redeem_caps(lines, settings)
    maximum = _max_of_caps(caps, settings, available_kop)
    redeem = round_to_step(min(max(redeem_kop, 0), maximum), settings.redemption_step)
    redeemed = spread_redemption(redeem, lines, caps)
    accrued = accrue(lines, redeemed, settings)
    line_results = tuple(
        LineResult(line.line_id, accrued[i], redeemed[i], caps[i]) for i, line in enumerate(lines)
    )
    return ReceiptResult(line_results, sum(accrued), redeem, maximum)
