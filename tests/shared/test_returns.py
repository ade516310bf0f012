"""Returns of docs/domain.md: partial by quantity, never more than the sale, exact in the end."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.returns import (
    ReturnedLine,
    ReturnExceedsSale,
    SoldLine,
    plan_return,
    refund_allocations,
)

D = Decimal


def sold(line_id: str, qty: str, accrued_kop: int, redeemed_kop: int) -> SoldLine:
    return SoldLine(line_id, D(qty), accrued_kop, redeemed_kop)


RECEIPT = (sold("a", "4", 100, 200), sold("b", "3", 100, 0), sold("c", "0.5", 7, 9))


# --- partial and whole returns -------------------------------------------------------------------


def test_return_partial_by_quantity_reverses_that_share() -> None:
    plan = plan_return(RECEIPT, {}, {"a": D(1)})
    assert plan.lines == (ReturnedLine("a", D(1), 25, 50),)
    assert (plan.accrual_reversed_kop, plan.redemption_refunded_kop) == (25, 50)


def test_return_partial_rounds_down_on_the_cumulative_quantity() -> None:
    # 100 kopecks over 3 units: 33 after one, 66 after two, 100 after three.
    returned: dict[str, Decimal] = {}
    reversed_kop = []
    for _ in range(3):
        plan = plan_return(RECEIPT, returned, {"b": D(1)})
        reversed_kop.append(plan.accrual_reversed_kop)
        returned["b"] = returned.get("b", D(0)) + 1
    assert reversed_kop == [33, 33, 34]


def test_return_repeated_partials_never_exceed_the_sale() -> None:
    plan_return(RECEIPT, {}, {"b": D(2)})
    with pytest.raises(ReturnExceedsSale):
        plan_return(RECEIPT, {"b": D(2)}, {"b": D(2)})
    with pytest.raises(ReturnExceedsSale):
        plan_return(RECEIPT, {"b": D(3)}, {"b": D("0.001")})


def test_return_full_after_partials_reverses_exactly() -> None:
    first = plan_return(RECEIPT, {}, {"a": D(1), "b": D(1), "c": D("0.2")})
    second = plan_return(RECEIPT, {"a": D(1), "b": D(1), "c": D("0.2")}, {"a": D(2)})
    rest = plan_return(RECEIPT, {"a": D(3), "b": D(1), "c": D("0.2")}, None)
    assert {line.line_id: line.qty for line in rest.lines} == {"a": 1, "b": 2, "c": D("0.3")}
    plans = (first, second, rest)
    assert sum(p.accrual_reversed_kop for p in plans) == sum(x.accrued_kop for x in RECEIPT)
    assert sum(p.redemption_refunded_kop for p in plans) == sum(x.redeemed_kop for x in RECEIPT)


def test_return_without_lines_is_the_whole_receipt() -> None:
    plan = plan_return(RECEIPT, {}, None)
    assert [line.qty for line in plan.lines] == [D(4), D(3), D("0.5")]
    assert plan.accrual_reversed_kop == 207
    assert plan.redemption_refunded_kop == 209


def test_return_whole_of_a_fully_returned_receipt_refused() -> None:
    with pytest.raises(ReturnExceedsSale):
        plan_return(RECEIPT, {"a": D(4), "b": D(3), "c": D("0.5")}, None)


def test_return_whole_skips_lines_already_returned() -> None:
    plan = plan_return(RECEIPT, {"a": D(4)}, None)
    assert [line.line_id for line in plan.lines] == ["b", "c"]


def test_return_of_a_fractional_quantity() -> None:
    plan = plan_return(RECEIPT, {}, {"c": D("0.25")})
    assert (plan.accrual_reversed_kop, plan.redemption_refunded_kop) == (3, 4)


def test_return_unknown_line_refused() -> None:
    with pytest.raises(ReturnExceedsSale, match="not on the receipt"):
        plan_return(RECEIPT, {}, {"z": D(1)})


def test_return_over_quantity_refused() -> None:
    with pytest.raises(ReturnExceedsSale, match="left to return"):
        plan_return(RECEIPT, {}, {"a": D(5)})
    with pytest.raises(ReturnExceedsSale, match="left to return"):
        plan_return(RECEIPT, {}, {"c": D("0.51")})


@pytest.mark.parametrize("qty", ["0", "-1"])
def test_return_non_positive_quantity_refused(qty: str) -> None:
    with pytest.raises(ReturnExceedsSale, match="positive"):
        plan_return(RECEIPT, {}, {"a": D(qty)})


def test_return_with_an_empty_list_of_lines_refused() -> None:
    # The till's "no lines" means the whole receipt; the caller passes None for it.
    with pytest.raises(ReturnExceedsSale):
        plan_return(RECEIPT, {}, {})


def test_return_exceeds_sale_is_a_value_error() -> None:
    assert issubclass(ReturnExceedsSale, ValueError)


# --- refunds back to lots ------------------------------------------------------------------------


def test_return_refund_goes_back_in_reverse_consumption_order() -> None:
    redeemed = [("april", 100), ("june", 50)]  # consumption order: april was taken first
    assert refund_allocations(redeemed, 0, 30) == [("june", 30)]
    assert refund_allocations(redeemed, 30, 40) == [("june", 20), ("april", 20)]
    assert refund_allocations(redeemed, 70, 80) == [("april", 80)]


def test_return_refunds_over_a_sequence_give_back_exactly_the_allocations() -> None:
    redeemed = [("a", 100), ("b", 50), ("c", 25)]
    given: Counter[str] = Counter()
    before = 0
    for refund in (10, 60, 0, 90, 15):
        for lot_id, amount in refund_allocations(redeemed, before, refund):
            given[lot_id] += amount
        before += refund
    assert dict(given) == dict(redeemed)


def test_return_refund_of_zero_gives_back_nothing() -> None:
    assert refund_allocations([("a", 100)], 0, 0) == []
    assert refund_allocations([], 0, 0) == []


def test_return_refund_above_the_redemption_is_a_programmer_error() -> None:
    with pytest.raises(AssertionError):
        refund_allocations([("a", 100)], 60, 41)


# --- properties ----------------------------------------------------------------------------------

quantities = st.integers(min_value=1, max_value=2000).map(lambda n: Decimal(n) / 100)
sold_lines = st.lists(
    st.tuples(
        quantities,
        st.integers(min_value=0, max_value=1_000_000),
        st.integers(min_value=0, max_value=1_000_000),
    ),
    min_size=1,
    max_size=6,
).map(lambda specs: [SoldLine(str(i), *spec) for i, spec in enumerate(specs)])


@settings(max_examples=500, deadline=None)
@given(lines=sold_lines, data=st.data())
def test_property_return_sequences_never_exceed_the_sale_and_full_set_is_exact(
    lines: list[SoldLine], data: st.DataObject
) -> None:
    returned: dict[str, Decimal] = {}
    reversed_kop: Counter[str] = Counter()
    refunded_kop: Counter[str] = Counter()
    steps = data.draw(st.integers(min_value=0, max_value=6), label="partial returns")
    for _ in range(steps):
        line = data.draw(st.sampled_from(lines), label="line")
        left = line.qty - returned.get(line.line_id, Decimal(0))
        # Sometimes ask for more than is left: that must be refused and change nothing.
        qty = Decimal(data.draw(st.integers(min_value=1, max_value=2500), label="qty")) / 100
        if qty > left:
            with pytest.raises(ReturnExceedsSale):
                plan_return(lines, returned, {line.line_id: qty})
            continue
        plan = plan_return(lines, returned, {line.line_id: qty})
        (part,) = plan.lines
        assert part.accrual_reversed_kop >= 0
        assert part.redemption_refunded_kop >= 0
        returned[line.line_id] = returned.get(line.line_id, Decimal(0)) + qty
        reversed_kop[line.line_id] += part.accrual_reversed_kop
        refunded_kop[line.line_id] += part.redemption_refunded_kop
        for sold_line in lines:
            assert reversed_kop[sold_line.line_id] <= sold_line.accrued_kop
            assert refunded_kop[sold_line.line_id] <= sold_line.redeemed_kop
    everything_back = all(returned.get(x.line_id, 0) == x.qty for x in lines)
    if everything_back:
        with pytest.raises(ReturnExceedsSale):
            plan_return(lines, returned, None)
    else:
        rest = plan_return(lines, returned, None)
        for part in rest.lines:
            reversed_kop[part.line_id] += part.accrual_reversed_kop
            refunded_kop[part.line_id] += part.redemption_refunded_kop
    for sold_line in lines:
        assert reversed_kop[sold_line.line_id] == sold_line.accrued_kop
        assert refunded_kop[sold_line.line_id] == sold_line.redeemed_kop


@settings(max_examples=500, deadline=None)
@given(
    redeemed=st.lists(
        st.tuples(st.text("abcdef", min_size=1, max_size=2), st.integers(1, 10_000)),
        max_size=6,
        unique_by=lambda allocation: allocation[0],
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=60_000), max_size=6),
)
def test_property_refunds_give_back_exactly_the_allocations(
    redeemed: list[tuple[str, int]], cuts: list[int]
) -> None:
    total = sum(amount for _, amount in redeemed)
    points = sorted({min(cut, total) for cut in cuts} | {0, total})
    given: Counter[str] = Counter()
    for before, after in pairwise(points):
        parts = refund_allocations(redeemed, before, after - before)
        assert sum(amount for _, amount in parts) == after - before
        assert all(amount > 0 for _, amount in parts)
        for lot_id, amount in parts:
            given[lot_id] += amount
        for lot_id, amount in redeemed:
            assert given[lot_id] <= amount
    assert given == Counter(dict(redeemed))
