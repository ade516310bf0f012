"""``bonus-agent``: run the store agent, show its status, check a configuration."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

from aiohttp import web

from agent.app import create_app
from agent.config import AgentConfig, ConfigError, load_config
from agent.logs import setup_logging
from agent.notify import SystemdNotifier, watchdog_interval_s, watchdog_loop
from agent.routes import CTX_KEY

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


async def serve(config: AgentConfig, config_path: Path | None) -> None:
    """Run until SIGTERM or SIGINT, telling systemd when ready and while healthy."""
    app = create_app(config, config_path=config_path)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True)
    await site.start()
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
        print(f"agent at {url} does not answer: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(body, ensure_ascii=False, indent=2))
    else:
        refusal = body.get("redemption_refusal") or {}
        lines = [
            f"store:              {body['store_id']} (agent {body['version']})",
            f"central server:     {'connected' if body['online'] else 'not connected'}",
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bonus-agent``."""
    parser = argparse.ArgumentParser(prog="bonus-agent", description="Pharmacy bonus store agent")
    parser.add_argument("--config", help="TOML configuration file (or BONUS_AGENT_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the tills")
    status_parser = commands.add_parser("status", help="show the running agent's sync state")
    status_parser.add_argument("--json", action="store_true", help="print the raw JSON")
    commands.add_parser("check-config", help="validate the configuration and print it")
    args = parser.parse_args(argv)
    try:
        config, config_path = _config(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "serve":
        setup_logging(config.log_level, as_json=config.log_json)
        asyncio.run(serve(config, config_path))
        return 0
    if args.command == "status":
        return status(config, args.json)
    print(config.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
