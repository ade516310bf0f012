"""Start the whole system on loopback: the central server on SQLite and one store agent.

Used by ``make run``.  State lives under ``var/`` in the checkout: ``var/central`` (the central
database), ``var/agent`` (the store's journal), ``var/store-token`` (the store's secret at the
central server, made on first start), ``var/phone-key`` (the chain's key of phone hashes, as a
store's installer gets it; outside the store's database) and ``var/messages.jsonl`` (confirmation codes written by
the demo's ``file`` message provider).  Ctrl-C stops both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
BIN = Path(sys.executable).parent
STORE_ID = "store-1"
CENTRAL_PORT = 8780
AGENT_PORT = 8765
START_TIMEOUT_S = 30.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault(
        "BONUS_CENTRAL_DATABASE_URL", f"sqlite+aiosqlite:///{VAR / 'central' / 'central.sqlite3'}"
    )
    env.setdefault("BONUS_CENTRAL_LISTEN_PORT", str(CENTRAL_PORT))
    return env


def _store_token(env: dict[str, str]) -> str:
    token_file = VAR / "store-token"
    if token_file.exists():
        return token_file.read_text(encoding="ascii").strip()
    central = str(BIN / "bonus-central")
    subprocess.run([central, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    token = subprocess.run(
        [central, "store", "add", STORE_ID, "--name", "Аптека №1 (демо)"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    token_file.write_text(token + "\n", encoding="ascii")
    token_file.chmod(0o600)
    return token


def _phone_key_file(env: dict[str, str]) -> Path:
    """The chain's phone key file, exported once as for a real store's installer."""
    key_file = VAR / "phone-key"
    if not key_file.exists():
        central = str(BIN / "bonus-central")
        subprocess.run([central, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(
            [central, "phone-key", "export", str(key_file)],
            env=env,
            check=True,
            stderr=subprocess.DEVNULL,
        )
    return key_file


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


def main() -> int:
    """Run central and agent until Ctrl-C."""
    (VAR / "central").mkdir(parents=True, exist_ok=True)
    env = _env()
    token = _store_token(env)
    phone_key_file = _phone_key_file(env)
    agent_env = dict(env)
    agent_env.update(
        {
            "BONUS_AGENT_STORE_ID": STORE_ID,
            "BONUS_AGENT_CENTRAL_URL": f"http://127.0.0.1:{env['BONUS_CENTRAL_LISTEN_PORT']}",
            "BONUS_AGENT_CENTRAL_TOKEN": token,
            "BONUS_AGENT_LISTEN_PORT": str(AGENT_PORT),
            "BONUS_AGENT_DATA_DIR": str(VAR / "agent"),
            "BONUS_AGENT_PHONE_KEY_FILE": str(phone_key_file),
            "BONUS_AGENT_PROVIDER__KIND": "file",
            "BONUS_AGENT_PROVIDER__FILE_PATH": str(VAR / "messages.jsonl"),
            # A short interval so that the demo shows a live sync; stores use the default.
            "BONUS_AGENT_SYNC_INTERVAL_S": env.get("BONUS_AGENT_SYNC_INTERVAL_S", "30"),
        }
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        central = subprocess.Popen([str(BIN / "bonus-central"), "serve"], env=env)
        processes.append(central)
        _wait_for(f"http://127.0.0.1:{env['BONUS_CENTRAL_LISTEN_PORT']}/health", central)
        agent = subprocess.Popen([str(BIN / "bonus-agent"), "serve"], env=agent_env)
        processes.append(agent)
        _wait_for(f"http://127.0.0.1:{AGENT_PORT}/pos/v1/status", agent)
        print(
            f"\nReady. Tills: http://127.0.0.1:{AGENT_PORT}/pos/v1 "
            f"(OpenAPI: http://127.0.0.1:{AGENT_PORT}/pos/v1/openapi.json)\n"
            f"Central server: http://127.0.0.1:{env['BONUS_CENTRAL_LISTEN_PORT']}  "
            f"Codes sent to customers: {VAR / 'messages.jsonl'}\n"
            "Status: .venv/bin/bonus-agent status   Stop: Ctrl-C\n",
            flush=True,
        )
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
