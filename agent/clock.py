"""Time as the agent sees it: the wall clock, a boot-time monotonic clock, and the boot id.

Staleness is measured with the monotonic clock while the machine has not rebooted, so moving
the wall clock cannot make stale data look fresh.  Tests substitute their own ``Clock``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def _read_boot_id() -> str:
    try:
        return _BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except OSError:
        # Without a boot id every restart counts as a reboot, which only ever makes data staler.
        return f"unknown-{uuid.uuid4()}"


class Clock:
    """The real clocks."""

    def __init__(self) -> None:
        self.boot_id = _read_boot_id()

    def now(self) -> datetime:
        """The wall clock, time-zone aware (UTC)."""
        return datetime.now(UTC)

    def monotonic_s(self) -> float:
        """Seconds since boot, suspend included; never goes back within one boot."""
        return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class FakeClock(Clock):
    """A clock for tests: the wall clock and the monotonic clock move only when told."""

    wall: datetime = field(default_factory=lambda: datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    mono_s: float = 1000.0
    boot_id: str = "boot-1"

    def now(self) -> datetime:
        return self.wall

    def monotonic_s(self) -> float:
        return self.mono_s

    def advance(self, seconds: float) -> None:
        """Real time passes: both clocks move."""
        self.wall += timedelta(seconds=seconds)
        self.mono_s += seconds

    def set_wall(self, wall: datetime) -> None:
        """Someone sets the store's clock; the monotonic clock does not move."""
        self.wall = wall

    def reboot(self, boot_id: str) -> None:
        """The machine restarts: a new boot id and a monotonic clock from zero."""
        self.boot_id = boot_id
        self.mono_s = 0.0
