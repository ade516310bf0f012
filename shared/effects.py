"""What an operation does to a wallet: one pure function per kind of the journal.

The store's commit, the store's rebase of its pending operations on fresh card states, and the
central server's apply all call these, so a rule is written once.  They differ only in the
figures they pass in: a store's commit and the central server derive them from the operation's
inputs with the receipt rules (``sale_figures``), the store's rebase takes the ones its own commit
recorded (``claimed_sale_figures``).  A redemption beyond what the lots hold becomes debt here: a
store checks the balance before it commits, so this only happens centrally (an offline sale
beyond the chain-wide balance) or provisionally in a rebase.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.journal import KOP_MAX, HoldPlaced, Return, Sale, SaleLine
from shared.lots import (
    Allocation,
    Hold,
    Lot,
    LotSource,
    Wallet,
    balance,
    consume,
    credit,
    drop_hold,
    give_back,
    purchase_expiry,
    take_from_lot,
)
from shared.receipts import Line, LineResult, calculate
from shared.returns import ReturnPlan, SoldLine, plan_return, refund_allocations
from shared.settings import ProgramSettings

# --- sale -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaleFigures:
    """A sale's amounts: per line and in total, and the days of its accrual lot."""

    lines: tuple[LineResult, ...]
    accrued_kop: int
    redeemed_kop: int
    accrual_expires_on: date | None
    accrual_active_from: date | None


def accrual_days(day: date, settings: ProgramSettings) -> tuple[date | None, date | None]:
    """The last and the first usable day of a purchase accrual made on ``day``."""
    delay = settings.accrual_activation_delay_days
    return (
        purchase_expiry(day, settings.accrual_lifetime_months),
        day + timedelta(days=delay) if delay else None,
    )


def receipt_figures(
    lines: Sequence[Line],
    redeem_kop: int,
    day: date,
    settings: ProgramSettings,
    available_kop: int = KOP_MAX,
) -> SaleFigures:
    """The figures the rules give a receipt's lines and a requested redemption on ``day``.

    ``available_kop`` bounds the redemption by a balance (a store about to commit); the central
    server leaves it unbounded: a sale that happened is booked, its overspend becomes debt.
    """
    result = calculate(lines, settings, available_kop, redeem_kop)
    expires_on, active_from = accrual_days(day, settings)
    return SaleFigures(
        result.lines, result.accrued_kop, result.redeemed_kop, expires_on, active_from
    )


def sale_figures(sale: Sale, settings: ProgramSettings) -> SaleFigures:
    """The figures the rules give a recorded sale: what the central server books."""
    return receipt_figures(
        [line.rule_line() for line in sale.lines], sale.redeem_kop, sale.day, settings
    )


def recorded_lines(lines: Sequence[Line], figures: SaleFigures) -> tuple[SaleLine, ...]:
    """A receipt's lines with the figures computed for them, as a sale records them."""
    return tuple(
        SaleLine(
            line_id=line.line_id,
            sku=line.sku,
            qty=line.qty,
            amount_kop=line.amount_kop,
            vital=line.vital,
            category=line.category,
            accrued_kop=part.accrued_kop,
            redeemed_kop=part.redeemed_kop,
        )
        for line, part in zip(lines, figures.lines, strict=True)
    )


def claimed_sale_figures(sale: Sale) -> SaleFigures:
    """The figures the store recorded for a sale (its till was told these)."""
    return SaleFigures(
        tuple(
            LineResult(line.line_id, line.accrued_kop, line.redeemed_kop, 0) for line in sale.lines
        ),
        sale.claimed_accrued_kop,
        sale.claimed_redeemed_kop,
        sale.accrual_expires_on,
        sale.accrual_active_from,
    )


@dataclass(frozen=True, slots=True)
class SaleEffect:
    """What a sale did to a wallet."""

    wallet: Wallet
    allocations: tuple[Allocation, ...]  # the lots the redemption took from
    debt_added_kop: int  # the redemption beyond the usable lots
    debt_paid_kop: int  # the accrual's part that paid earlier debt
    accrual_lot: Lot | None


