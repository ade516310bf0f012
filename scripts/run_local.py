"""Start the whole system on loopback: the central server on SQLite and one store agent.

Used by ``make run``.  State lives under ``var/`` in the checkout (``--var``): ``var/central``
(the central database), ``var/agent`` (the store's journal), ``var/store-token`` (the store's
secret at the central server, made on first start), ``var/phone-key`` (the chain's key of phone
hashes, as a store's installer gets it; outside the store's database) and ``var/messages.jsonl``
(confirmation codes written by the demo's ``file`` message provider).

While it runs it reads commands on standard input: ``c`` + Enter stops the central server, or
starts it again, while the agent goes on serving its tills offline (and syncs what they did once
the server is back); ``q`` + Enter, or Ctrl-C, stops both.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STORE_ID = "store-1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
#: The demo's limit of the one-hour rule (program setting ``sync_staleness_max_s``): two minutes
#: offline, and redemption is refused; stores use the default, an hour.
DEMO_STALENESS_S = 120
#: Agent settings that make the demo's sync visible within seconds (stores use the defaults).
DEMO_AGENT_SETTINGS = {
    "BONUS_AGENT_SYNC_INTERVAL_S": "15",
    "BONUS_AGENT_SYNC_JITTER_S": "5",
    "BONUS_AGENT_SYNC_BACKOFF_MAX_S": "10",
}
HELP = "Commands: c + Enter stops or starts the central server, q + Enter (or Ctrl-C) quits."


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent-port", type=int, default=8765, help="the till API's port")
    parser.add_argument("--central-port", type=int, default=8780, help="the central server's")
    parser.add_argument("--var", type=Path, default=ROOT / "var", help="where the state lives")
    return parser.parse_args(argv)


def _central(env: dict[str, str], *args: str, quiet: bool = False) -> str:
    done = subprocess.run(
        [str(BIN / "bonus-central"), *args],
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
    )
    return done.stdout.strip()


def _prepare(env: dict[str, str], var: Path) -> tuple[str, Path]:
    """The database brought up to date; on first start the store, its token and the key file."""
    print(_central(env, "migrate"), flush=True)
    token_file = var / "store-token"
    if not token_file.exists():
        token = _central(env, "store", "add", STORE_ID, "--name", "Аптека №1 (демо)")
        _central(env, "settings", "set", f"sync_staleness_max_s={DEMO_STALENESS_S}")
        token_file.write_text(token + "\n", encoding="ascii")
        token_file.chmod(0o600)
    key_file = var / "phone-key"
    if not key_file.exists():
        _central(env, "phone-key", "export", str(key_file), quiet=True)
    return token_file.read_text(encoding="ascii").strip(), key_file


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {START_TIMEOUT_S:.0f} s")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _read_commands(commands: queue.Queue[str]) -> None:
    for line in sys.stdin:
        commands.put(line.strip().lower())


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Demo:
    """The two services; the central server may be stopped and started again."""

    def __init__(self, args: argparse.Namespace) -> None:
        var = args.var.absolute()
        self.var = var
        self.central_url = f"http://127.0.0.1:{args.central_port}"
        self.agent_port = args.agent_port
        self.env = dict(os.environ)
        self.env.setdefault(
            "BONUS_CENTRAL_DATABASE_URL",
            f"sqlite+aiosqlite:///{var / 'central' / 'central.sqlite3'}",
        )
        self.env["BONUS_CENTRAL_LISTEN_PORT"] = str(args.central_port)
        self.central: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None

    def agent_env(self, token: str, key_file: Path) -> dict[str, str]:
        env = {**DEMO_AGENT_SETTINGS, **self.env}
        env.update(
            {
                "BONUS_AGENT_STORE_ID": STORE_ID,
                "BONUS_AGENT_CENTRAL_URL": self.central_url,
                "BONUS_AGENT_CENTRAL_TOKEN": token,
                "BONUS_AGENT_LISTEN_PORT": str(self.agent_port),
                "BONUS_AGENT_DATA_DIR": str(self.var / "agent"),
                "BONUS_AGENT_PHONE_KEY_FILE": str(key_file),
                "BONUS_AGENT_PROVIDER__KIND": "file",
                "BONUS_AGENT_PROVIDER__FILE_PATH": str(self.var / "messages.jsonl"),
            }
        )
        return env

    def round_s(self) -> int:
        """The longest time between two of the agent's sync rounds, or retries."""
        settings = {**DEMO_AGENT_SETTINGS, **self.env}
        interval = float(settings["BONUS_AGENT_SYNC_INTERVAL_S"])
        jitter = float(settings["BONUS_AGENT_SYNC_JITTER_S"])
        backoff = float(settings["BONUS_AGENT_SYNC_BACKOFF_MAX_S"])
        return round(max(interval + jitter, backoff + 2))

    def start_central(self) -> None:
        self.central = subprocess.Popen([str(BIN / "bonus-central"), "serve"], env=self.env)
        _wait_for(f"{self.central_url}/health", self.central)

    def toggle_central(self) -> None:
        if self.central is not None and self.central.poll() is None:
            _stop(self.central)
            self.central = None
            print(
                "\nCentral server stopped: the agent and its tills go on offline "
                f"(redemption is refused after {DEMO_STALENESS_S} s without a sync). "
                "c + Enter starts it again.\n",
                flush=True,
            )
            return
        self.start_central()
        print(
            f"\nCentral server started again at {self.central_url}: the agent syncs at its "
            f"next round (within {self.round_s()} s).\n",
            flush=True,
        )

    def run(self) -> int:
        (self.var / "central").mkdir(parents=True, exist_ok=True)
        token, key_file = _prepare(self.env, self.var)
        self.start_central()
        self.agent = subprocess.Popen(
            [str(BIN / "bonus-agent"), "serve"], env=self.agent_env(token, key_file)
        )
        tills = f"http://127.0.0.1:{self.agent_port}/pos/v1"
        _wait_for(f"{tills}/status", self.agent)
        status = ".venv/bin/bonus-agent status"
        if self.agent_port != 8765:
            status = f"BONUS_AGENT_LISTEN_PORT={self.agent_port} {status}"
        print(
            f"\nReady. Tills: {tills} (OpenAPI: {tills}/openapi.json)\n"
            f"Central server: {self.central_url}  "
            f"Codes sent to customers: {self.var / 'messages.jsonl'}\n"
            f"Status: {status}\n{HELP}\n",
            flush=True,
        )
        commands: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_commands, args=(commands,), daemon=True).start()
        while self.agent.poll() is None:
            if self.central is not None and self.central.poll() is not None:
                print(
                    f"\nThe central server exited ({self.central.returncode}); c + Enter "
                    "starts it again.\n",
                    flush=True,
                )
                self.central = None
            try:
                command = commands.get(timeout=0.5)
            except queue.Empty:
                continue
            if command == "q":
                return 0
            if command == "c":
                self.toggle_central()
            elif command:
                print(HELP, flush=True)
        print(f"The agent exited ({self.agent.returncode})", file=sys.stderr)
        return 1

    def stop(self) -> None:
        _stop(self.agent)
        _stop(self.central)


def main(argv: list[str] | None = None) -> int:
    """Run central and agent until ``q`` or Ctrl-C."""
    demo = Demo(_arguments(argv))
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return demo.run()
    except KeyboardInterrupt:
        return 0
    finally:
        demo.stop()


if __name__ == "__main__":
    sys.exit(main())
