"""The age of the last complete sync: monotonic within a boot, the guarded wall clock after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.app import create_app
from agent.clock import FakeClock
from agent.freshness import REBOOT_SLACK_S, SyncMark, is_fresh, sync_age_s
from agent.routes import CTX_KEY
from tests.agent.conftest import ClientFactory, make_config

SYNC_WALL = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MARK = SyncMark(
    central_at=SYNC_WALL - timedelta(seconds=2),
    wall_at=SYNC_WALL,
    boot_id="boot-1",
    monotonic_s=1000.0,
)
HOUR_S = 3600


def age(
    *,
    boot_id: str = "boot-1",
    monotonic_s: float = 1000.0,
    wall_now: datetime = SYNC_WALL,
    wall_high_water: datetime | None = SYNC_WALL,
    mark: SyncMark | None = MARK,
) -> float | None:
    return sync_age_s(
        mark,
        boot_id=boot_id,
        monotonic_s=monotonic_s,
        wall_now=wall_now,
        wall_high_water=wall_high_water,
    )


def test_never_synced_is_unknown() -> None:
    assert age(mark=None) is None
    assert not is_fresh(None, HOUR_S)


def test_same_boot_counts_with_the_monotonic_clock() -> None:
    assert age(monotonic_s=1000.0) == 0
    assert age(monotonic_s=1000.0 + 125.5, wall_now=SYNC_WALL + timedelta(seconds=125.5)) == 125.5


@pytest.mark.parametrize("jump_h", [-48, -5, -1, 1, 5, 48])
def test_same_boot_ignores_wall_clock_jumps(jump_h: int) -> None:
    for elapsed_s in (10.0, 3599.0, 3601.0, 7200.0):
        wall_now = SYNC_WALL + timedelta(seconds=elapsed_s) + timedelta(hours=jump_h)
        assert age(monotonic_s=1000.0 + elapsed_s, wall_now=wall_now) == elapsed_s


def test_a_stale_sync_stays_stale_when_the_wall_clock_is_set_back() -> None:
    stale = age(monotonic_s=1000.0 + 3601, wall_now=SYNC_WALL)
    assert stale == 3601
    assert not is_fresh(stale, HOUR_S)


@given(
    elapsed_s=st.floats(min_value=0, max_value=30 * 86400),
    jump_s=st.floats(min_value=-365 * 86400, max_value=365 * 86400),
)
def test_same_boot_age_is_the_monotonic_time_whatever_the_wall_says(
    elapsed_s: float, jump_s: float
) -> None:
    wall_now = SYNC_WALL + timedelta(seconds=elapsed_s + jump_s)
    monotonic_s = 1000.0 + elapsed_s
    assert age(monotonic_s=monotonic_s, wall_now=wall_now) == monotonic_s - 1000.0


def test_a_monotonic_clock_behind_the_mark_is_unknown() -> None:
    # Cannot happen within one boot; if it does, nothing it says is trusted.
    assert age(monotonic_s=999.0) is None


def test_after_a_reboot_the_wall_clock_counts() -> None:
    # The machine restarted 10 minutes after the sync and has been up 2 minutes.
    wall_now = SYNC_WALL + timedelta(minutes=12)
    result = age(
        boot_id="boot-2",
        monotonic_s=120.0,
        wall_now=wall_now,
        wall_high_water=SYNC_WALL + timedelta(minutes=10),
    )
    assert result == 12 * 60
    assert is_fresh(result, HOUR_S)
    # Long after the sync, by the wall clock: stale.
    wall_now = SYNC_WALL + timedelta(hours=2)
    result = age(boot_id="boot-2", monotonic_s=120.0, wall_now=wall_now)
    assert result == 2 * HOUR_S
    assert not is_fresh(result, HOUR_S)


def test_after_a_reboot_without_a_high_water_mark_the_wall_clock_counts() -> None:
    wall_now = SYNC_WALL + timedelta(minutes=5)
    assert age(boot_id="boot-2", monotonic_s=30.0, wall_now=wall_now, wall_high_water=None) == 300


def test_after_a_reboot_a_wall_clock_before_the_high_water_mark_is_stale() -> None:
    high_water = SYNC_WALL + timedelta(hours=3)
    # The clock reads 10 minutes after the sync, but the agent had already seen 3 hours after it.
    wall_now = SYNC_WALL + timedelta(minutes=10)
    assert (
        age(boot_id="boot-2", monotonic_s=5.0, wall_now=wall_now, wall_high_water=high_water)
        is None
    )


def test_after_a_reboot_the_wall_clock_must_be_past_high_water_plus_uptime() -> None:
    high_water = SYNC_WALL + timedelta(minutes=5)
    uptime_s = 1800.0
    # Up for 30 minutes: the wall clock must read at least high water + 30 min (− the slack).
    bound = high_water + timedelta(seconds=uptime_s - REBOOT_SLACK_S)
    behind = bound - timedelta(seconds=1)
    assert (
        age(boot_id="boot-2", monotonic_s=uptime_s, wall_now=behind, wall_high_water=high_water)
        is None
    )
    result = age(boot_id="boot-2", monotonic_s=uptime_s, wall_now=bound, wall_high_water=high_water)
    assert result == (bound - SYNC_WALL).total_seconds()


def test_after_a_reboot_a_wall_clock_before_the_sync_is_unknown() -> None:
    wall_now = SYNC_WALL - timedelta(minutes=1)
    assert age(boot_id="boot-2", monotonic_s=5.0, wall_now=wall_now, wall_high_water=None) is None


@pytest.mark.parametrize(
    ("age_s", "fresh"),
    [(None, False), (0.0, True), (3599.9, True), (3600.0, True), (3600.1, False)],
)
def test_is_fresh(age_s: float | None, fresh: bool) -> None:
    assert is_fresh(age_s, HOUR_S) is fresh


def test_a_sync_mark_survives_its_json_form() -> None:
    assert SyncMark.from_json(MARK.to_json()) == MARK


# --- through the agent: a restart after a reboot ------------------------------------------------


async def test_the_agent_after_a_reboot(tmp_path: Path, aiohttp_client: ClientFactory) -> None:
    clock = FakeClock()
    config = make_config(tmp_path)
    first = await aiohttp_client(create_app(config, clock=clock))
    await first.app[CTX_KEY].record_sync(clock.now())
    synced_at = clock.now()
    clock.advance(600)
    await first.close()
    clock.reboot("boot-2")
    clock.advance(60)

    second = await aiohttp_client(create_app(config, clock=clock))
    status = await (await second.get("/pos/v1/status")).json()
    # The monotonic clock restarted; the wall clock says 11 minutes since the sync.
    assert status["sync_age_s"] == 660
    assert status["redemption_allowed"] is True
    # The store's clock is set back after the reboot: behind what the agent has seen, so stale.
    clock.set_wall(synced_at + timedelta(seconds=60))
    status = await (await second.get("/pos/v1/status")).json()
    assert status["sync_age_s"] is None
    assert status["redemption_allowed"] is False
    assert status["redemption_refusal"]["code"] == "redemption_stale_sync"
