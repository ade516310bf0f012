"""Lots and balance of docs/domain.md: consumption order, exact reversals, expiry, holds, debt."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.lots import (
    Allocation,
    Hold,
    InsufficientPoints,
    Lot,
    LotSource,
    Wallet,
    add_months,
    balance,
    burn_expired,
    consume,
    consumption_order,
    credit,
    drop_hold,
    give_back,
    local_date,
    place_hold,
    purchase_expiry,
    take_from_lot,
    take_non_expiring,
)

MOSCOW = ZoneInfo("Europe/Moscow")
DAY = date(2026, 3, 10)
NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def lot(
    lot_id: str,
    amount_kop: int,
    *,
    expires_on: date | None = None,
    created_on: date = date(2026, 1, 1),
    active_from: date | None = None,
    remaining_kop: int | None = None,
) -> Lot:
    return Lot(
        lot_id=lot_id,
        amount_kop=amount_kop,
        remaining_kop=amount_kop if remaining_kop is None else remaining_kop,
        created_on=created_on,
        expires_on=expires_on,
        active_from=active_from,
    )


def wallet(*lots: Lot, debt_kop: int = 0, holds: tuple[Hold, ...] = ()) -> Wallet:
    return Wallet(lots=lots, debt_kop=debt_kop, holds=holds)


def remainders(w: Wallet) -> dict[str, int]:
    return {lot_.lot_id: lot_.remaining_kop for lot_ in w.lots}


# --- consumption order ---------------------------------------------------------------------------


def test_lot_consumption_earliest_expiry_first() -> None:
    lots = [
        lot("late", 100, expires_on=date(2026, 9, 1)),
        lot("early", 100, expires_on=date(2026, 4, 1)),
        lot("middle", 100, expires_on=date(2026, 6, 1)),
    ]
    assert [x.lot_id for x in consumption_order(lots, DAY)] == ["early", "middle", "late"]


def test_lot_consumption_non_expiring_last() -> None:
    lots = [
        lot("forever", 100, created_on=date(2025, 1, 1)),
        lot("expiring", 100, expires_on=date(2030, 1, 1), created_on=date(2026, 2, 1)),
    ]
    assert [x.lot_id for x in consumption_order(lots, DAY)] == ["expiring", "forever"]


def test_lot_consumption_older_first_on_ties() -> None:
    same_day = date(2026, 9, 1)
    lots = [
        lot("newer", 100, expires_on=same_day, created_on=date(2026, 3, 1)),
        lot("older", 100, expires_on=same_day, created_on=date(2026, 2, 1)),
        lot("forever-new", 100, created_on=date(2026, 3, 1)),
        lot("forever-old", 100, created_on=date(2026, 1, 1)),
    ]
    assert [x.lot_id for x in consumption_order(lots, DAY)] == [
        "older",
        "newer",
        "forever-old",
        "forever-new",
    ]


def test_lot_consumption_skips_empty_expired_and_inactive_lots() -> None:
    lots = [
        lot("empty", 100, remaining_kop=0),
        lot("expired", 100, expires_on=DAY - timedelta(days=1)),
        lot("pending", 100, active_from=DAY + timedelta(days=1)),
        lot("usable", 100),
    ]
    assert [x.lot_id for x in consumption_order(lots, DAY)] == ["usable"]


# --- debits and exact reversals ------------------------------------------------------------------


def test_lot_debit_records_allocations_in_consumption_order() -> None:
    w = wallet(
        lot("forever", 500),
        lot("june", 300, expires_on=date(2026, 6, 30)),
        lot("april", 200, expires_on=date(2026, 4, 30)),
    )
    new_w, allocations = consume(w, 600, DAY)
    assert allocations == [
        Allocation("april", 200),
        Allocation("june", 300),
        Allocation("forever", 100),
    ]
    assert remainders(new_w) == {"forever": 400, "june": 0, "april": 0}
    assert remainders(w) == {"forever": 500, "june": 300, "april": 200}  # values, not mutated


def test_lot_debit_of_zero_takes_nothing() -> None:
    w = wallet(lot("a", 100))
    assert consume(w, 0, DAY) == (w, [])


def test_lot_debit_above_usable_lots_refused() -> None:
    w = wallet(lot("a", 100), lot("expired", 500, expires_on=DAY - timedelta(days=1)))
    with pytest.raises(InsufficientPoints):
        consume(w, 101, DAY)


def test_lot_reversal_gives_back_exactly_to_the_lots_it_came_from() -> None:
    w = wallet(
        lot("forever", 500),
        lot("june", 300, expires_on=date(2026, 6, 30)),
        lot("april", 200, expires_on=date(2026, 4, 30)),
    )
    spent, allocations = consume(w, 600, DAY)
    restored, given, burned_kop = give_back(spent, allocations, DAY + timedelta(days=5))
    assert restored == w
    assert given == allocations
    assert burned_kop == 0


def test_lot_reversal_of_a_part_gives_back_only_that_part() -> None:
    w = wallet(lot("a", 300, expires_on=date(2026, 4, 1)), lot("b", 300))
    spent, _ = consume(w, 500, DAY)
    restored, _, _ = give_back(spent, [Allocation("b", 150), Allocation("a", 50)], DAY)
    assert remainders(restored) == {"a": 50, "b": 250}


def test_lot_already_expired_burns_again_on_give_back() -> None:
    w = wallet(lot("may", 300, expires_on=date(2027, 5, 31)), lot("forever", 300))
    spent, allocations = consume(w, 400, date(2027, 5, 30))
    assert allocations == [Allocation("may", 300), Allocation("forever", 100)]
    restored, given, burned_kop = give_back(spent, allocations, date(2027, 6, 1))
    assert burned_kop == 300
    assert given == allocations
    assert remainders(restored) == {"may": 0, "forever": 300}


def test_lot_give_back_on_its_last_day_does_not_burn() -> None:
    w = wallet(lot("may", 300, expires_on=date(2027, 5, 31)))
    spent, allocations = consume(w, 300, date(2027, 5, 1))
    restored, _, burned_kop = give_back(spent, allocations, date(2027, 5, 31))
    assert burned_kop == 0
    assert restored == w


def test_lot_give_back_to_the_same_lot_twice_adds_up() -> None:
    w = wallet(lot("a", 300))
    spent, _ = consume(w, 300, DAY)
    restored, _, _ = give_back(spent, [Allocation("a", 100), Allocation("a", 200)], DAY)
    assert restored == w


def test_lot_give_back_to_a_lot_no_longer_kept_burns() -> None:
    # A replica prunes long-spent lots; a reversal into one is long past its date and burns.
    w = wallet(lot("kept", 100, remaining_kop=50))
    restored, _, burned_kop = give_back(w, [Allocation("pruned", 40), Allocation("kept", 10)], DAY)
    assert burned_kop == 40
    assert remainders(restored) == {"kept": 60}


def test_lot_unknown_lot_id_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        wallet(lot("a", 1)).lot("b")


# --- expiry --------------------------------------------------------------------------------------


def test_lot_expiring_on_day_pays_that_day_and_is_gone_next_day() -> None:
    may = lot("may", 300, expires_on=date(2027, 5, 31))
    w = wallet(may)
    last_day, next_day = date(2027, 5, 31), date(2027, 6, 1)
    assert may.usable_on(last_day)
    assert not may.usable_on(next_day)
    assert may.expired_on(next_day)
    assert not may.expired_on(last_day)
    assert consume(w, 300, last_day)[1] == [Allocation("may", 300)]
    with pytest.raises(InsufficientPoints):
        consume(w, 1, next_day)
    assert balance(w, last_day, NOW).available_kop == 300
    assert balance(w, next_day, NOW).available_kop == 0


def test_lot_burn_on_the_day_after_the_last_day() -> None:
    w = wallet(lot("may", 300, expires_on=date(2027, 5, 31), remaining_kop=120), lot("x", 50))
    assert burn_expired(w, date(2027, 5, 31)) == (w, [])
    burned_w, burned = burn_expired(w, date(2027, 6, 1))
    assert burned == [Allocation("may", 120)]
    assert remainders(burned_w) == {"may": 0, "x": 50}
    assert burn_expired(burned_w, date(2027, 6, 2)) == (burned_w, [])  # burns once


def test_lot_accrual_on_31_august_expires_on_the_last_day_of_february() -> None:
    assert purchase_expiry(date(2026, 8, 31), 6) == date(2027, 2, 28)


def test_lot_accrual_on_31_august_expires_on_29_february_in_leap_year_2028() -> None:
    assert purchase_expiry(date(2027, 8, 31), 6) == date(2028, 2, 29)
    assert purchase_expiry(date(2027, 8, 29), 6) == date(2028, 2, 29)
    assert purchase_expiry(date(2027, 8, 28), 6) == date(2028, 2, 28)


def test_lot_expiry_is_the_same_day_n_months_later() -> None:
    assert purchase_expiry(date(2026, 1, 15), 6) == date(2026, 7, 15)
    assert purchase_expiry(date(2026, 10, 31), 6) == date(2027, 4, 30)
    assert purchase_expiry(date(2026, 1, 15), 12) == date(2027, 1, 15)


def test_lot_lifetime_none_means_non_expiring() -> None:
    assert purchase_expiry(date(2026, 8, 31), None) is None


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2026, 11, 30), 3, date(2027, 2, 28)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2028, 2, 29), 12, date(2029, 2, 28)),
        (date(2026, 3, 31), -1, date(2026, 2, 28)),
        (date(2026, 5, 5), 0, date(2026, 5, 5)),
        (date(2026, 5, 31), 120, date(2036, 5, 31)),
    ],
)
def test_lot_add_months_clamps_to_the_end_of_a_shorter_month(
    day: date, months: int, expected: date
) -> None:
    assert add_months(day, months) == expected


def test_lot_time_zone_edge_at_midnight_is_the_next_day_in_moscow() -> None:
    assert local_date(datetime(2026, 3, 31, 21, 30, tzinfo=UTC), MOSCOW) == date(2026, 4, 1)
    assert local_date(datetime(2026, 3, 31, 20, 59, 59, tzinfo=UTC), MOSCOW) == date(2026, 3, 31)
    assert local_date(datetime(2026, 3, 31, 21, 0, tzinfo=UTC), MOSCOW) == date(2026, 4, 1)


def test_lot_expiring_31_march_unusable_at_2130_utc_on_31_march() -> None:
    # Stores stop offering expired points at Moscow midnight, which is 21:00 UTC.
    march = wallet(lot("march", 100, expires_on=date(2026, 3, 31)))
    before = datetime(2026, 3, 31, 20, 30, tzinfo=UTC)
    after = datetime(2026, 3, 31, 21, 30, tzinfo=UTC)
    assert balance(march, local_date(before, MOSCOW), before).available_kop == 100
    assert balance(march, local_date(after, MOSCOW), after).available_kop == 0


def test_lot_local_date_needs_an_aware_moment() -> None:
    with pytest.raises(AssertionError):
        local_date(datetime(2026, 3, 31, 21, 30), MOSCOW)


# --- activation delay ----------------------------------------------------------------------------


def test_lot_activation_delay_points_usable_from_the_nth_day() -> None:
    sale_day = date(2026, 3, 10)
    delayed = wallet(lot("p", 500, created_on=sale_day, active_from=sale_day + timedelta(days=3)))
    for day in (sale_day, sale_day + timedelta(days=2)):
        shown = balance(delayed, day, NOW)
        assert (shown.available_kop, shown.pending_kop) == (0, 500)
        with pytest.raises(InsufficientPoints):
            consume(delayed, 1, day)
    shown = balance(delayed, sale_day + timedelta(days=3), NOW)
    assert (shown.available_kop, shown.pending_kop) == (500, 0)
    assert consume(delayed, 500, sale_day + timedelta(days=3))[1] == [Allocation("p", 500)]


def test_lot_activation_delay_zero_usable_at_once() -> None:
    now_lot = wallet(lot("p", 500, created_on=DAY, active_from=DAY))
    assert balance(now_lot, DAY, NOW).available_kop == 500
    assert balance(wallet(lot("q", 500)), DAY, NOW).available_kop == 500


# --- holds ---------------------------------------------------------------------------------------


def test_lot_hold_reduces_available() -> None:
    w = wallet(lot("a", 1000))
    held = place_hold(w, Hold("h1", 300, NOW + timedelta(hours=1)), DAY, NOW)
    shown = balance(held, DAY, NOW)
    assert (shown.available_kop, shown.held_kop, shown.usable_kop) == (700, 300, 1000)


def test_lot_expired_hold_does_not_reduce_available() -> None:
    w = wallet(lot("a", 1000), holds=(Hold("h1", 300, NOW),))
    assert balance(w, DAY, NOW - timedelta(seconds=1)).available_kop == 700
    assert balance(w, DAY, NOW).available_kop == 1000  # ends at its expiry moment
    assert balance(w, DAY, NOW + timedelta(days=1)).held_kop == 0


def test_lot_hold_above_available_refused() -> None:
    w = wallet(lot("a", 1000), holds=(Hold("h1", 600, NOW + timedelta(hours=1)),))
    with pytest.raises(InsufficientPoints):
        place_hold(w, Hold("h2", 401, NOW + timedelta(hours=1)), DAY, NOW)
    assert len(place_hold(w, Hold("h2", 400, NOW + timedelta(hours=1)), DAY, NOW).holds) == 2


def test_lot_dropped_hold_frees_its_points() -> None:
    w = wallet(lot("a", 1000), holds=(Hold("h1", 600, NOW + timedelta(hours=1)),))
    assert balance(drop_hold(w, "h1"), DAY, NOW).available_kop == 1000
    assert drop_hold(w, "unknown") == w


# --- debt ----------------------------------------------------------------------------------------


def test_lot_take_from_lot_shortfall_becomes_debt() -> None:
    w = wallet(lot("accrual", 500, remaining_kop=200))
    new_w, taken_kop, shortfall_kop = take_from_lot(w, "accrual", 500)
    assert (taken_kop, shortfall_kop) == (200, 300)
    assert new_w.debt_kop == 300
    assert new_w.lot("accrual").remaining_kop == 0
    shown = balance(new_w, DAY, NOW)
    assert (shown.net_kop, shown.available_kop, shown.debt_kop) == (-300, 0, 300)


def test_lot_take_from_lot_within_remainder_makes_no_debt() -> None:
    new_w, taken_kop, shortfall_kop = take_from_lot(wallet(lot("a", 500)), "a", 120)
    assert (taken_kop, shortfall_kop, new_w.debt_kop) == (120, 0, 0)
    assert new_w.lot("a").remaining_kop == 380


def test_lot_credit_pays_debt_first() -> None:
    w = wallet(debt_kop=300)
    new_w, paid_kop = credit(w, lot("new", 1000))
    assert paid_kop == 300
    assert new_w.debt_kop == 0
    assert new_w.lot("new").remaining_kop == 700
    assert new_w.lot("new").amount_kop == 1000
    assert balance(new_w, DAY, NOW).available_kop == 700


def test_lot_credit_smaller_than_debt_all_goes_to_debt() -> None:
    new_w, paid_kop = credit(wallet(debt_kop=300), lot("new", 100))
    assert (paid_kop, new_w.debt_kop, new_w.lot("new").remaining_kop) == (100, 200, 0)


def test_lot_credit_without_debt_adds_a_whole_lot() -> None:
    new_lot = lot("new", 100, expires_on=date(2026, 9, 10))
    new_w, paid_kop = credit(wallet(lot("a", 5)), new_lot)
    assert paid_kop == 0
    assert new_w.lots[-1] == new_lot


# --- zeroing and the balance breakdown -----------------------------------------------------------


def test_lot_zeroing_takes_only_non_expiring_remainders() -> None:
    w = wallet(
        lot("forever", 500, remaining_kop=400),
        lot("expiring", 300, expires_on=date(2026, 9, 1)),
        lot("campaign", 200),
        lot("spent", 100, remaining_kop=0),
    )
    new_w, taken = take_non_expiring(w)
    assert taken == [Allocation("forever", 400), Allocation("campaign", 200)]
    assert remainders(new_w) == {"forever": 0, "expiring": 300, "campaign": 0, "spent": 0}


def test_lot_balance_breakdown() -> None:
    w = wallet(
        lot("forever", 500),
        lot("june-a", 300, expires_on=date(2026, 6, 30)),
        lot("june-b", 100, expires_on=date(2026, 6, 30)),
        lot("april", 200, expires_on=date(2026, 4, 30)),
        lot("expired", 999, expires_on=DAY - timedelta(days=1)),
        lot("pending", 50, active_from=DAY + timedelta(days=1)),
        debt_kop=100,
        holds=(Hold("h", 250, NOW + timedelta(hours=1)),),
    )
    shown = balance(w, DAY, NOW)
    assert shown.usable_kop == 1100
    assert shown.non_expiring_kop == 500
    assert shown.expiring == ((date(2026, 4, 30), 200), (date(2026, 6, 30), 400))
    assert shown.pending_kop == 50
    assert shown.held_kop == 250
    assert shown.debt_kop == 100
    assert shown.net_kop == 1100 - 250 - 100
    assert shown.available_kop == 750


def test_lot_sources() -> None:
    assert {source.value for source in LotSource} >= {"purchase", "campaign", "zeroing_cancel"}


def test_lot_remainder_stays_within_its_amount() -> None:
    with pytest.raises(AssertionError):
        lot("a", 100, remaining_kop=101)
    with pytest.raises(AssertionError):
        lot("a", 100, remaining_kop=-1)
    with pytest.raises(AssertionError):
        Wallet(debt_kop=-1)


# --- properties ----------------------------------------------------------------------------------

START = date(2026, 1, 1)
START_AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class Model:
    """A card driven through random operations, with the journal the test keeps beside it."""

    wallet: Wallet = field(default_factory=Wallet)
    day: date = START
    journal_kop: list[int] = field(default_factory=list)  # signed transactions, burns negative
    debits: list[list[Allocation]] = field(default_factory=list)  # not yet given back
    next_id: int = 0

    @property
    def now(self) -> datetime:
        return START_AT + timedelta(days=(self.day - START).days)

    def usable_kop(self) -> int:
        return sum(x.remaining_kop for x in self.wallet.lots if x.usable_on(self.day))


# Debits are drawn as a percentage of what there is, so that most of them act on something.
credits = st.tuples(
    st.just("credit"),
    st.integers(min_value=1, max_value=5000),
    st.none() | st.integers(min_value=-2, max_value=30),  # expiry, days from today
    st.sampled_from([0, 0, 0, 1, 3]),  # activation delay, days
)
# Credits are listed twice so that sequences have points to spend, reverse and burn.
operations = st.one_of(
    credits,
    credits,
    st.tuples(st.just("consume"), st.integers(min_value=1, max_value=100)),
    st.tuples(st.just("give_back"), st.integers(min_value=0, max_value=50)),
    st.tuples(st.just("take"), st.integers(min_value=0, max_value=50), st.integers(0, 150)),
    st.tuples(st.just("burn")),
    st.tuples(st.just("zero")),
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=20)),
    st.tuples(st.just("hold"), st.integers(0, 120), st.integers(min_value=1, max_value=72)),
    st.tuples(st.just("drop"), st.integers(min_value=0, max_value=50)),
)


def apply(model: Model, op: tuple[object, ...]) -> None:
    """Apply one random operation and record its signed transactions in the test's journal."""
    w, day = model.wallet, model.day
    match op:
        case ("credit", int(amount), None | int() as expiry_days, int(delay)):
            expires_on = None if expiry_days is None else day + timedelta(days=expiry_days)
            new_lot = Lot(
                lot_id=f"L{model.next_id}",
                amount_kop=amount,
                remaining_kop=amount,
                created_on=day,
                expires_on=expires_on,
                active_from=day + timedelta(days=delay) if delay else None,
            )
            model.next_id += 1
            debt_before = w.debt_kop
            model.wallet, paid = credit(w, new_lot)
            assert paid == min(debt_before, amount)
            model.journal_kop.append(amount)
        case ("consume", int(pct)):
            amount = model.usable_kop() * pct // 100
            model.wallet, allocations = consume(w, amount, day)
            assert sum(a.amount_kop for a in allocations) == amount
            assert all(a.amount_kop > 0 for a in allocations)
            model.debits.append(allocations)
            model.journal_kop.append(-amount)
        case ("give_back", int(index)) if model.debits:
            allocations = model.debits.pop(index % len(model.debits))
            expired = sum(a.amount_kop for a in allocations if w.lot(a.lot_id).expired_on(day))
            model.wallet, given, burned = give_back(w, allocations, day)
            assert given == allocations
            assert burned == expired
            model.journal_kop += [sum(a.amount_kop for a in allocations), -burned]
        case ("take", int(index), int(pct)) if w.lots:
            target = w.lots[index % len(w.lots)]
            amount = target.amount_kop * pct // 100  # above 100 % reverses more than is left
            model.wallet, taken, shortfall = take_from_lot(w, target.lot_id, amount)
            assert taken == min(amount, target.remaining_kop)
            assert taken + shortfall == amount
            assert model.wallet.debt_kop == w.debt_kop + shortfall
            model.journal_kop.append(-amount)
        case ("burn",):
            model.wallet, burned_allocations = burn_expired(w, day)
            model.journal_kop.append(-sum(a.amount_kop for a in burned_allocations))
            assert all(x.remaining_kop == 0 for x in model.wallet.lots if x.expired_on(day))
        case ("zero",):
            model.wallet, taken_allocations = take_non_expiring(w)
            model.journal_kop.append(-sum(a.amount_kop for a in taken_allocations))
        case ("advance", int(days)):
            model.day = day + timedelta(days=days)
        case ("hold", int(pct), int(ttl_h)):
            amount = max(0, balance(w, day, model.now).net_kop) * pct // 100
            hold = Hold(f"H{model.next_id}", amount, model.now + timedelta(hours=ttl_h))
            model.next_id += 1
            if 0 < amount <= balance(w, day, model.now).available_kop:
                model.wallet = place_hold(w, hold, day, model.now)
            elif amount > 0:
                with pytest.raises(InsufficientPoints):
                    place_hold(w, hold, day, model.now)
        case ("drop", int(index)) if w.holds:
            model.wallet = drop_hold(w, w.holds[index % len(w.holds)].hold_id)
        case _:
            pass  # an operation with nothing to act on (no debits, lots or holds yet)