def sale_effect(
    wallet: Wallet,
    sale: Sale,
    figures: SaleFigures,
    *,
    lot_id: str,
    now: datetime,
    consumed_holds: Iterable[str] = (),
) -> SaleEffect:
    """Apply a sale: drop the holds it consumes, redeem, accrue.

    The redemption takes the usable lots on the sale's day in consumption order; what they
    cannot cover becomes debt.  The accrual is a new lot ``lot_id`` (unless the wallet has it
    already: a state that includes this very sale) that pays debt first.
    """
    for hold_id in consumed_holds:
        wallet = drop_hold(wallet, hold_id)
    usable = balance(wallet, sale.day, now).usable_kop
    taken = min(figures.redeemed_kop, usable)
    wallet, allocations = consume(wallet, taken, sale.day)
    debt_added = figures.redeemed_kop - taken
    if debt_added:
        wallet = replace(wallet, debt_kop=wallet.debt_kop + debt_added)
    lot: Lot | None = None
    debt_paid = 0
    if figures.accrued_kop and not any(known.lot_id == lot_id for known in wallet.lots):
        lot = Lot(
            lot_id=lot_id,
            amount_kop=figures.accrued_kop,
            remaining_kop=figures.accrued_kop,
            created_on=sale.day,
            expires_on=figures.accrual_expires_on,
            active_from=figures.accrual_active_from,
            source=LotSource.PURCHASE,
            source_ref=sale.receipt_id,
        )
        wallet, debt_paid = credit(wallet, lot)
    return SaleEffect(wallet, tuple(allocations), debt_added, debt_paid, lot)


# --- return -----------------------------------------------------------------------------------


def sold_lines(rows: Iterable[Mapping[str, Any]]) -> tuple[SoldLine, ...]:
    """A receipt's lines as kept for its returns: quantity, accrual and redemption per line.

    Receipts kept before protocol 2 name the figures ``accrued`` and ``redeemed``.
    """
    return tuple(
        SoldLine(
            str(row["line_id"]),
            Decimal(row["qty"]),
            int(row["accrued_kop"] if "accrued_kop" in row else row["accrued"]),
            int(row["redeemed_kop"] if "redeemed_kop" in row else row["redeemed"]),
        )
        for row in rows
    )


