"""``make run``'s script, as someone trying it uses it: the central server stopped with ``c``, a
till still sells at the agent, the server started again with ``c``, the sale reaches it, ``q``
stops everything (real processes)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest_process import free_port
from tests.phonekeys import TEST_CENTRAL_ENV

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: Safety nets only: each wait ends as soon as what it waits for happens.
LINE_TIMEOUT_S = 60.0
SYNC_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 30.0


class Demo:
    """``scripts/run_local.py`` with its standard input and output in the test's hands."""

    def __init__(self, var: Path) -> None:
        self.agent_port, self.central_port = free_port(), free_port()
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("BONUS_") and name != "NOTIFY_SOCKET"
        }
        env.update(TEST_CENTRAL_ENV)
        # Rounds every 5 s and retries a second or two apart, rather than the demo's 15 and 10 s.
        env.update(
            BONUS_AGENT_SYNC_INTERVAL_S="5",
            BONUS_AGENT_SYNC_JITTER_S="0",
            BONUS_AGENT_SYNC_BACKOFF_MAX_S="2",
        )
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "scripts" / "run_local.py"),
                f"--agent-port={self.agent_port}",
                f"--central-port={self.central_port}",
                f"--var={var}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=var.parent,
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def wait_for(self, text: str) -> None:
        """Read the output until a line containing ``text``."""
        deadline = time.monotonic() + LINE_TIMEOUT_S
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} in:\n{''.join(self.output)}") from None
            self.output.append(line)
            if text in line:
                return

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def till(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.agent_port}/pos/v1{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"X-Register-Id": "till-1", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as refused:
            return refused.code, json.load(refused)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path / "var")
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.terminate()
            running.process.wait(timeout=EXIT_TIMEOUT_S)
        running.reader.join(timeout=EXIT_TIMEOUT_S)  # the output's end, once it has exited
        for pipe in (running.process.stdin, running.process.stdout):
            if pipe is not None:
                pipe.close()


def sale(demo: Demo, card: str, receipt_id: str) -> tuple[int, Any]:
    line = {"line_id": "1", "sku": "A1", "qty": 1, "price": 500, "amount": 500, "vital": False}
    return demo.till("POST", "/receipts", {"receipt_id": receipt_id, "card": card, "lines": [line]})


def test_a_till_sells_while_the_central_server_is_stopped(demo: Demo) -> None:
    demo.wait_for("Ready.")
    status, registered = demo.till(
        "POST", "/customers", {"phone": "+7 916 123-45-67", "consents": {"personal_data": True}}
    )
    assert status == 201, registered
    card = registered["card"]["number"]

    demo.send("c")
    demo.wait_for("Central server stopped")
    status, sold = sale(demo, card, "R-offline-1")
    assert status == 200, sold
    assert sold["accrued"] == 25
    status, state = demo.till("GET", "/status")
    assert state["pending_ops"] >= 1

    demo.send("c")
    demo.wait_for("Central server started again")
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while state["pending_ops"] or not state["online"]:
        assert time.monotonic() < deadline, f"the sale was not synced: {state}"
        time.sleep(0.2)
        status, state = demo.till("GET", "/status")

    demo.send("q")
    assert demo.process.wait(timeout=EXIT_TIMEOUT_S) == 0
    with pytest.raises(urllib.error.URLError):
        demo.till("GET", "/status")
