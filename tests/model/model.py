"""A plain-Python reference model of the bonus program, for the model-based test of the ledger.

Written apart from ``shared/lots.py`` and ``shared/returns.py`` and kept deliberately naive:
dicts and loops, mutable objects, no cleverness.  It models what the rules (``domain.md``) and the
decisions recorded in ``docs/domain-rules.md`` say, not how the product computes it:

- a card holds lots (amount, remainder, last day, first usable day), a debt and holds;
- a debit takes from the lots usable that day, earliest last day first, non-expiring last, older
  first, then by lot id; a reversal of an accrual takes what is left of its lot, the shortfall is
  debt; a refund goes back to the lots the sale took from, latest-expiring first, and burns at once
  in a lot already past its last day; a new lot pays the debt first;
- available = usable remainders − active holds − debt (never shown below zero);
- the central ledger applies a store's operations when the store uploads them, in the store's
  order, on the day the store recorded them; the office's campaigns, zeroings and the daily expiry
  act on it directly.

Only the numbers of a sale (accrual and redemption per line) come from ``shared.receipts``: those
are the rules under test elsewhere.  Amounts are integer kopecks throughout.

Known product bugs (``KNOWN_BUGS``): where the product is known to be wrong, the model predicts the
product's current behaviour when ``BONUS_MODEL_KNOWN_BUGS`` is ``tolerate`` (the default, so that
the test keeps exploring everything else) and the intended behaviour when it is ``expose`` (so
that the test fails on them, as it should until they are fixed).  Remove an entry once its bug is
fixed.
"""

from __future__ import annotations

import calendar
import copy
import itertools
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

ZONE = ZoneInfo("Europe/Moscow")
#: The one-hour rule: the oldest complete sync at which a store may redeem.
STALENESS_MAX_S = 3600
#: How long an online authorisation sets the redeemed points aside (CentralConfig default).
AUTH_HOLD_S = 120

_versions = itertools.count(1)

#: The product's known bugs, by the name the model uses for each (see docs/testing.md).
KNOWN_BUGS = {
    "refund-of-debt": (
        "central/apply.py _return: a return that refunds a redemption which the central ledger "
        "took (partly) as debt, not from lots, fails refund_allocations' assertion: HTTP 500 on "
        "every upload; the store's queue is stuck (so its redemptions are refused as stale) "
        "until the card happens to hold enough usable points again"
    ),
    "authorisation": (
        "central/authorize.py + agent/ops_sale.py sale: the chain-wide check is net − holds "
        "+ the store's pending delta, so (a) a sale consuming its own hold is checked against "
        "a balance that still subtracts that hold, (b) a pending authorised redemption counts "
        "twice (its auth hold and its delta), (c) the store's pending holds are not counted; "
        "and the agent asks before its own checks, so a sale it then refuses leaves the points "
        "held at every store for authorization_hold_s"
    ),
    "authorisation-retry": (
        "central/authorize.py: an authorisation id asked again is approved whatever the amount, "
        "so a receipt refused by the store after a small approved redemption can be retried "
        "for more than the chain-wide balance (the model never reuses a receipt id; see "
        "tests/model/test_known_bugs.py)"
    ),
    "local-refund-lots": (
        "agent/ops_return.py _commit_return gives a refund back to the lots the store took the "
        "redemption from, while its wallet holds the central server's lots, which took it from "
        "others (a lot expiring sooner arrived before the upload): a lot overfills, "
        "shared.lots.Lot's assertion fails and the till gets HTTP 500 for the return"
    ),
    "merged-card-refs": (
        "agent/ops_sale.py _take_hold and agent/ops_base.py _use_verification compare the card number a hold or "
        "a confirmation code recorded with the card the sale resolves to: once the central "
        "server has merged that card into another (possibly in the agent's own quick round "
        "inside the same request), the hold can never be consumed (hold_not_found) and the "
        "confirmed code is refused (verification_required, 'no such confirmation')"
    ),
}
TOLERATE_KNOWN_BUGS = os.environ.get("BONUS_MODEL_KNOWN_BUGS", "tolerate") != "expose"
#: Known bugs fixed since: the model expects the intended behaviour for them.
FIXED_BUGS = frozenset(
    {
        "refund-of-debt",
        "local-refund-lots",
        "merged-card-refs",
        "authorisation",
        "authorisation-retry",
    }
)


