"""Real ``bonus-central serve`` and ``bonus-agent serve`` processes for the end-to-end tests.

Each process gets its own port (kept across restarts, so agents keep finding the central server),
its environment and a log file per run.  Waiting is asynchronous, so a test's own servers (a
proxy, an in-process agent) keep running while a process starts or stops.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import aiohttp

from tests.phonekeys import TEST_CENTRAL_ENV

#: Longest wait for a starting process to answer.
READY_TIMEOUT_S = 30.0
#: Longest wait for a signalled process to exit.
EXIT_TIMEOUT_S = 15.0
_POLL_S = 0.05
#: Inherited variables that would change how a child runs: our own settings and systemd's.
_SCRUBBED_PREFIXES = ("BONUS_AGENT_", "BONUS_CENTRAL_")
_SCRUBBED_NAMES = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})

#: Agents sync often in these tests: every 5 s (the shortest allowed), retries capped at 2 s.
AGENT_SYNC_ENV = {
    "BONUS_AGENT_SYNC_INTERVAL_S": "5",
    "BONUS_AGENT_SYNC_JITTER_S": "0",
    "BONUS_AGENT_SYNC_BACKOFF_MAX_S": "2",
    "BONUS_AGENT_CENTRAL_TIMEOUT_S": "5",
}


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _base_env() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_SCRUBBED_PREFIXES) and name not in _SCRUBBED_NAMES
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServerProcess:
    """One server child: started, waited for, stopped or killed, started again."""

    #: The path that answers 200 once the server is ready.
    ready_path = "/"
    module = ""

    def __init__(self, name: str, work_dir: Path) -> None:
        self.name = name
        self.work_dir = work_dir
        self.port = free_port()
        self.starts = 0
        #: ``https`` for a server that serves TLS itself; its readiness is then checked with
        #: ``client_ssl`` (a context trusting the test's CA).
        self.scheme = "http"
        self.client_ssl: ssl.SSLContext | bool = True
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        work_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """Where the server answers."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the child runs."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        """The current run's output."""
        return self.work_dir / f"{self.name}-{self.starts}.log"

    def env(self) -> dict[str, str]:
        """The child's environment."""
        raise NotImplementedError

    async def start(self) -> None:
        """Start the server and wait until it answers."""
        self.spawn()
        await self.wait_ready()

    def spawn(self) -> None:
        """Start the child without waiting (several can then start side by side)."""
        assert self._proc is None, f"{self.name} was stopped before starting again"
        self.starts += 1
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "serve"],
            cwd=self.work_dir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self) -> None:
        """Wait until the server answers its readiness path."""
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if proc.poll() is not None:
                    await self._reap()
                    raise RuntimeError(
                        f"{self.name} exited with {proc.returncode} while starting:\n"
                        + self.log_tail()
                    )
                try:
                    async with session.get(
                        self.url + self.ready_path, ssl=self.client_ssl
                    ) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    await self.kill()
                    raise TimeoutError(f"{self.name} did not answer:\n{self.log_tail()}")
                await asyncio.sleep(_POLL_S)

    async def stop(self) -> int:
        """SIGTERM (a graceful stop); returns the exit code."""
        return await self._signal(signal.SIGTERM)

    async def kill(self) -> int:
        """SIGKILL (no cleanup runs); returns the exit code."""
        return await self._signal(signal.SIGKILL)

    async def restart(self) -> None:
        """Stop gracefully and start again with the same data and port."""
        await self.stop()
        await self.start()

    async def _signal(self, sig: signal.Signals) -> int:
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            await asyncio.to_thread(proc.wait, EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
        return await self._reap()

    async def _reap(self) -> int:
        proc, self._proc = self._proc, None
        code = 0
        if proc is not None:
            code = await asyncio.to_thread(proc.wait, EXIT_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill_now(self) -> None:
        """SIGKILL and reap without an event loop (the last resort of a fixture's cleanup)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(EXIT_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the program's command ``ARGS`` with this server's settings (its database); its
        exit code and output."""
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", self.module, *args],
            cwd=self.work_dir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def log_tail(self, lines: int = 60) -> str:
        """The end of the current run's output, for failure messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class CentralProcess(ServerProcess):
    """``bonus-central serve`` over a database URL."""

    ready_path = "/health"
    module = "central.cli"

    def __init__(
        self, work_dir: Path, database_url: str, settings: dict[str, str] | None = None
    ) -> None:
        super().__init__("central", work_dir)
        self.database_url = database_url
        #: More ``BONUS_CENTRAL_*`` settings.
        self.settings = dict(settings or {})

    def env(self) -> dict[str, str]:
        env = _base_env()
        env.update(
            BONUS_CENTRAL_DATABASE_URL=self.database_url,
            BONUS_CENTRAL_LISTEN_HOST="127.0.0.1",
            BONUS_CENTRAL_LISTEN_PORT=str(self.port),
            BONUS_CENTRAL_LOG_LEVEL="INFO",
            **TEST_CENTRAL_ENV,
        )
        env.update(
            {f"BONUS_CENTRAL_{name.upper()}": value for name, value in self.settings.items()}
        )
        return env

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._proc.pid if self._proc is not None else None


class AgentProcess(ServerProcess):
    """``bonus-agent serve`` for one store, syncing with a central server."""

    ready_path = "/pos/v1/status"
    module = "agent.cli"

    def __init__(
        self,
        work_dir: Path,
        store_id: str,
        central_url: str,
        token: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"agent-{store_id}", work_dir)
        self.store_id = store_id
        self.central_url = central_url
        self.token = token
        self.data_dir = work_dir / "data"
        self.messages_path = work_dir / "messages.jsonl"
        self.extra_env = dict(extra_env or {})

    @property
    def db_path(self) -> Path:
        """The store's journal database."""
        return self.data_dir / "agent.sqlite3"

    def env(self) -> dict[str, str]:
        env = _base_env()
        env.update(
            BONUS_AGENT_STORE_ID=self.store_id,
            BONUS_AGENT_CENTRAL_URL=self.central_url,
            BONUS_AGENT_CENTRAL_TOKEN=self.token,
            BONUS_AGENT_DATA_DIR=str(self.data_dir),
            BONUS_AGENT_LISTEN_HOST="127.0.0.1",
            BONUS_AGENT_LISTEN_PORT=str(self.port),
            BONUS_AGENT_PROVIDER__KIND="file",
            BONUS_AGENT_PROVIDER__FILE_PATH=str(self.messages_path),
            BONUS_AGENT_LOG_LEVEL="INFO",
            **AGENT_SYNC_ENV,
        )
        env.update(self.extra_env)
        return env