def sold_line_rows(sale: Sale, figures: SaleFigures) -> list[dict[str, Any]]:
    """A sale's lines with these figures, as kept for its returns (the inverse of
    ``sold_lines``)."""
    return [
        {
            "line_id": line.line_id,
            "qty": str(line.qty),
            "accrued_kop": part.accrued_kop,
            "redeemed_kop": part.redeemed_kop,
        }
        for line, part in zip(sale.lines, figures.lines, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class SoldReceipt:
    """What the ledger keeps of a sold receipt for its returns."""

    receipt_id: str
    card: str
    lines: tuple[SoldLine, ...]
    allocations: tuple[Allocation, ...]  # the lots its redemption took from, in that order
    accrual_lot: str | None
    returned: Mapping[str, Decimal]  # quantities returned so far, per line
    refunded_kop: int  # redemption refunded so far
    annulled: bool = False  # the office took its accrual back already


def return_plan(receipt: SoldReceipt, requested: Mapping[str, Decimal] | None) -> ReturnPlan:
    """What a return of ``requested`` quantities reverses (``None``: all that is left).

    Raises ``ReturnExceedsSale`` for more than is left.  An annulled receipt reverses no accrual.
    """
    plan = plan_return(receipt.lines, receipt.returned, requested)
    if receipt.annulled:
        plan = replace(plan, accrual_reversed_kop=0)
    return plan


@dataclass(frozen=True, slots=True)
class Reversal:
    """What reversing an accrual and refunding a redemption did to a wallet."""

    wallet: Wallet
    accrual_taken_kop: int  # taken from the accrual lot
    debt_added_kop: int  # the accrual's part already spent, now debt
    given: tuple[Allocation, ...]  # where the refund went
    burned_kop: int  # refund that landed in expired lots and burned again


def reverse(
    wallet: Wallet,
    accrual_lot: str | None,
    accrual_reversed_kop: int,
    refunds: Sequence[Allocation],
    day: date,
) -> Reversal:
    """Take an accrual back from its lot (what is spent of it becomes debt) and give a refund
    back to the lots it came from (what lands in an expired lot burns)."""
    taken = debt_added = 0
    if accrual_reversed_kop:
        if accrual_lot is not None and any(lot.lot_id == accrual_lot for lot in wallet.lots):
            wallet, taken, debt_added = take_from_lot(wallet, accrual_lot, accrual_reversed_kop)
        else:
            # The lot is no longer kept (a replica prunes long-spent lots): all of it is spent.
            debt_added = accrual_reversed_kop
            wallet = replace(wallet, debt_kop=wallet.debt_kop + debt_added)
    wallet, given, burned = give_back(wallet, refunds, day)
    return Reversal(wallet, taken, debt_added, tuple(given), burned)


@dataclass(frozen=True, slots=True)
class ReturnEffect:
    """What a return did to a wallet and to its receipt."""

    wallet: Wallet
    reversal: Reversal
    debt_paid_kop: int  # refund beyond the sale's lots that paid the card's debt
    refund_lot: Lot | None  # refund beyond the sale's lots and the debt, as a new lot
    receipt: SoldReceipt  # the receipt with this return counted

    @property
    def given(self) -> tuple[Allocation, ...]:
        """Where the refund went, the new lot included."""
        if self.refund_lot is None:
            return self.reversal.given
        return (
            *self.reversal.given,
            Allocation(self.refund_lot.lot_id, self.refund_lot.amount_kop),
        )


def return_effect(
    wallet: Wallet, receipt: SoldReceipt, plan: ReturnPlan, *, day: date, refund_lot_id: str
) -> ReturnEffect:
    """Apply a planned return: the accrual back from its lot, the refund back to the lots the
    sale's redemption took.

    A redemption made beyond the chain-wide balance took fewer points from lots than it redeemed;
    the rest became debt.  Its refund goes back to those lots first, and the part beyond them pays
    the card's debt, or, if later credits paid it already, comes back as a new lot.
    """
    allocated = sum(a.amount_kop for a in receipt.allocations)
    refunded_to_lots = min(receipt.refunded_kop, allocated)
    to_lots = min(plan.redemption_refunded_kop, allocated - refunded_to_lots)
    beyond_lots = plan.redemption_refunded_kop - to_lots
    refunds = [
        Allocation(lot_id, amount)
        for lot_id, amount in refund_allocations(
            [(a.lot_id, a.amount_kop) for a in receipt.allocations], refunded_to_lots, to_lots
        )
    ]
    reversal = reverse(wallet, receipt.accrual_lot, plan.accrual_reversed_kop, refunds, day)
    wallet = reversal.wallet
    paid = min(wallet.debt_kop, beyond_lots)
    if paid:
        wallet = replace(wallet, debt_kop=wallet.debt_kop - paid)
    refund_lot: Lot | None = None
    if beyond_lots > paid:
        refund_lot = Lot(
            lot_id=refund_lot_id,
            amount_kop=beyond_lots - paid,
            remaining_kop=beyond_lots - paid,
            created_on=day,
            source=LotSource.ADJUSTMENT,
            source_ref=receipt.receipt_id,
        )
        wallet, _ = credit(wallet, refund_lot)
    returned = dict(receipt.returned)
    for line in plan.lines:
        returned[line.line_id] = returned.get(line.line_id, Decimal(0)) + line.qty
    after = replace(
        receipt, returned=returned, refunded_kop=receipt.refunded_kop + plan.redemption_refunded_kop
    )
    return ReturnEffect(wallet, reversal, paid, refund_lot, after)


def claimed_reversal(wallet: Wallet, operation: Return) -> Reversal:
    """Apply a return as the store recorded it (its rebase): the figures its commit computed."""
    return reverse(
        wallet,
        operation.accrual_lot,
        operation.accrual_reversed_kop,
        [Allocation(item.lot_id, item.amount_kop) for item in operation.refund_lots],
        operation.day,
    )


# --- holds ------------------------------------------------------------------------------------


def hold_effect(wallet: Wallet, operation: HoldPlaced) -> Wallet:
    """Set a hold's points aside (a hold of the same id is replaced, never counted twice)."""
    hold = Hold(operation.hold_id, operation.amount_kop, operation.expires_at)
    return replace(wallet, holds=(*drop_hold(wallet, hold.hold_id).holds, hold))


def release_effect(wallet: Wallet, hold_id: str) -> Wallet:
    """End a hold (released, expired, or consumed by its sale)."""
    return drop_hold(wallet, hold_id)