def tolerate(bug: str) -> bool:
    """Whether the model expects today's behaviour of a known bug rather than the intended."""
    return TOLERATE_KNOWN_BUGS and bug not in FIXED_BUGS


class QueueStuck(Exception):
    """The central server cannot apply a store's upload ("refund-of-debt"): the round fails."""


def local_day(moment: datetime) -> date:
    """The program's calendar day of a moment."""
    return moment.astimezone(ZONE).date()


def months_later(day: date, months: int) -> date:
    """The same day ``months`` later, or the last day of a shorter month."""
    index = day.year * 12 + day.month - 1 + months
    year, month = index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


# --- a card -------------------------------------------------------------------------------------


@dataclass
class Lot:
    lot_id: str
    amount: int
    remaining: int
    created_on: date
    expires_on: date | None  # the last day it pays on; None = never expires
    active_from: date | None  # the first day it pays on; None = at once
    source: str

    def past(self, day: date) -> bool:
        return self.expires_on is not None and day > self.expires_on

    def usable(self, day: date) -> bool:
        if self.active_from is not None and day < self.active_from:
            return False
        return not self.past(day)


@dataclass
class Hold:
    hold_id: str
    amount: int
    expires_at: datetime
    state: str = "active"  # active | consumed | released | expired

    def sets_aside(self, now: datetime) -> bool:
        return self.state == "active" and now < self.expires_at


@dataclass(frozen=True)
class Balance:
    """A card's balance as a till shows it."""

    available: int
    net: int
    non_expiring: int
    expiring: tuple[tuple[date, int], ...]
    pending: int
    held: int
    debt: int


@dataclass
class Card:
    number: str
    phone: str
    status: str = "active"  # active | merged
    merged_into: str | None = None
    lots: dict[str, Lot] = field(default_factory=dict)
    debt: int = 0
    holds: dict[str, Hold] = field(default_factory=dict)
    last_purchase_on: date | None = None
    #: Grows on every change of the card at the central server (what the change feed carries).
    version: int = 0

    def touch(self) -> None:
        self.version = next(_versions)

    def balance(self, today: date, now: datetime) -> Balance:
        usable = non_expiring = pending = 0
        expiring: dict[date, int] = {}
        for lot in self.lots.values():
            if lot.remaining == 0 or lot.past(today):
                continue
            if not lot.usable(today):
                pending += lot.remaining
            elif lot.expires_on is None:
                usable += lot.remaining
                non_expiring += lot.remaining
            else:
                usable += lot.remaining
                expiring[lot.expires_on] = expiring.get(lot.expires_on, 0) + lot.remaining
        held = sum(hold.amount for hold in self.holds.values() if hold.sets_aside(now))
        net = usable - held - self.debt
        return Balance(
            available=max(0, net),
            net=net,
            non_expiring=non_expiring,
            expiring=tuple(sorted(expiring.items())),
            pending=pending,
            held=held,
            debt=self.debt,
        )

    def usable_total(self, day: date) -> int:
        return sum(lot.remaining for lot in self.lots.values() if lot.usable(day))

    def debit(self, amount: int, day: date) -> list[tuple[str, int]]:
        """Take ``amount`` from the lots usable on ``day``, in the order of the rules."""
        order = sorted(
            (lot for lot in self.lots.values() if lot.remaining > 0 and lot.usable(day)),
            key=lambda lot: (
                lot.expires_on is None,
                lot.expires_on or date.max,
                lot.created_on,
                lot.lot_id,
            ),
        )
        taken: list[tuple[str, int]] = []
        left = amount
        for lot in order:
            if left == 0:
                break
            part = min(left, lot.remaining)
            lot.remaining -= part
            left -= part
            taken.append((lot.lot_id, part))
        assert left == 0, "the caller debits at most the usable remainders"
        return taken

    def credit(self, lot: Lot) -> None:
        """A new lot; it pays the debt first."""
        assert lot.lot_id not in self.lots
        paid = min(self.debt, lot.amount)
        self.debt -= paid
        lot.remaining = lot.amount - paid
        self.lots[lot.lot_id] = lot


# --- the operations a store records --------------------------------------------------------------


@dataclass(frozen=True)
class SoldLine:
    line_id: str
    qty: Decimal
    accrued: int
    redeemed: int


@dataclass(frozen=True)
class Register:
    card: str
    phone: str
    delta: int = 0


@dataclass(frozen=True)
class Verify:
    card: str
    delta: int = 0