def check_invariants(model: Model) -> None:
    w = model.wallet
    assert w.debt_kop >= 0
    for x in w.lots:
        assert 0 <= x.remaining_kop <= x.amount_kop
    # The journal the test kept adds up to what the wallet holds.
    assert sum(model.journal_kop) == sum(x.remaining_kop for x in w.lots) - w.debt_kop
    shown = balance(w, model.day, model.now)
    active_holds = sum(h.amount_kop for h in w.holds if h.active_at(model.now))
    assert shown.net_kop == model.usable_kop() - active_holds - w.debt_kop
    assert shown.available_kop == max(0, shown.net_kop)
    assert shown.usable_kop == shown.non_expiring_kop + sum(kop for _, kop in shown.expiring)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(operations, min_size=10, max_size=60))
def test_property_lots_never_negative_and_journal_adds_up_under_random_operations(
    ops: list[tuple[object, ...]],
) -> None:
    model = Model()
    for op in ops:
        apply(model, op)
        check_invariants(model)


@st.composite
def wallets(draw: st.DrawFn) -> Wallet:
    specs = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=1, max_value=5000),
                st.integers(min_value=0, max_value=5000),
                st.none() | st.integers(min_value=-10, max_value=60),
                st.integers(min_value=-30, max_value=0),
                st.integers(min_value=0, max_value=2),
            ),
            max_size=10,
        )
    )
    lots = tuple(
        Lot(
            lot_id=f"L{i}",
            amount_kop=amount,
            remaining_kop=min(remaining, amount),
            created_on=DAY + timedelta(days=created),
            expires_on=None if expiry is None else DAY + timedelta(days=expiry),
            active_from=DAY + timedelta(days=delay) if delay else None,
        )
        for i, (amount, remaining, expiry, created, delay) in enumerate(specs)
    )
    return Wallet(lots=lots)


