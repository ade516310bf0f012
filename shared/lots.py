"""Lots: credits with their own remainders and expiry dates, and the wallet they make up.

A debit consumes lots earliest expiry first, non-expiring last, older first on ties, and records
which lots it took from (allocations), so that a reversal gives back exactly.  The wallet is a
frozen value; every operation returns a new wallet and what it did, never mutates.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo


class LotSource(StrEnum):
    """Where a lot's points came from."""

    PURCHASE = "purchase"
    CAMPAIGN = "campaign"
    ZEROING_CANCEL = "zeroing_cancel"
    ADJUSTMENT = "adjustment"


class InsufficientPoints(ValueError):
    """A debit larger than what the usable lots hold (a programmer's or a race's error)."""


@dataclass(frozen=True, slots=True)
class Lot:
    """One credit: its amount, what remains of it, and the days it can pay on."""

    lot_id: str
    amount_kop: int
    remaining_kop: int
    created_on: date
    expires_on: date | None = None  # the last day it can pay on (inclusive); None = non-expiring
    active_from: date | None = None  # the first day it can pay on; None = at once
    source: LotSource = LotSource.PURCHASE
    source_ref: str | None = None

    def __post_init__(self) -> None:
        assert 0 <= self.remaining_kop <= self.amount_kop, "a lot's remainder is within its amount"

    def usable_on(self, day: date) -> bool:
        """Whether the lot can pay on ``day``: active and not past its last day."""
        if self.active_from is not None and day < self.active_from:
            return False
        return self.expires_on is None or day <= self.expires_on

    def expired_on(self, day: date) -> bool:
        """Whether ``day`` is after the lot's last day."""
        return self.expires_on is not None and day > self.expires_on


@dataclass(frozen=True, slots=True)
class Allocation:
    """How much one debit took from (or one reversal gave back to) one lot."""

    lot_id: str
    amount_kop: int


@dataclass(frozen=True, slots=True)
class Hold:
    """Points set aside for an order until a sale consumes them or the hold ends."""

    hold_id: str
    amount_kop: int
    expires_at: datetime

    def active_at(self, now: datetime) -> bool:
        """Whether the hold still sets points aside at ``now``."""
        return now < self.expires_at


@dataclass(frozen=True, slots=True)
class Balance:
    """A card's balance as the till shows it."""

    available_kop: int  # what can be redeemed now (never below zero)
    net_kop: int  # usable remainders − holds − debt (below zero when debt is larger)
    usable_kop: int
    non_expiring_kop: int
    expiring: tuple[tuple[date, int], ...]  # (last day, amount), earliest first
    pending_kop: int  # accrued but not yet active
    held_kop: int
    debt_kop: int


@dataclass(frozen=True, slots=True)
class Wallet:
    """Everything that makes up one card's balance."""

    lots: tuple[Lot, ...] = ()
    debt_kop: int = 0
    holds: tuple[Hold, ...] = ()

    def __post_init__(self) -> None:
        assert self.debt_kop >= 0, "debt is kept as a non-negative amount"

    def lot(self, lot_id: str) -> Lot:
        """The lot with this id."""
        for lot in self.lots:
            if lot.lot_id == lot_id:
                return lot
        raise KeyError(lot_id)


def local_date(at: datetime, zone: ZoneInfo) -> date:
    """The calendar day of an aware moment in the program's time zone."""
    assert at.tzinfo is not None, "moments are always time-zone aware"
    return at.astimezone(zone).date()


def add_months(day: date, months: int) -> date:
    """The same day ``months`` calendar months later, clamped to the end of a shorter month."""
    month_index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(month_index, 12)
    last_day = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last_day))


def purchase_expiry(accrued_on: date, lifetime_months: int | None) -> date | None:
    """The last day a purchase accrual can pay on: the same day ``lifetime_months`` later.

    An accrual on 31 August with six months expires at the end of the last day of February.
    """
    return None if lifetime_months is None else add_months(accrued_on, lifetime_months)