@dataclass(frozen=True)
class Sale:
    card: str
    receipt_id: str
    day: date
    lines: tuple[SoldLine, ...]
    accrual_lot: str | None
    accrual_expires_on: date | None
    accrual_active_from: date | None
    hold_id: str | None
    authorization_id: str | None

    @property
    def accrued(self) -> int:
        return sum(line.accrued for line in self.lines)

    @property
    def redeemed(self) -> int:
        return sum(line.redeemed for line in self.lines)

    @property
    def delta(self) -> int:
        return self.accrued - self.redeemed


@dataclass(frozen=True)
class Return:
    card: str
    op_id: str
    receipt_id: str
    day: date
    lines: tuple[tuple[str, Decimal], ...]
    reversed: int
    refunded: int

    @property
    def delta(self) -> int:
        return self.refunded - self.reversed


@dataclass(frozen=True)
class PlaceHold:
    card: str
    hold_id: str
    amount: int
    expires_at: datetime
    delta: int = 0


@dataclass(frozen=True)
class ReleaseHold:
    card: str
    hold_id: str
    state: str
    delta: int = 0


Op = Register | Verify | Sale | Return | PlaceHold | ReleaseHold


def pending_delta(pending: list[Op], number: str, today: date) -> int:
    """What a store tells the central server of a card's queue (``pending_delta``): its net
    effect on usable points, an accrual not yet usable left out."""
    total = 0
    for op in pending:
        if op.card != number:
            continue
        total += op.delta
        if isinstance(op, Sale) and op.accrual_active_from and op.accrual_active_from > today:
            total -= op.accrued
    return total


def _portion(amount: int, done: Decimal, sold: Decimal) -> int:
    return int(Fraction(amount) * Fraction(done) / Fraction(sold))


def plan_return(
    sold: dict[str, SoldLine], before: dict[str, Decimal], wanted: dict[str, Decimal]
) -> dict[str, tuple[int, int]]:
    """Per returned line: (accrual reversed, redemption refunded), on cumulative quantities, so
    partial returns never take back more than the sale and the last one is exact."""
    plan = {}
    for line_id, qty in wanted.items():
        line = sold[line_id]
        done_before = before.get(line_id, Decimal(0))
        done_after = done_before + qty
        assert done_after <= line.qty
        plan[line_id] = (
            _portion(line.accrued, done_after, line.qty)
            - _portion(line.accrued, done_before, line.qty),
            _portion(line.redeemed, done_after, line.qty)
            - _portion(line.redeemed, done_before, line.qty),
        )
    return plan


# --- the central ledger -------------------------------------------------------------------------


@dataclass
class Receipt:
    """A sale as the central server recorded it, with what its returns have done so far."""

    card: str
    lines: dict[str, SoldLine]
    allocations: list[tuple[str, int]]
    accrual_lot: str | None
    returned: dict[str, Decimal] = field(default_factory=dict)
    refunded: int = 0


@dataclass
class Campaign:
    amount: int
    lots: list[tuple[str, str]]  # (card, lot id)
    cancelled: dict[str, int] | None = None


@dataclass
class Zeroing:
    taken: dict[str, int]
    cancelled: bool = False


