"""The sale calculation of docs/domain.md: accrual rates, exclusions, caps, rounding, spreading."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.receipts import (
    BP_WHOLE,
    Line,
    accrual_rate_bp,
    accrue,
    calculate,
    line_redeem_caps,
    max_redeem,
    redeemable,
    round_to_step,
    spread_redemption,
)
from shared.settings import ProgramSettings, pct_to_bp

STANDARD = ProgramSettings()


def line(
    amount_kop: int,
    *,
    line_id: str = "1",
    sku: str = "SKU",
    vital: bool = False,
    category: str | None = None,
    qty: str = "1",
) -> Line:
    return Line(line_id, sku, Decimal(qty), amount_kop, vital=vital, category=category)


def program(**changes: Any) -> ProgramSettings:
    return ProgramSettings.model_validate(changes)


# --- accrual rates -------------------------------------------------------------------------------


def test_sale_vital_line_accrues_one_percent() -> None:
    result = calculate([line(10_000, vital=True)], STANDARD, available_kop=0)
    assert result.accrued_kop == 100
    assert result.lines[0].accrued_kop == 100


def test_sale_other_line_accrues_five_percent() -> None:
    result = calculate([line(10_000)], STANDARD, available_kop=0)
    assert result.accrued_kop == 500


def test_sale_mixed_receipt_accrues_each_line_at_its_rate() -> None:
    lines = [line(10_000, line_id="v", vital=True), line(20_000, line_id="o")]
    result = calculate(lines, STANDARD, available_kop=0)
    assert [r.accrued_kop for r in result.lines] == [100, 1000]
    assert result.accrued_kop == 1100


def test_sale_category_override_replaces_the_other_rate() -> None:
    settings_ = program(accrual_rate_by_category_pct={"cosmetics": "10"})
    assert accrual_rate_bp(line(1, category="cosmetics"), settings_) == 1000
    assert accrual_rate_bp(line(1, category="drugs"), settings_) == 500
    assert accrual_rate_bp(line(1), settings_) == 500
    assert calculate([line(10_000, category="cosmetics")], settings_, 0).accrued_kop == 1000


def test_sale_category_override_does_not_change_the_vital_rate() -> None:
    # Decision: the ЖНВЛП rate is the legal one and wins over a category's rate.
    settings_ = program(accrual_rate_by_category_pct={"drugs": "10"})
    assert accrual_rate_bp(line(1, vital=True, category="drugs"), settings_) == 100


def test_sale_rates_are_settings() -> None:
    settings_ = program(accrual_rate_vital_pct="2", accrual_rate_other_pct="7.5")
    assert accrual_rate_bp(line(1, vital=True), settings_) == 200
    assert accrual_rate_bp(line(1), settings_) == 750


def test_sale_sku_excluded_from_accrual_earns_nothing() -> None:
    settings_ = program(accrual_excluded_skus={"TOBACCO-1"})
    lines = [line(10_000, line_id="a", sku="TOBACCO-1"), line(10_000, line_id="b")]
    result = calculate(lines, settings_, available_kop=0)
    assert [r.accrued_kop for r in result.lines] == [0, 500]


def test_sale_category_excluded_from_accrual_earns_nothing_even_when_vital() -> None:
    settings_ = program(accrual_excluded_categories={"promo"})
    assert accrual_rate_bp(line(1, category="promo"), settings_) == 0
    assert accrual_rate_bp(line(1, category="promo", vital=True), settings_) == 0
    assert accrual_rate_bp(line(1, category="other"), settings_) == 500


def test_sale_line_excluded_from_accrual_can_still_be_paid_with_points() -> None:
    settings_ = program(accrual_excluded_skus={"X"})
    result = calculate([line(10_000, sku="X")], settings_, available_kop=10_000, redeem_kop=5000)
    assert result.redeemed_kop == 5000
    assert result.accrued_kop == 0


def test_sale_sku_excluded_from_redemption_has_no_cap_and_pays_nothing() -> None:
    settings_ = program(redemption_excluded_skus={"X"})
    lines = [line(10_000, line_id="a", sku="X"), line(10_000, line_id="b")]
    assert not redeemable(lines[0], settings_)
    assert line_redeem_caps(lines, settings_) == [0, 5000]
    result = calculate(lines, settings_, available_kop=100_000, redeem_kop=100_000)
    assert result.max_redeem_kop == 5000
    assert [r.redeemed_kop for r in result.lines] == [0, 5000]


def test_sale_category_excluded_from_redemption_has_no_cap() -> None:
    settings_ = program(redemption_excluded_categories={"baby-food"})
    lines = [line(10_000, line_id="a", category="baby-food"), line(10_000, line_id="b")]
    assert line_redeem_caps(lines, settings_) == [0, 5000]


def test_sale_line_excluded_from_redemption_still_accrues() -> None:
    settings_ = program(redemption_excluded_skus={"X"})
    result = calculate([line(10_000, sku="X")], settings_, available_kop=10_000, redeem_kop=10_000)
    assert result.redeemed_kop == 0
    assert result.accrued_kop == 500


# --- accrual base and rounding -------------------------------------------------------------------


def test_sale_accrual_only_on_the_part_paid_with_money() -> None:
    result = calculate([line(10_000)], STANDARD, available_kop=10_000, redeem_kop=5000)
    assert result.redeemed_kop == 5000
    assert result.accrued_kop == 250  # 5 % of the 50 roubles paid with money


def test_sale_accrual_base_per_line_after_a_spread_redemption() -> None:
    lines = [line(10_000, line_id="a", vital=True), line(30_000, line_id="b")]
    redeemed = [2000, 6000]
    assert accrue(lines, redeemed, STANDARD) == [80, 1200]


def test_sale_accrual_rounded_down_to_the_kopeck_once_per_receipt() -> None:
    # Three lines of 19.99 at 5 % are 0.9995 each: 2.9985 for the receipt, 2.99 after rounding
    # once (rounding each line down would give only 2.97).
    lines = [line(1999, line_id=str(i)) for i in range(3)]
    accrued = accrue(lines, [0, 0, 0], STANDARD)
    assert sum(accrued) == 299
    assert accrued == [100, 100, 99]  # the split adds up, ties to the earlier line


def test_sale_accrual_rounded_down_never_up() -> None:
    assert accrue([line(1999)], [0], STANDARD) == [99]  # 0.9995 → 0.99


def test_sale_accrual_rounding_to_whole_roubles_option() -> None:
    settings_ = program(accrual_rounding="rouble")
    assert accrue([line(24_680)], [0], settings_) == [1200]  # 12.34 → 12.00
    assert accrue([line(1999)], [0], settings_) == [0]  # 0.9995 → 0.00
    lines = [line(15_000, line_id="a"), line(15_000, line_id="b")]  # 7.50 + 7.50 = 15.00
    assert accrue(lines, [0, 0], settings_) == [750, 750]


def test_sale_accrual_split_adds_up_to_the_receipt_total() -> None:
    lines = [line(333, line_id="a"), line(333, line_id="b", vital=True), line(10_001, line_id="c")]
    result = calculate(lines, STANDARD, available_kop=0)
    assert sum(r.accrued_kop for r in result.lines) == result.accrued_kop
    exact = Fraction(333 * 500 + 333 * 100 + 10_001 * 500, BP_WHOLE)
    assert result.accrued_kop == math.floor(exact)


def test_sale_zero_accrual_when_everything_is_excluded() -> None:
    settings_ = program(accrual_rate_other_pct="0")
    assert accrue([line(10_000), line(5, line_id="2")], [0, 0], settings_) == [0, 0]
    assert accrue([], [], STANDARD) == []


# --- redemption caps and max redeem --------------------------------------------------------------


def test_sale_redemption_cap_is_half_of_each_eligible_line_rounded_down() -> None:
    lines = [line(10_001, line_id="a"), line(3, line_id="b"), line(0, line_id="c")]
    assert line_redeem_caps(lines, STANDARD) == [5000, 1, 0]


def test_sale_redemption_cap_share_is_a_setting() -> None:
    assert line_redeem_caps([line(10_000)], program(redemption_share_max_pct="30")) == [3000]
    assert line_redeem_caps([line(10_000)], program(redemption_share_max_pct="0")) == [0]
    assert line_redeem_caps([line(10_000)], program(redemption_share_max_pct="100")) == [10_000]


def test_sale_receipt_cap_is_the_sum_of_line_caps() -> None:
    # Per-line floors: 1 + 1 = 2, not floor(50 % of 6) = 3.
    lines = [line(3, line_id="a"), line(3, line_id="b")]
    assert max_redeem(lines, STANDARD, available_kop=100) == 2


@pytest.mark.parametrize(
    ("available_kop", "expected_kop"),
    [(3000, 3000), (5000, 5000), (9000, 5000), (0, 0), (-700, 0)],
)
def test_sale_max_redeem_is_min_of_balance_and_cap(available_kop: int, expected_kop: int) -> None:
    result = calculate([line(10_000)], STANDARD, available_kop=available_kop)
    assert result.max_redeem_kop == expected_kop
    assert max_redeem([line(10_000)], STANDARD, available_kop) == expected_kop


def test_sale_max_redeem_of_fully_excluded_receipt_is_zero() -> None:
    settings_ = program(redemption_excluded_categories={"c"})
    assert max_redeem([line(10_000, category="c")], settings_, 10_000) == 0


def test_sale_redemption_step_kopeck_by_default() -> None:
    result = calculate([line(10_101)], STANDARD, available_kop=100_000, redeem_kop=1234)
    assert result.max_redeem_kop == 5050
    assert result.redeemed_kop == 1234


def test_sale_redemption_step_rouble_rounds_down_to_whole_roubles() -> None:
    settings_ = program(redemption_step="rouble")
    result = calculate([line(10_101)], settings_, available_kop=100_000, redeem_kop=1234)
    assert result.max_redeem_kop == 5000
    assert result.redeemed_kop == 1200
    assert max_redeem([line(10_000)], settings_, available_kop=4599) == 4500
    assert max_redeem([line(150)], settings_, available_kop=100_000) == 0


def test_sale_round_to_step() -> None:
    assert round_to_step(1299, "kopeck") == 1299
    assert round_to_step(1299, "rouble") == 1200
    assert round_to_step(99, "rouble") == 0


def test_sale_requested_redemption_is_clamped_to_the_maximum() -> None:
    result = calculate([line(10_000)], STANDARD, available_kop=3000, redeem_kop=999_999)
    assert result.redeemed_kop == 3000
    assert calculate([line(10_000)], STANDARD, 3000, redeem_kop=-5).redeemed_kop == 0


# --- spreading a redemption ----------------------------------------------------------------------


def test_sale_redemption_spread_pro_rata_to_line_amounts() -> None:
    lines = [line(10_000, line_id="a"), line(30_000, line_id="b")]
    result = calculate(lines, STANDARD, available_kop=100_000, redeem_kop=4000)
    assert [r.redeemed_kop for r in result.lines] == [1000, 3000]
    assert [r.max_redeem_kop for r in result.lines] == [5000, 15_000]


def test_sale_redemption_spread_leftover_kopeck_to_the_earlier_of_equal_lines() -> None:
    lines = [line(1000, line_id="a"), line(1000, line_id="b")]
    assert spread_redemption(1, lines, [500, 500]) == [1, 0]


def test_sale_redemption_no_line_pays_above_its_cap() -> None:
    # Pro rata would be 30 + 30; line a is capped at 10, so line b takes the other 50.
    lines = [line(10_000, line_id="a"), line(10_000, line_id="b")]
    assert spread_redemption(6000, lines, [1000, 9000]) == [1000, 5000]


def test_sale_redemption_full_cap_fills_every_line_to_its_cap() -> None:
    lines = [line(10_001, line_id="a"), line(3, line_id="b"), line(777, line_id="c")]
    caps = line_redeem_caps(lines, STANDARD)
    assert spread_redemption(sum(caps), lines, caps) == caps


def test_sale_redemption_above_the_caps_cannot_be_spread() -> None:
    with pytest.raises(ValueError, match="caps"):
        spread_redemption(5001, [line(10_000)], [5000])


def test_sale_line_results_add_up_to_the_receipt() -> None:
    lines = [line(1001, line_id="a"), line(2002, line_id="b", vital=True), line(3003, line_id="c")]
    result = calculate(lines, STANDARD, available_kop=2000, redeem_kop=2000)
    assert [r.line_id for r in result.lines] == ["a", "b", "c"]
    assert sum(r.redeemed_kop for r in result.lines) == result.redeemed_kop == 2000
    assert sum(r.accrued_kop for r in result.lines) == result.accrued_kop


def test_sale_line_rejects_negative_amount_and_non_positive_quantity() -> None:
    with pytest.raises(AssertionError):
        line(-1)
    with pytest.raises(AssertionError):
        line(100, qty="0")


# --- properties ----------------------------------------------------------------------------------

CATEGORIES = ["c1", "c2", "c3"]
SKUS = ["s1", "s2", "s3", "s4"]
percents = st.integers(min_value=0, max_value=10_000).map(lambda bp: Decimal(bp) / 100)


# What the rules look at besides the amount, drawn as one choice to keep generation cheap.
PROFILES = [
    (sku, vital, category)
    for sku in SKUS
    for vital in (False, True)
    for category in [None, *CATEGORIES]
]
receipt_lines = st.lists(
    st.tuples(st.sampled_from(PROFILES), st.integers(min_value=0, max_value=10_000_000)),
    max_size=12,
).map(
    lambda specs: [
        Line(str(i), sku, Decimal(1), amount_kop, vital=vital, category=category)
        for i, ((sku, vital, category), amount_kop) in enumerate(specs)
    ]
)


def subsets_of(items: list[str]) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(items), max_size=2)


@st.composite
def programs(draw: st.DrawFn) -> ProgramSettings:
    return ProgramSettings(
        accrual_rate_vital_pct=draw(percents),
        accrual_rate_other_pct=draw(percents),
        accrual_rate_by_category_pct=draw(
            st.dictionaries(st.sampled_from(CATEGORIES), percents, max_size=2)
        ),
        accrual_excluded_skus=draw(subsets_of(SKUS)),
        accrual_excluded_categories=draw(subsets_of(CATEGORIES)),
        redemption_excluded_skus=draw(subsets_of(SKUS)),
        redemption_excluded_categories=draw(subsets_of(CATEGORIES)),
        redemption_share_max_pct=draw(percents),
        accrual_rounding=draw(st.sampled_from(["kopeck", "rouble"])),
        redemption_step=draw(st.sampled_from(["kopeck", "rouble"])),
    )


@settings(max_examples=1000, deadline=None)
@given(lines=receipt_lines, data=st.data())
def test_property_spread_redemption_adds_up_and_no_line_above_its_cap(
    lines: list[Line], data: st.DataObject
) -> None:
    caps = [
        data.draw(st.integers(min_value=0, max_value=line_.amount_kop), label=f"cap {i}")
        for i, line_ in enumerate(lines)
    ]
    total = data.draw(st.integers(min_value=0, max_value=sum(caps)), label="total")
    parts = spread_redemption(total, lines, caps)
    assert sum(parts) == total
    for part, cap in zip(parts, caps, strict=True):
        assert 0 <= part <= cap


@settings(max_examples=500, deadline=None)
@given(
    lines=receipt_lines,
    settings_=programs(),
    available_kop=st.integers(min_value=-100_000, max_value=10_000_000),
    redeem_kop=st.integers(min_value=-100, max_value=20_000_000),
)
def test_property_calculate_redemption_never_above_balance_or_cap_and_equals_line_parts(
    lines: list[Line], settings_: ProgramSettings, available_kop: int, redeem_kop: int
) -> None:
    result = calculate(lines, settings_, available_kop, redeem_kop)
    caps = line_redeem_caps(lines, settings_)
    assert 0 <= result.redeemed_kop <= result.max_redeem_kop
    assert result.redeemed_kop <= max(redeem_kop, 0)
    assert result.max_redeem_kop <= max(available_kop, 0)
    assert result.max_redeem_kop <= sum(caps)
    assert result.redeemed_kop == sum(r.redeemed_kop for r in result.lines)
    for line_result, line_, cap in zip(result.lines, lines, caps, strict=True):
        assert line_result.max_redeem_kop == cap
        assert 0 <= line_result.redeemed_kop <= cap <= line_.amount_kop
    if settings_.redemption_step == "rouble":
        assert result.max_redeem_kop % 100 == 0
        assert result.redeemed_kop % 100 == 0
    else:
        assert result.max_redeem_kop == max(0, min(available_kop, sum(caps)))
        assert result.redeemed_kop == max(0, min(redeem_kop, result.max_redeem_kop))


@settings(max_examples=500, deadline=None)
@given(lines=receipt_lines, settings_=programs(), data=st.data())
def test_property_accrual_never_negative_and_never_on_the_part_paid_with_points(
    lines: list[Line], settings_: ProgramSettings, data: st.DataObject
) -> None:
    redeemed = [
        data.draw(st.integers(min_value=0, max_value=line_.amount_kop), label=f"redeemed {i}")
        for i, line_ in enumerate(lines)
    ]
    accrued = accrue(lines, redeemed, settings_)
    exact_total = Fraction(0)
    for line_, points_kop, accrued_kop in zip(lines, redeemed, accrued, strict=True):
        exact = Fraction((line_.amount_kop - points_kop) * accrual_rate_bp(line_, settings_))
        exact /= BP_WHOLE
        exact_total += exact
        assert 0 <= accrued_kop <= math.ceil(exact)
        if accrual_rate_bp(line_, settings_) == 0 or line_.amount_kop == points_kop:
            assert accrued_kop == 0
    total = sum(accrued)
    assert total <= math.floor(exact_total)
    if settings_.accrual_rounding == "rouble":
        assert total % 100 == 0
        assert total > math.floor(exact_total) - 100
    else:
        assert total == math.floor(exact_total)


@settings(max_examples=300, deadline=None)
@given(lines=receipt_lines, settings_=programs())
def test_property_rates_are_the_settings_basis_points(
    lines: list[Line], settings_: ProgramSettings
) -> None:
    for line_ in lines:
        rate = accrual_rate_bp(line_, settings_)
        excluded = line_.sku in settings_.accrual_excluded_skus or (
            line_.category in settings_.accrual_excluded_categories
        )
        if excluded:
            assert rate == 0
        elif line_.vital:
            assert rate == pct_to_bp(settings_.accrual_rate_vital_pct)
        elif line_.category in settings_.accrual_rate_by_category_pct:
            assert line_.category is not None
            assert rate == pct_to_bp(settings_.accrual_rate_by_category_pct[line_.category])
        else:
            assert rate == pct_to_bp(settings_.accrual_rate_other_pct)
