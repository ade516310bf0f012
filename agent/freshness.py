"""When the last complete sync happened, and whether it is fresh enough to redeem.

The age of the last sync comes from the boot-time monotonic clock when the machine has not
rebooted since; after a reboot it comes from the wall clock, guarded by the highest wall time
the agent has ever recorded, so a clock set back can only make data look older.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

#: Slack for the gap between the last recorded wall time and the moment the machine stopped.
REBOOT_SLACK_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class SyncMark:
    """The moment of the last complete sync by every clock the agent has."""

    central_at: datetime  # the central server's time at the write checkpoint
    wall_at: datetime  # this store's wall clock at that moment
    boot_id: str
    monotonic_s: float

    def to_json(self) -> dict[str, Any]:
        """As stored in the agent's meta table."""
        return {
            "central_at": self.central_at.isoformat(),
            "wall_at": self.wall_at.isoformat(),
            "boot_id": self.boot_id,
            "monotonic_s": self.monotonic_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncMark:
        """From the agent's meta table."""
        return cls(
            central_at=datetime.fromisoformat(data["central_at"]),
            wall_at=datetime.fromisoformat(data["wall_at"]),
            boot_id=str(data["boot_id"]),
            monotonic_s=float(data["monotonic_s"]),
        )


def sync_age_s(
    mark: SyncMark | None,
    *,
    boot_id: str,
    monotonic_s: float,
    wall_now: datetime,
    wall_high_water: datetime | None,
) -> float | None:
    """Seconds since the last complete sync, or ``None`` when it is unknown (never synced, or the
    clocks contradict each other) — which callers treat as stale."""
    if mark is None:
        return None
    if mark.boot_id == boot_id:
        age = monotonic_s - mark.monotonic_s
        return age if age >= 0 else None
    # Rebooted: only the wall clock is left. If it reads earlier than a time already seen, it was
    # set back, and nothing it says can be trusted to be fresh.
    # The time since the last recorded wall time is at least the time since boot, so a wall clock
    # behind that bound (with a minute's slack for the recording interval) was set back too.
    if wall_high_water is not None and wall_now < wall_high_water + timedelta(
        seconds=max(0.0, monotonic_s - REBOOT_SLACK_S)
    ):
        return None
    age = (wall_now - mark.wall_at).total_seconds()
    return age if age >= 0 else None


def is_fresh(age_s: float | None, max_age_s: float) -> bool:
    """Whether a sync of this age allows redemption."""
    return age_s is not None and age_s <= max_age_s