@dataclass
class Ledger:
    """The central server's books: cards, the stores' receipts, campaigns and zeroings."""

    cards: dict[str, Card] = field(default_factory=dict)
    receipts: dict[tuple[str, str], Receipt] = field(default_factory=dict)
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    zeroings: dict[str, Zeroing] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    #: How often the rarer paths of the rules were taken (reported as Hypothesis events).
    happened: Counter[str] = field(default_factory=Counter)

    def resolve(self, number: str) -> Card | None:
        """The card that takes a number's operations (a merged card's primary)."""
        card = self.cards.get(number)
        while card is not None and card.status == "merged":
            assert card.merged_into is not None
            card = self.cards[card.merged_into]
        return card

    def target(self, number: str) -> Card:
        card = self.resolve(number)
        assert card is not None, f"card {number} reached the central server before it existed"
        return card

    # --- a store's operations, in its order -------------------------------------------------

    def apply(self, store_id: str, op: Op, now: datetime) -> None:
        self.applied[store_id] = self.applied.get(store_id, 0) + 1
        if isinstance(op, Register):
            self._register(op)
        elif isinstance(op, Verify):
            self.target(op.card).touch()
        elif isinstance(op, Sale):
            self._sale(store_id, op)
        elif isinstance(op, Return):
            self._return(store_id, op)
        elif isinstance(op, PlaceHold):
            card = self.target(op.card)
            card.holds[op.hold_id] = Hold(op.hold_id, op.amount, op.expires_at)
            card.touch()
        else:
            card = self.target(op.card)
            hold = card.holds.get(op.hold_id)
            if hold is not None and hold.state == "active":
                hold.state = op.state
                card.touch()

    def _register(self, op: Register) -> None:
        if op.card in self.cards:
            return
        # One phone, one client: a phone registered first elsewhere makes this card an alias.
        primary = next(
            (c for c in self.cards.values() if c.phone == op.phone and c.status != "merged"),
            None,
        )
        card = Card(op.card, op.phone)
        if primary is not None:
            self.happened["a second card of one phone merged into the first"] += 1
            card.status = "merged"
            card.merged_into = primary.number
            primary.touch()
        card.touch()
        self.cards[op.card] = card

    def _sale(self, store_id: str, op: Sale) -> None:
        card = self.target(op.card)
        for hold_id in (op.hold_id, f"auth:{op.authorization_id}" if op.authorization_id else None):
            hold = card.holds.get(hold_id) if hold_id else None
            if hold is not None and hold.state == "active":
                hold.state = "consumed"
        # What the store redeemed offline beyond the chain-wide points becomes debt.
        taken = min(op.redeemed, card.usable_total(op.day))
        allocations = card.debit(taken, op.day)
        card.debt += op.redeemed - taken
        if op.redeemed > taken:
            self.happened["a redemption beyond the chain-wide points became debt"] += 1
        if op.accrued and card.debt:
            self.happened["an accrual paid debt"] += 1
        if op.accrued:
            assert op.accrual_lot is not None
            card.credit(
                Lot(
                    op.accrual_lot,
                    op.accrued,
                    op.accrued,
                    op.day,
                    op.accrual_expires_on,
                    op.accrual_active_from,
                    "purchase",
                )
            )
        if card.last_purchase_on is None or op.day > card.last_purchase_on:
            card.last_purchase_on = op.day
        card.touch()
        self.receipts[(store_id, op.receipt_id)] = Receipt(
            card=card.number,
            lines={line.line_id: line for line in op.lines},
            allocations=allocations,
            accrual_lot=op.accrual_lot if op.accrued else None,
        )

    def _return(self, store_id: str, op: Return) -> None:
        receipt = self.receipts[(store_id, op.receipt_id)]
        card = self.target(receipt.card)
        plan = plan_return(receipt.lines, receipt.returned, dict(op.lines))
        reversed_kop = sum(part[0] for part in plan.values())
        refunded_kop = sum(part[1] for part in plan.values())
        assert (reversed_kop, refunded_kop) == (op.reversed, op.refunded), "store and model agree"
        if reversed_kop:
            assert receipt.accrual_lot is not None
            lot = card.lots[receipt.accrual_lot]
            taken = min(reversed_kop, lot.remaining)
            lot.remaining -= taken
            card.debt += reversed_kop - taken
            if reversed_kop > taken:
                self.happened["a reversed accrual already spent became debt"] += 1
        # Refunds go back latest-expiring first (the reverse of the sale's debit), continuing
        # where the earlier refunds of the same sale stopped.
        skip, left = receipt.refunded, refunded_kop
        for lot_id, amount in reversed(receipt.allocations):
            from_skip = min(skip, amount)
            skip -= from_skip
            given = min(amount - from_skip, left)
            left -= given
            lot = card.lots[lot_id]
            if given and not lot.past(op.day):
                lot.remaining += given
            elif given:
                self.happened["a refund to an expired lot burned"] += 1
        if left:
            # The sale redeemed more than the lots held when it reached the central server (an
            # offline overspend, or points that expired before the upload): that part was debt.
            if tolerate("refund-of-debt"):
                raise QueueStuck(KNOWN_BUGS["refund-of-debt"])
            # Intended: giving back what was taken as debt cancels that debt; what later credits
            # already paid of it comes back as points (central/apply.py, lot "<op>:r").
            self.happened["a refund beyond the sale's lots paid debt or came back"] += 1
            paid = min(card.debt, left)
            card.debt -= paid
            if left > paid:
                lot_id = f"{op.op_id}:r"
                card.credit(Lot(lot_id, left - paid, left - paid, op.day, None, None, "adjustment"))
        for line_id, qty in op.lines:
            receipt.returned[line_id] = receipt.returned.get(line_id, Decimal(0)) + qty
        receipt.refunded += refunded_kop
        card.touch()

    # --- the central server's own actions ---------------------------------------------------

    def authorize(
        self,
        number: str,
        amount: int,
        authorization_id: str,
        pending: list[Op],
        store_id: str,
        consumed_hold: str | None,
        now: datetime,
    ) -> bool | None:
        """Online authorisation of a redemption against the chain-wide balance.

        Intended: the chain-wide balance is what the card will have once this store's queue has
        reached the central server, plus the hold this very sale consumes.  None: the central
        server does not know the card yet (the store falls back to its own rules).
        """
        if self.resolve(number) is None:
            return None
        if tolerate("authorisation"):
            # Known bug "authorisation": what central/authorize.py computed.
            card = self.target(number)
            net = card.balance(local_day(now), now).net
            net += sum(op.delta for op in pending if op.card == number)
        else:
            future = copy.deepcopy(self)
            for op in pending:
                future.apply(store_id, op, now)
            card = future.target(number)
            net = card.balance(local_day(now), now).net
            hold = card.holds.get(consumed_hold) if consumed_hold else None
            if hold is not None and hold.sets_aside(now):
                net += hold.amount
            # A store's claim counts only against the customer: its pending credits are none.
            net -= max(0, pending_delta(pending, number, local_day(now)))
        if amount > net:
            return False
        real = self.target(number)
        hold_id = f"auth:{authorization_id}"
        real.holds[hold_id] = Hold(hold_id, amount, now + timedelta(seconds=AUTH_HOLD_S))
        real.touch()
        return True

    def expire(self, as_of: date, now: datetime) -> None:
        """The daily job: lots past their last day burn; holds past their time are closed."""
        for card in self.cards.values():
            changed = False
            for lot in card.lots.values():
                if lot.remaining and lot.expires_on is not None and lot.expires_on < as_of:
                    self.happened[f"a {lot.source} lot expired"] += 1
                    lot.remaining = 0
                    changed = True
            for hold in card.holds.values():
                if hold.state == "active" and hold.expires_at <= now:
                    self.happened["a hold expired centrally"] += 1
                    hold.state = "expired"
                    changed = True
            if changed:
                card.touch()

    def campaign(self, campaign_id: str, amount: int, expires_on: date | None, today: date) -> int:
        """Credit every card (merged ones never count); the number of cards."""
        lots = []
        for card in self.cards.values():
            if card.status == "merged":
                continue
            lot_id = f"{campaign_id}:c:{card.number}"
            card.credit(Lot(lot_id, amount, amount, today, expires_on, None, "campaign"))
            card.touch()
            lots.append((card.number, lot_id))
        self.campaigns[campaign_id] = Campaign(amount, lots)
        return len(lots)

    def cancel_campaign(self, campaign_id: str) -> dict[str, int]:
        """Debit what is unspent of the campaign's lots; report what had been spent."""
        campaign = self.campaigns[campaign_id]
        if campaign.cancelled is not None:
            return campaign.cancelled
        debited = spent = cards_with_spent = 0
        for number, lot_id in campaign.lots:
            card = self.cards[number]
            lot = card.lots[lot_id]
            debited += lot.remaining
            spent += lot.amount - lot.remaining
            cards_with_spent += lot.remaining < lot.amount
            self.happened["a campaign lot cancelled"] += 1
            lot.remaining = 0
            card.touch()
        campaign.cancelled = {
            "debited_kop": debited,
            "spent_kop": spent,
            "cards_with_spent": cards_with_spent,
        }
        return campaign.cancelled

    def zeroing(self, zeroing_id: str, before: date) -> tuple[int, int]:
        """Take every non-expiring point of the cards with no purchase since ``before``."""
        taken: dict[str, int] = {}
        for card in self.cards.values():
            if card.status == "merged":
                continue
            if card.last_purchase_on is not None and card.last_purchase_on >= before:
                continue
            total = 0
            for lot in card.lots.values():
                if lot.expires_on is None and lot.remaining:
                    total += lot.remaining
                    lot.remaining = 0
            if total:
                self.happened["non-expiring points zeroed"] += 1
                taken[card.number] = total
                card.touch()
        self.zeroings[zeroing_id] = Zeroing(taken)
        return len(taken), sum(taken.values())

    def cancel_zeroing(self, zeroing_id: str, today: date) -> dict[str, int]:
        """Give back exactly what the zeroing took, as non-expiring points (debt first)."""
        zeroing = self.zeroings[zeroing_id]
        result = {"returned_kop": sum(zeroing.taken.values()), "cards": len(zeroing.taken)}
        if zeroing.cancelled:
            return result
        for number, amount in zeroing.taken.items():
            self.happened["a zeroing given back"] += 1
            card = self.cards[number]
            lot_id = f"{zeroing_id}:back:{number}"
            card.credit(Lot(lot_id, amount, amount, today, None, None, "zeroing_cancel"))
            card.touch()
        zeroing.cancelled = True
        return result


