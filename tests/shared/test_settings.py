"""Program settings: Standard-N's defaults from docs/domain.md, validation, basis points."""

from __future__ import annotations

from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from shared.settings import DEFAULT_SETTINGS, ProgramSettings, pct_to_bp


def test_settings_defaults_are_standard_n() -> None:
    s = ProgramSettings()
    assert s.accrual_rate_vital_pct == Decimal("1")
    assert s.accrual_rate_other_pct == Decimal("5")
    assert s.accrual_rate_by_category_pct == {}
    assert s.accrual_excluded_skus == frozenset()
    assert s.accrual_excluded_categories == frozenset()
    assert s.redemption_excluded_skus == frozenset()
    assert s.redemption_excluded_categories == frozenset()
    assert s.redemption_share_max_pct == Decimal("50")
    assert s.accrual_rounding == "kopeck"
    assert s.redemption_step == "kopeck"
    assert s.accrual_lifetime_months == 6
    assert s.accrual_activation_delay_days == 0
    assert s.time_zone == "Europe/Moscow"
    assert s.redemption_confirmation == "code"
    assert s.registration_confirmation == "code"
    assert s.registration_code_skip_after_s == 30
    assert s.verification_code_ttl_s == 5 * 60
    assert s.verification_attempts_max == 5
    assert s.verification_resend_after_s == 60
    assert s.verification_codes_per_phone_hour_max == 10
    assert s.sync_staleness_max_s == 60 * 60
    assert s.debt_allowed is True
    # The offline caps are on (docs/settings.md says why).
    assert s.offline_redemption_max_kop == 100_000
    assert s.offline_redemption_store_total_max_kop == 500_000
    assert s.offline_redemptions_per_card_day_max == 1
    assert s == DEFAULT_SETTINGS


def test_settings_every_field_has_a_one_line_description() -> None:
    for name, field in ProgramSettings.model_fields.items():
        assert field.description, name
        assert "\n" not in field.description, name


def test_settings_zone_is_the_program_time_zone() -> None:
    assert ProgramSettings().zone == ZoneInfo("Europe/Moscow")
    assert ProgramSettings(time_zone="Asia/Yekaterinburg").zone == ZoneInfo("Asia/Yekaterinburg")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd"])
def test_settings_unknown_time_zone_refused(zone: str) -> None:
    with pytest.raises(ValidationError):
        ProgramSettings(time_zone=zone)


def test_settings_are_frozen() -> None:
    s = ProgramSettings()
    with pytest.raises(ValidationError):
        s.accrual_rate_other_pct = Decimal("7")  # type: ignore[misc]


def test_settings_unknown_field_refused() -> None:
    with pytest.raises(ValidationError):
        ProgramSettings.model_validate({"accrual_rate_pct": 5})


@pytest.mark.parametrize("percent", ["-1", "100.01", "1.005", "101"])
def test_settings_percent_outside_0_100_or_with_three_decimals_refused(percent: str) -> None:
    with pytest.raises(ValidationError):
        ProgramSettings(accrual_rate_other_pct=Decimal(percent))
    with pytest.raises(ValidationError):
        ProgramSettings(accrual_rate_by_category_pct={"cosmetics": Decimal(percent)})


def test_settings_lifetime_none_means_non_expiring_and_zero_refused() -> None:
    assert ProgramSettings(accrual_lifetime_months=None).accrual_lifetime_months is None
    with pytest.raises(ValidationError):
        ProgramSettings(accrual_lifetime_months=0)


@pytest.mark.parametrize(
    "changes",
    [
        {"accrual_rounding": "half_up"},
        {"redemption_step": "10kop"},
        {"redemption_confirmation": "sms"},
        {"accrual_activation_delay_days": -1},
        {"verification_attempts_max": 0},
        {"sync_staleness_max_s": 10},
        {"version": 0},
        {"offline_redemption_max_kop": -1},
    ],
)
def test_settings_out_of_range_values_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ProgramSettings.model_validate(changes)


def test_settings_json_round_trip_as_synced_to_stores() -> None:
    s = ProgramSettings(
        version=7,
        accrual_rate_by_category_pct={"cosmetics": Decimal("7.5")},
        accrual_excluded_skus=frozenset({"SKU-1"}),
        redemption_excluded_categories=frozenset({"tobacco"}),
        accrual_rounding="rouble",
        redemption_step="rouble",
        accrual_lifetime_months=None,
        offline_redemption_max_kop=50_000,
    )
    assert ProgramSettings.model_validate_json(s.model_dump_json()) == s


def test_settings_json_numbers_accepted_for_percentages() -> None:
    s = ProgramSettings.model_validate_json('{"accrual_rate_other_pct": 1.5}')
    assert s.accrual_rate_other_pct == Decimal("1.5")


@pytest.mark.parametrize(
    ("percent", "basis_points"),
    [("1", 100), ("5", 500), ("1.5", 150), ("0.01", 1), ("0", 0), ("100", 10_000), ("50.00", 5000)],
)
def test_settings_percent_as_basis_points(percent: str, basis_points: int) -> None:
    assert pct_to_bp(Decimal(percent)) == basis_points


def test_settings_percent_with_three_decimals_has_no_basis_points() -> None:
    with pytest.raises(ValueError, match="two decimals"):
        pct_to_bp(Decimal("0.001"))


def test_settings_copy_with_new_rates_accrues_at_the_new_rates() -> None:
    # A settings reload (agent/reload.py) copies the old version with the changes: the basis
    # points computed for the old rates must not come along.
    old = ProgramSettings()
    assert old.rates_bp.other == 500
    new = old.model_copy(
        update={"accrual_rate_other_pct": Decimal(0), "redemption_share_max_pct": Decimal(30)}
    )
    assert (new.rates_bp.other, new.rates_bp.redemption_share) == (0, 3000)
    assert old.rates_bp.other == 500
