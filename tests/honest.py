"""Operations as an honest store records them, for tests that feed the central server directly.

The central server books what it derives from an operation's inputs, never what a store claims.
A test that wants a sale to accrue X and redeem Y therefore sends a receipt the rules turn into
exactly X and Y, with the store's figures equal to the derived ones.  That needs a program where
points may pay a whole line: the test programs below (installed by ``install_test_programs``)
allow it, and differ in how long purchase accruals live.  A one-line receipt of
``Y + 20·X`` kopecks at 5 % then redeems Y and accrues X on the rest.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection

from central.program import set_settings
from shared.effects import accrual_days
from shared.journal import Sale, SaleLine
from shared.lots import add_months
from shared.settings import ProgramSettings

#: Purchase accruals never expire.
NON_EXPIRING: Final = 2
#: Purchase accruals live six months (the program's default lifetime).
SIX_MONTHS: Final = 3
#: Purchase accruals live ten years: expiring, but not within any test's dates.
TEN_YEARS: Final = 4

_WHOLE_LINE: Final[dict[str, Any]] = {"redemption_share_max_pct": "100"}
TEST_PROGRAMS: Final[dict[int, dict[str, Any]]] = {
    NON_EXPIRING: {**_WHOLE_LINE, "accrual_lifetime_months": None},
    SIX_MONTHS: {**_WHOLE_LINE, "accrual_lifetime_months": 6},
    TEN_YEARS: {**_WHOLE_LINE, "accrual_lifetime_months": 120},
}


def program(version: int) -> ProgramSettings:
    """The settings of a test program."""
    return ProgramSettings.model_validate({**TEST_PROGRAMS[version], "version": version})


async def install_test_programs(conn: AsyncConnection, now: datetime) -> None:
    """Issue the test programs as settings versions 2, 3 and 4 (the last one is in force)."""
    for version in sorted(TEST_PROGRAMS):
        issued = await set_settings(conn, TEST_PROGRAMS[version], now, by="tests")
        assert issued.version == version, "the test programs go into a fresh database"


def honest_sale(
    card: str,
    receipt_id: str,
    *,
    day: date,
    accrued_kop: int = 0,
    redeemed_kop: int = 0,
    version: int = SIX_MONTHS,
    cashier: str | None = None,
) -> Sale:
    """A one-line sale that accrues and redeems exactly these kopecks under a test program."""
    expires_on, active_from = accrual_days(day, program(version))
    return Sale(
        card=card,
        receipt_id=receipt_id,
        day=day,
        lines=(
            SaleLine(
                line_id="1",
                sku="SKU-1",
                qty=Decimal(1),
                amount_kop=redeemed_kop + 20 * accrued_kop,
                vital=False,
                accrued_kop=accrued_kop,
                redeemed_kop=redeemed_kop,
            ),
        ),
        redeem_kop=redeemed_kop,
        cashier=cashier,
        settings_version=version,
        accrual_expires_on=expires_on,
        accrual_active_from=active_from,
    )


def day_expiring_on(last_day: date) -> date:
    """The day of a sale whose six-month accrual has this last day."""
    day = add_months(last_day, -6)
    assert add_months(day, 6) == last_day, f"no six-month accrual ends on {last_day}"
    return day
