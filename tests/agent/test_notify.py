"""The sd_notify client against a real datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from service.notify import SystemdNotifier, watchdog_interval_s, watchdog_loop


@pytest.fixture
def manager_socket(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[socket.socket]:
    """A bound datagram socket playing systemd, named by NOTIFY_SOCKET."""
    # A fresh short directory rather than the per-test tmp_path: a socket path is limited to
    # 108 bytes, and tmp_path grows with the test's name.
    path = tmp_path_factory.mktemp("notify") / "s"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the socket, without blocking."""
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096, socket.MSG_DONTWAIT).decode())
        except BlockingIOError:
            return messages


def test_sends_each_state(manager_socket: socket.socket) -> None:
    with SystemdNotifier() as notifier:
        assert notifier.enabled
        notifier.ready()
        notifier.watchdog()
        notifier.status("syncing: 3 batches left")
        notifier.stopping()

    assert received(manager_socket) == [
        "READY=1",
        "WATCHDOG=1",
        "STATUS=syncing: 3 batches left",
        "STOPPING=1",
    ]


def test_status_stays_one_line(manager_socket: socket.socket) -> None:
    with SystemdNotifier() as notifier:
        notifier.status("central unreachable\nREADY=1")

    assert received(manager_socket) == ["STATUS=central unreachable READY=1"]


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"bonus-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        with SystemdNotifier() as notifier:
            notifier.ready()

        assert received(sock) == ["READY=1"]


def test_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with SystemdNotifier() as notifier:
        assert not notifier.enabled
        notifier.ready()
        notifier.watchdog()
        notifier.status("idle")
        notifier.stopping()
        assert not notifier.send("READY=1")


def test_relative_notify_socket_is_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/socket")
    with caplog.at_level(logging.WARNING), SystemdNotifier() as notifier:
        assert not notifier.enabled
        notifier.ready()

    assert "not a socket path" in caplog.text


def test_send_errors_are_logged_once_and_never_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING, logger="service.notify"), SystemdNotifier() as notifier:
        assert not notifier.send("READY=1")
        notifier.watchdog()
        notifier.watchdog()

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Cannot notify systemd (READY=1)" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "self"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(environ) == expected


def test_watchdog_interval_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_s() == 15.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval_s() is None


class ScriptedHealth:
    """A health check answering from a script; sets `done` once the script is used up."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.calls = 0
        self.done = asyncio.Event()

    async def __call__(self) -> bool:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if self.calls >= len(self.answers):
            self.done.set()
        return answer


async def run_until_set(
    event: asyncio.Event, notifier: SystemdNotifier, healthy: Callable[[], Awaitable[bool]]
) -> None:
    """Run the watchdog loop every 10 ms until `event` is set, then cancel it."""
    task = asyncio.create_task(watchdog_loop(notifier, 0.01, healthy))
    async with asyncio.timeout(5):
        await event.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_watchdog_loop_stops_pinging_when_unhealthy(manager_socket: socket.socket) -> None:
    health = ScriptedHealth([True, True, True, False, False, False])
    with SystemdNotifier() as notifier:
        await run_until_set(health.done, notifier, health)

    assert received(manager_socket) == ["WATCHDOG=1"] * 3


async def test_watchdog_loop_resumes_when_healthy_again(
    manager_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    health = ScriptedHealth([True, False, False, True])
    with caplog.at_level(logging.INFO, logger="service.notify"), SystemdNotifier() as notifier:
        await run_until_set(health.done, notifier, health)

    assert received(manager_socket) == ["WATCHDOG=1"] * 2
    # The change to unhealthy is logged once, not on every skipped ping.
    assert caplog.text.count("withholding watchdog pings") == 1
    assert "pings resumed" in caplog.text


async def test_watchdog_loop_treats_a_failing_check_as_unhealthy(
    manager_socket: socket.socket,
) -> None:
    third_call = asyncio.Event()
    calls = 0

    async def broken() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            third_call.set()
        raise OSError("database is locked")

    with SystemdNotifier() as notifier:
        await run_until_set(third_call, notifier, broken)

    assert received(manager_socket) == []


async def test_watchdog_loop_treats_a_hanging_check_as_unhealthy(
    manager_socket: socket.socket,
) -> None:
    second_start = asyncio.Event()
    starts = 0

    async def wedged() -> bool:
        nonlocal starts
        starts += 1
        if starts == 2:
            # A second start means the first check was abandoned at its deadline.
            second_start.set()
        await asyncio.Event().wait()  # never answers
        return True

    with SystemdNotifier() as notifier:
        await run_until_set(second_start, notifier, wedged)

    assert received(manager_socket) == []