def consumption_order(lots: Iterable[Lot], day: date) -> list[Lot]:
    """The usable lots with points left, in the order debits take them."""
    usable = [lot for lot in lots if lot.remaining_kop > 0 and lot.usable_on(day)]
    return sorted(
        usable,
        key=lambda lot: (
            lot.expires_on is None,
            lot.expires_on or date.max,
            lot.created_on,
            lot.lot_id,
        ),
    )


def balance(wallet: Wallet, day: date, now: datetime) -> Balance:
    """The balance on ``day`` at ``now``: expired lots and ended holds no longer count."""
    usable = non_expiring = pending = 0
    expiring: dict[date, int] = {}
    for lot in wallet.lots:
        if lot.remaining_kop == 0 or lot.expired_on(day):
            continue
        if not lot.usable_on(day):
            pending += lot.remaining_kop
            continue
        usable += lot.remaining_kop
        if lot.expires_on is None:
            non_expiring += lot.remaining_kop
        else:
            expiring[lot.expires_on] = expiring.get(lot.expires_on, 0) + lot.remaining_kop
    held = sum(hold.amount_kop for hold in wallet.holds if hold.active_at(now))
    net = usable - held - wallet.debt_kop
    return Balance(
        available_kop=max(0, net),
        net_kop=net,
        usable_kop=usable,
        non_expiring_kop=non_expiring,
        expiring=tuple(sorted(expiring.items())),
        pending_kop=pending,
        held_kop=held,
        debt_kop=wallet.debt_kop,
    )


def _with_remaining(lot: Lot, remaining_kop: int) -> Lot:
    # The constructor directly: ``dataclasses.replace`` costs several times more, and the
    # central server and the agent call this for every lot every operation touches.
    return Lot(
        lot.lot_id,
        lot.amount_kop,
        remaining_kop,
        lot.created_on,
        lot.expires_on,
        lot.active_from,
        lot.source,
        lot.source_ref,
    )


def _with_lots(wallet: Wallet, changed: dict[str, Lot]) -> Wallet:
    if not changed:
        return wallet
    lots = tuple(changed.get(lot.lot_id, lot) for lot in wallet.lots)
    return Wallet(lots, wallet.debt_kop, wallet.holds)


def consume(wallet: Wallet, amount_kop: int, day: date) -> tuple[Wallet, list[Allocation]]:
    """Debit ``amount_kop`` from the usable lots in consumption order.

    Holds and debt are the caller's to check (a sale consuming its own hold may use the held
    points); here only the lots' remainders bound the debit.
    """
    assert amount_kop >= 0, "a debit is never negative"
    changed: dict[str, Lot] = {}
    allocations: list[Allocation] = []
    left = amount_kop
    for lot in consumption_order(wallet.lots, day):
        if left == 0:
            break
        taken = min(left, lot.remaining_kop)
        changed[lot.lot_id] = _with_remaining(lot, lot.remaining_kop - taken)
        allocations.append(Allocation(lot.lot_id, taken))
        left -= taken
    if left:
        raise InsufficientPoints(f"{left} kopecks more than the usable lots hold")
    return _with_lots(wallet, changed), allocations


