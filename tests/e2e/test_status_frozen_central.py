"""``bonus-agent status`` says "connected" only while the last request to the central server
succeeded: a central server that freezes (SIGSTOP: connections are accepted, nothing answers)
makes the very next timed-out authorisation show "unreachable", with the reason and its time."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.system import System

pytestmark = pytest.mark.slow

PHONE = "9165550123"
#: Longest wait for the store to reconnect once the central server runs again.
RECONNECT_WAIT_S = 40.0


async def test_status_shows_unreachable_as_soon_as_an_authorisation_times_out(
    tmp_path: Path,
) -> None:
    system = System(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite3'}")
    frozen = False
    try:
        await system.prepare(["s1"], redemption_confirmation="none")
        await system.central.start()
        agent = system.agent("s1")  # online_authorization_timeout_s: 1.5 (the default)
        await system.start_agents("s1")
        till = system.till("s1")
        card = await till.register(PHONE)
        await till.sold(card, "2000")  # +100.00
        await system.settle("s1")
        await till.sold(card, "200", redeem="10")  # authorised online
        before = await till.status()
        assert before["online"], before
        assert before["last_central_error"] is None, before

        assert system.central.pid is not None
        os.kill(system.central.pid, signal.SIGSTOP)
        frozen = True
        # The sale waits 1.5 s for the frozen server, then redeems under the offline rules.
        sold = await till.sold(card, "200", redeem="10")
        assert sold["redeemed"] == 10, sold
        status = await till.status()
        assert not status["online"], status
        assert status["last_central_error"] == (
            "authorisation failed: TimeoutError: no answer within 1.5 s"
        ), status
        failed_at = datetime.fromisoformat(status["last_central_error_at"])
        assert failed_at > datetime.fromisoformat(before["last_sync_at"]), status
        shown = await agent.cli("status")
        assert (
            "central server:     unreachable (last error at "
            f"{status['last_central_error_at']}: authorisation failed: TimeoutError: no answer "
            "within 1.5 s)"
        ) in shown.stdout, shown.stdout

        os.kill(system.central.pid, signal.SIGCONT)
        frozen = False
        deadline = time.monotonic() + RECONNECT_WAIT_S
        while not (status := await till.status())["online"]:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        # Connected again; the last error stays shown, with its time.
        assert status["last_central_error_at"] is not None, status
        shown = await agent.cli("status")
        assert "central server:     connected (last error at " in shown.stdout, shown.stdout
    except BaseException:
        print(system.logs())
        raise
    finally:
        if frozen and system.central.pid is not None:
            os.kill(system.central.pid, signal.SIGCONT)
        await system.close()
