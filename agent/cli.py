"""``bonus-agent``: run the store agent, show its status, check a configuration, back up and
restore its database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sqlite3
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.app import create_app
from agent.backup import BackupError, ServiceRunning, backup, restore, service_lock
from agent.config import AgentConfig, load_config
from agent.routes import CTX_KEY
from service.config import ConfigError
from service.failures import describe
from service.logs import setup_logging
from service.notify import SystemdNotifier, watchdog_interval_s, watchdog_loop
from service.version import package_version
from service.web import listen

log = logging.getLogger("agent")

#: How long a thread holding the GIL may run before a waiting one gets it (default 5 ms).
SWITCH_INTERVAL_S = 0.0005


def _config(args: argparse.Namespace) -> tuple[AgentConfig, Path | None]:
    path = args.config or os.environ.get("BONUS_AGENT_CONFIG")
    config_path = Path(path) if path else None
    return load_config(config_path), config_path


def tune_for_latency() -> None:
    """Interpreter settings for a till's short requests.

    The journal's writer thread runs each operation's Python holding the GIL; a request waiting
    on the event loop gets it back after the switch interval, 5 ms by default, which would be
    most of a sale's budget: 0.5 ms keeps that wait short at a negligible cost.  What start-up
    created lives as long as the process: frozen, the collector stops walking it again and
    again, which shortens the pauses of full collections.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()


async def serve(config: AgentConfig, config_path: Path | None) -> int:
    """Run until SIGTERM or SIGINT, telling systemd when ready and while healthy; 1 when the
    port cannot be had (nothing says "ready" then)."""
    app = create_app(config, config_path=config_path)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True)
    if not await listen(runner, site, config.listen_host, config.listen_port):
        return 1
    log.info(
        "store %s agent ready on %s:%s", config.store_id, config.listen_host, config.listen_port
    )
    tune_for_latency()
    notifier = SystemdNotifier()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def healthy() -> bool:
        # The journal answers a trivial query: the event loop and the database are alive.
        ctx = app[CTX_KEY]
        return ctx.db.reader.execute("SELECT 1").fetchone() is not None

    watchdog = None
    interval = watchdog_interval_s()
    if interval is not None:
        watchdog = asyncio.create_task(watchdog_loop(notifier, interval, healthy))
    notifier.ready()
    problem = app[CTX_KEY].phone_key_problem
    notifier.status(
        f"serving tills on {config.listen_host}:{config.listen_port}"
        + (f"; NO LOOKUP BY PHONE: {problem}" if problem else "")
    )
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        notifier.stopping()
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await runner.cleanup()
        notifier.close()
    return 0


def status(config: AgentConfig, as_json: bool) -> int:
    """Print the running agent's status; exit 1 when it does not answer, 2 when redemption is off,
    3 when cards cannot be found by phone."""
    url = f"http://{config.listen_host}:{config.listen_port}/pos/v1/status"
    if config.listen_host in ("0.0.0.0", "::"):
        url = f"http://127.0.0.1:{config.listen_port}/pos/v1/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        print(f"agent at {url} does not answer: {describe(exc, timeout_s=5)}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(body, ensure_ascii=False, indent=2))
    else:
        refusal = body.get("redemption_refusal") or {}
        lines = [
            f"store:              {body['store_id']} (agent {body['version']})",
            f"central server:     {_link(body)}",
            f"last complete sync: {body['last_sync_at'] or 'never'}"
            + (f" ({body['sync_age_s']:.0f} s ago)" if body["sync_age_s"] is not None else ""),
            f"pending operations: {body['pending_ops']}",
            "redemption:         "
            + (
                "allowed"
                if body["redemption_allowed"]
                else f"refused — {refusal.get('message', '')}"
            ),
            f"settings version:   {body['settings_version']}",
            f"cards in replica:   {body['cards']}",
            "lookup by phone:    "
            + (
                f"allowed (phone key {body['phone_key_id']})"
                if body["phone_lookup_allowed"]
                else f"refused — {(body.get('phone_lookup_refusal') or {}).get('message', '')}"
            ),
            f"message provider:   {body['provider']}"
            + (f" (last error: {body['provider_error']})" if body.get("provider_error") else ""),
        ]
        for key in ("phone_key_problem", "last_upload_error", "last_download_error"):
            if body.get(key):
                lines.append(f"{key.replace('_', ' ')}: {body[key]}")
        print("\n".join(lines))
    if not body["redemption_allowed"]:
        return 2
    return 0 if body["phone_lookup_allowed"] else 3


def _link(body: dict[str, Any]) -> str:
    """The central server's line of the status: connected only while the last request
    succeeded; the last failure and its time either way."""
    if body["online"]:
        state = "connected"
    else:
        state = "unreachable" if body.get("last_central_error") else "not connected"
    if body.get("last_central_error"):
        state += (
            f" (last error at {body.get('last_central_error_at')}: {body['last_central_error']})"
        )
    return state


def backup_command(config: AgentConfig, command: str, path: Path) -> int:
    """``backup PATH`` or ``restore PATH``; exit 1 when it could not be done (nothing changed)."""
    try:
        if command == "backup":
            summary = backup(config.db_path, path)
            print(f"backup of {config.db_path} written to {path}: {summary.describe()}")
            return 0
        summary, kept = restore(path, config.db_path)
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"{command} failed: {exc}", file=sys.stderr)
        return 1
    print(f"restored {path} into {config.db_path}: {summary.describe()}")
    if kept is not None:
        print(f"the database it replaced is kept as {kept}")
    print(
        "start the agent: on its first sync it renumbers what it has not sent after what the "
        "central server holds, and catches up (see systemd/README.md)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bonus-agent``."""
    parser = argparse.ArgumentParser(prog="bonus-agent", description="Pharmacy bonus store agent")
    parser.add_argument("--config", help="TOML configuration file (or BONUS_AGENT_CONFIG)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    # Also after the command, as the systemd unit writes it (``bonus-agent serve --config …``).
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", parents=[after], help="serve the tills")
    status_parser = commands.add_parser(
        "status", parents=[after], help="show the running agent's sync state"
    )
    status_parser.add_argument("--json", action="store_true", help="print the raw JSON")
    commands.add_parser(
        "check-config", parents=[after], help="validate the configuration and print it"
    )
    backup_parser = commands.add_parser(
        "backup",
        parents=[after],
        help="write a consistent copy of the database (also while the agent serves)",
    )
    backup_parser.add_argument("path", type=Path, help="the backup file to write")
    restore_parser = commands.add_parser(
        "restore",
        parents=[after],
        help="replace the database with a backup (the agent must be stopped)",
    )
    restore_parser.add_argument("path", type=Path, help="the backup file to restore")
    args = parser.parse_args(argv)
    try:
        config, config_path = _config(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "serve":
        setup_logging(config.log_level, as_json=config.log_json)
        try:
            # Held while serving: a restore refuses to replace the database under a running
            # agent, and a second agent refuses to serve the same journal.
            with service_lock(config.db_path):
                return asyncio.run(serve(config, config_path))
        except ServiceRunning as exc:
            log.error("%s", exc)
            return 1
    if args.command == "status":
        return status(config, args.json)
    if args.command in ("backup", "restore"):
        return backup_command(config, args.command, args.path)
    print(config.model_dump_json(indent=2))
    for warning in config.sync_warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