# --- a store ------------------------------------------------------------------------------------


@dataclass
class LocalReceipt:
    card: str
    lines: dict[str, SoldLine]
    returned: dict[str, Decimal] = field(default_factory=dict)


@dataclass
class LocalHold:
    card: str
    amount: int
    expires_at: datetime
    state: str = "active"


@dataclass
class Store:
    """What a store agent knows and has recorded, as far as the model is concerned."""

    store_id: str
    online: bool = True
    #: The monotonic moment of the last complete sync round (None: never).
    last_sync_s: float | None = None
    #: Operations recorded and not yet uploaded, in order.
    pending: list[Op] = field(default_factory=list)
    #: Card numbers the store's replica knows → the number they answer as.
    view: dict[str, str] = field(default_factory=dict)
    #: Phones the replica can find → their card.
    phones: dict[str, str] = field(default_factory=dict)
    #: Each card's central version at the store's last pull.
    pulled: dict[str, int] = field(default_factory=dict)
    receipts: dict[str, LocalReceipt] = field(default_factory=dict)
    holds: dict[str, LocalHold] = field(default_factory=dict)
    #: Its last upload could not apply ("refund-of-debt").
    stuck: bool = False

    def record(self, op: Op) -> None:
        self.pending.append(op)


# --- the whole world ----------------------------------------------------------------------------


