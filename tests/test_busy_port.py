"""A service whose port is taken says so and exits with an error, without claiming to be ready
(real processes; the port is held by a listening socket of the test)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.phonekeys import TEST_CENTRAL_ENV

#: Only a safety net: the process exits as soon as the bind fails.
EXIT_TIMEOUT_S = 60


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _env(prefix: str, settings: dict[str, str]) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("BONUS_") and name != "NOTIFY_SOCKET"
    }
    env.update({f"{prefix}{name.upper()}": value for name, value in settings.items()})
    return env


def _serve(module: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "serve"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
        check=False,
    )


def test_central_on_a_taken_port(tmp_path: Path, taken_port: int) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite3'}"
    env = _env("BONUS_CENTRAL_", {"database_url": url, "listen_port": str(taken_port)})
    env.update(TEST_CENTRAL_ENV)
    migrated = subprocess.run(
        [sys.executable, "-m", "central.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    done = _serve("central.cli", env, tmp_path)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{taken_port}" in output
    assert " ready on " not in output


def test_agent_on_a_taken_port(tmp_path: Path, taken_port: int) -> None:
    env = _env(
        "BONUS_AGENT_",
        {
            "listen_port": str(taken_port),
            "data_dir": str(tmp_path / "data"),
            "phone_key_file": str(tmp_path / "no-phone-key"),
            "provider__file_path": str(tmp_path / "messages.jsonl"),
        },
    )
    done = _serve("agent.cli", env, tmp_path)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{taken_port}" in output
    assert " ready on " not in output