@settings(max_examples=500, deadline=None)
@given(w=wallets(), data=st.data())
def test_property_debit_follows_consumption_order_and_give_back_restores_exactly(
    w: Wallet, data: st.DataObject
) -> None:
    order = consumption_order(w.lots, DAY)
    usable = sum(x.remaining_kop for x in order)
    amount = data.draw(st.integers(min_value=0, max_value=usable), label="amount")
    spent, allocations = consume(w, amount, DAY)
    # The allocations take whole lots in consumption order, the last one possibly in part.
    assert [a.lot_id for a in allocations] == [x.lot_id for x in order[: len(allocations)]]
    for allocation, lot_ in zip(allocations[:-1], order, strict=False):
        assert allocation.amount_kop == lot_.remaining_kop
    assert sum(a.amount_kop for a in allocations) == amount
    restored, _, burned_kop = give_back(spent, allocations, DAY)
    assert burned_kop == 0
    assert restored == w
    with pytest.raises(InsufficientPoints):
        consume(w, usable + 1, DAY)


@settings(max_examples=300, deadline=None)
@given(
    debt_kop=st.integers(min_value=0, max_value=10_000),
    amount_kop=st.integers(min_value=0, max_value=10_000),
)
def test_property_credit_pays_debt_first(debt_kop: int, amount_kop: int) -> None:
    new_w, paid_kop = credit(Wallet(debt_kop=debt_kop), lot("new", amount_kop))
    assert paid_kop == min(debt_kop, amount_kop)
    assert new_w.debt_kop == debt_kop - paid_kop
    assert new_w.lot("new").remaining_kop == amount_kop - paid_kop
    assert balance(new_w, DAY, NOW).net_kop == amount_kop - debt_kop