@dataclass
class World:
    """The reference model: the central ledger, the stores, and the time."""

    stores: dict[str, Store]
    wall: datetime
    mono_s: float
    ledger: Ledger = field(default_factory=Ledger)
    #: Every card number ever registered, in order, and the phone of each.
    numbers: list[str] = field(default_factory=list)
    phone_of: dict[str, str] = field(default_factory=dict)

    @property
    def today(self) -> date:
        return local_day(self.wall)

    def advance(self, seconds: float) -> bool:
        """Time passes; True when the program's day changed (the expiry job runs)."""
        before = self.today
        self.wall += timedelta(seconds=seconds)
        self.mono_s += seconds
        if self.today != before:
            self.ledger.expire(self.today, self.wall)
            return True
        return False

    def sync_age_s(self, store: Store) -> float | None:
        return None if store.last_sync_s is None else self.mono_s - store.last_sync_s

    def fresh(self, store: Store) -> bool:
        age = self.sync_age_s(store)
        return age is not None and age <= STALENESS_MAX_S

    def complete_round(self, store: Store) -> bool:
        """Upload everything recorded, pull every change: the replica equals the ledger.

        False when the store is offline, or its upload cannot apply (the central server applies
        a batch in one transaction: all of it or nothing).
        """
        if not store.online:
            return False
        ledger = copy.deepcopy(self.ledger)
        try:
            for op in store.pending:
                ledger.apply(store.store_id, op, self.wall)
        except QueueStuck:
            # Rolled back; the next round tries the same batch again.
            store.stuck = True
            return False
        store.stuck = False
        self.ledger = ledger
        store.pending = []
        store.view = {}
        store.phones = {}
        store.pulled = {}
        for number, card in self.ledger.cards.items():
            target = self.ledger.target(number)
            store.view[number] = target.number
            store.pulled[number] = card.version
            if card.status != "merged":
                store.phones[card.phone] = number
        store.last_sync_s = self.mono_s
        return True

    def exact(self, store: Store, number: str) -> bool:
        """Whether the store's view of a card must equal the ledger: nothing pending for it,
        and nothing changed centrally since the store last pulled it."""
        target = store.view.get(number)
        if target is None or target not in self.ledger.cards:
            return False
        if any(op.card in (number, target) for op in store.pending):
            return False
        return all(self.ledger.cards[n].version == store.pulled.get(n) for n in {number, target})