def give_back(
    wallet: Wallet, allocations: Sequence[Allocation], day: date
) -> tuple[Wallet, list[Allocation], int]:
    """Return a reversed debit to the lots it came from, with their original expiry.

    Gives back to each allocation's lot; what lands in a lot already expired on ``day`` (or in a
    lot no longer kept) burns again at once.  Returns the new wallet, the allocations given back and the kopecks burned.
    """
    changed: dict[str, Lot] = {}
    burned_kop = 0
    for allocation in allocations:
        try:
            lot = changed.get(allocation.lot_id) or wallet.lot(allocation.lot_id)
        except KeyError:
            # A lot no longer kept (a replica prunes long-spent lots) is long past its date.
            burned_kop += allocation.amount_kop
            continue
        if lot.expired_on(day):
            burned_kop += allocation.amount_kop
            continue
        # A store's replica can hold the central server's lots, which took a redemption from
        # other lots than the store did: never fill a lot beyond its amount. What does not fit
        # counts as burned in this (provisional) view; the central ledger, whose allocations
        # are its own, always has the room.
        room = lot.amount_kop - lot.remaining_kop
        fits = min(room, allocation.amount_kop)
        burned_kop += allocation.amount_kop - fits
        changed[lot.lot_id] = _with_remaining(lot, lot.remaining_kop + fits)
    return _with_lots(wallet, changed), list(allocations), burned_kop


def take_from_lot(wallet: Wallet, lot_id: str, amount_kop: int) -> tuple[Wallet, int, int]:
    """Take back up to ``amount_kop`` of one lot's remainder; the shortfall becomes debt.

    Used to reverse an accrual or cancel a campaign.  Returns the new wallet, the kopecks taken
    from the lot and the kopecks added to debt.
    """
    assert amount_kop >= 0, "a reversal is never negative"
    lot = wallet.lot(lot_id)
    taken = min(amount_kop, lot.remaining_kop)
    shortfall = amount_kop - taken
    new_wallet = _with_lots(wallet, {lot_id: _with_remaining(lot, lot.remaining_kop - taken)})
    return (
        Wallet(new_wallet.lots, new_wallet.debt_kop + shortfall, new_wallet.holds),
        taken,
        shortfall,
    )


def credit(wallet: Wallet, lot: Lot) -> tuple[Wallet, int]:
    """Add a new lot; it pays any debt first.  Returns the new wallet and the debt paid."""
    assert lot.remaining_kop == lot.amount_kop, "a new lot is whole"
    paid = min(wallet.debt_kop, lot.amount_kop)
    new_lot = _with_remaining(lot, lot.amount_kop - paid)
    return Wallet((*wallet.lots, new_lot), wallet.debt_kop - paid, wallet.holds), paid


def burn_expired(wallet: Wallet, day: date) -> tuple[Wallet, list[Allocation]]:
    """Burn every remainder of lots past their last day on ``day``; returns what burned."""
    changed: dict[str, Lot] = {}
    burned: list[Allocation] = []
    for lot in wallet.lots:
        if lot.remaining_kop > 0 and lot.expired_on(day):
            changed[lot.lot_id] = _with_remaining(lot, 0)
            burned.append(Allocation(lot.lot_id, lot.remaining_kop))
    return _with_lots(wallet, changed), burned


def take_non_expiring(wallet: Wallet) -> tuple[Wallet, list[Allocation]]:
    """Take every non-expiring remainder (zeroing); returns what was taken from which lot."""
    changed: dict[str, Lot] = {}
    taken: list[Allocation] = []
    for lot in wallet.lots:
        if lot.remaining_kop > 0 and lot.expires_on is None:
            changed[lot.lot_id] = _with_remaining(lot, 0)
            taken.append(Allocation(lot.lot_id, lot.remaining_kop))
    return _with_lots(wallet, changed), taken


def place_hold(wallet: Wallet, hold: Hold, day: date, now: datetime) -> Wallet:
    """Set points aside; refused with ``InsufficientPoints`` above the available balance."""
    assert hold.amount_kop > 0, "a hold sets aside a positive amount"
    if hold.amount_kop > balance(wallet, day, now).available_kop:
        raise InsufficientPoints("hold is above the available balance")
    return Wallet(wallet.lots, wallet.debt_kop, (*wallet.holds, hold))


def drop_hold(wallet: Wallet, hold_id: str) -> Wallet:
    """Remove a hold (released, consumed by its sale, or expired)."""
    return Wallet(
        wallet.lots, wallet.debt_kop, tuple(h for h in wallet.holds if h.hold_id != hold_id)
    )
