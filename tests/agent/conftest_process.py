"""A real ``bonus-agent serve`` process for tests about processes (crash, restart).

Not a conftest that pytest loads by itself: tests import ``AgentProcess`` from here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from tests.phonekeys import write_key_file

#: Longest wait for a starting agent to answer ``/pos/v1/status``.
READY_TIMEOUT_S = 20.0
#: Longest wait for a signalled agent to exit.
EXIT_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.02
#: Starts tried before giving up (a port may be taken between choosing and binding it).
START_ATTEMPTS = 3
#: Inherited variables that would change how the child runs: our own settings and systemd's.
_SCRUBBED_PREFIXES = ("BONUS_AGENT_",)
_SCRUBBED_NAMES = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})


class AgentExited(RuntimeError):
    """The agent process ended while it was starting."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AgentProcess:
    """One ``bonus-agent serve`` child over a data directory; started again after each stop."""

    def __init__(self, work_dir: Path, *, log_level: str = "WARNING") -> None:
        self.work_dir = work_dir
        self.data_dir = work_dir / "data"
        self.messages_path = work_dir / "messages.jsonl"
        self.log_level = log_level
        self.port = 0
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        #: How the agent is started (a test may put an instrumented wrapper in its place).
        self.command = [sys.executable, "-m", "agent.cli", "serve"]

    @property
    def db_path(self) -> Path:
        """The agent's SQLite file."""
        return self.data_dir / "agent.sqlite3"

    @property
    def phone_key_file(self) -> Path:
        """The store's phone key file (a key of no chain: this agent never syncs)."""
        path = self.work_dir / "phone-key"
        if not path.exists():
            write_key_file(path)
        return path

    @property
    def base_url(self) -> str:
        """Where the running agent answers."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The running child's process id."""
        assert self._proc is not None, "the agent is running"
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        """The current run's stderr."""
        return self.work_dir / f"agent-{self.starts}.log"

    def _env(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(_SCRUBBED_PREFIXES) and name not in _SCRUBBED_NAMES
        }
        env.update(
            BONUS_AGENT_DATA_DIR=str(self.data_dir),
            BONUS_AGENT_LISTEN_HOST="127.0.0.1",
            BONUS_AGENT_LISTEN_PORT=str(self.port),
            BONUS_AGENT_PROVIDER__KIND="file",
            BONUS_AGENT_PROVIDER__FILE_PATH=str(self.messages_path),
            BONUS_AGENT_LOG_LEVEL=self.log_level,
            BONUS_AGENT_PHONE_KEY_FILE=str(self.phone_key_file),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> None:
        """Start the agent on a fresh port and wait until it answers."""
        for attempt in range(START_ATTEMPTS):
            try:
                self._start_once()
                return
            except AgentExited:
                # Another process may have taken the free port before the agent bound it.
                if attempt == START_ATTEMPTS - 1:
                    raise

    def _start_once(self) -> None:
        assert self._proc is None, "the previous run was stopped"
        self.starts += 1
        # A fresh port each run: the killed run's port may still be held by lingering sockets.
        self.port = free_port()
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            self.command,
            cwd=self.work_dir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        url = self.base_url + "/pos/v1/status"
        while True:
            if self._proc.poll() is not None:
                raise AgentExited(
                    f"agent exited with {self._proc.returncode} while starting:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"agent did not answer within {READY_TIMEOUT_S} s:\n{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def kill(self) -> int:
        """SIGKILL the agent (no cleanup of any kind runs) and reap it; returns its exit code."""
        return self._stop(signal.SIGKILL)

    def terminate(self) -> int:
        """SIGTERM the agent (a graceful stop) and reap it; returns its exit code."""
        return self._stop(signal.SIGTERM)

    def _stop(self, sig: signal.Signals) -> int:
        proc, self._proc = self._proc, None
        if proc is None:
            return 0
        try:
            if proc.poll() is None:
                proc.send_signal(sig)
            try:
                return proc.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=EXIT_TIMEOUT_S)
                raise
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``bonus-agent ARGS`` over this agent's data directory; its exit code and output."""
        return subprocess.run(
            self.cli_command(*args),
            cwd=self.work_dir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def cli_process(self, *args: str) -> subprocess.Popen[bytes]:
        """``bonus-agent ARGS`` started and left running (to be killed half-way)."""
        return subprocess.Popen(
            self.cli_command(*args),
            cwd=self.work_dir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @staticmethod
    def cli_command(*args: str) -> list[str]:
        """The command line of ``bonus-agent ARGS``."""
        return [sys.executable, "-m", "agent.cli", *args]

    def log_tail(self, lines: int = 40) -> str:
        """The end of the current run's output, for failure messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