@settings(max_examples=300, deadline=None)
@given(
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)),
    months=st.integers(min_value=1, max_value=120),
)
def test_property_expiry_is_n_months_later_clamped_to_month_end(day: date, months: int) -> None:
    expiry = purchase_expiry(day, months)
    assert expiry is not None
    assert (expiry.year * 12 + expiry.month) - (day.year * 12 + day.month) == months
    assert expiry.day == day.day or (expiry.day < day.day and (expiry + timedelta(days=1)).day == 1)


@settings(max_examples=300, deadline=None)
@given(w=wallets(), data=st.data())
def test_property_give_back_later_burns_exactly_what_lands_in_expired_lots(
    w: Wallet, data: st.DataObject
) -> None:
    usable = sum(x.remaining_kop for x in consumption_order(w.lots, DAY))
    amount = data.draw(st.integers(min_value=0, max_value=usable), label="amount")
    spent, allocations = consume(w, amount, DAY)
    later = DAY + timedelta(days=data.draw(st.integers(min_value=0, max_value=70), label="days"))
    restored, _, burned_kop = give_back(spent, allocations, later)
    expired = {x.lot_id for x in w.lots if x.expired_on(later)}
    assert burned_kop == sum(a.amount_kop for a in allocations if a.lot_id in expired)
    for before, after in zip(w.lots, restored.lots, strict=True):
        if before.lot_id in expired:
            assert after == spent.lot(before.lot_id)  # nothing lands in an expired lot
        else:
            assert after == before
    # What was debited comes back, less what burns at once.
    gained = sum(x.remaining_kop for x in restored.lots) - sum(x.remaining_kop for x in spent.lots)
    assert gained == amount - burned_kop
