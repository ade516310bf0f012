"""A till or a store that hangs up in the middle of its request (a reset, a closed socket) is
one INFO line in the server's log, not an ERROR with a traceback: nothing failed on our side."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path

import pytest

from shared.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION, STORE_HEADER
from tests.e2e.processes import ServerProcess
from tests.e2e.system import System

pytestmark = pytest.mark.slow

LOG_WAIT_S = 15.0


def _hang_up(port: int, head: str, *, reset: bool) -> None:
    """Send the head of a POST promising a body, part of the body, then go away."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode() + b'{"card": "99')
        time.sleep(0.2)  # the server is reading the body now
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _gone_line(process: ServerProcess, path: str) -> str:
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        for line in process.log_path.read_text(encoding="utf-8").splitlines():
            if "went away" in line and path in line:
                return line
        assert time.monotonic() < deadline, process.log_tail()
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "closed"])
async def test_a_client_that_went_away_is_one_info_line(tmp_path: Path, reset: bool) -> None:
    system = System(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite3'}")
    try:
        await system.prepare(["s1"])
        await system.central.start()
        agent = system.agent("s1")
        await system.start_agents("s1")
        till_head = (
            "POST /pos/v1/receipts/calculate HTTP/1.1\r\nHost: agent\r\n"
            "X-Register-Id: till-1\r\nContent-Type: application/json\r\n"
            "Content-Length: 4000\r\n\r\n"
        )
        store_head = (
            "POST /sync/v1/upload HTTP/1.1\r\nHost: central\r\n"
            f"Authorization: Bearer {system.tokens['s1']}\r\n{STORE_HEADER}: s1\r\n"
            f"{PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\nContent-Type: application/json\r\n"
            "Content-Length: 4000\r\n\r\n"
        )
        await asyncio.to_thread(_hang_up, agent.port, till_head, reset=reset)
        await asyncio.to_thread(_hang_up, system.central.port, store_head, reset=reset)

        for process, path in [
            (agent, "/pos/v1/receipts/calculate"),
            (system.central, "/sync/v1/upload"),
        ]:
            line = await _gone_line(process, path)
            assert " INFO " in line, line
            assert "ConnectionResetError" in line, line
            logged = process.log_path.read_text(encoding="utf-8")
            assert "unexpected failure" not in logged, logged
            assert "Traceback" not in logged, logged
            assert " ERROR " not in logged, logged
        # Both go on serving.
        assert (await system.till("s1").status())["store_id"] == "s1"
    except BaseException:
        print(system.logs())
        raise
    finally:
        await system.close()
