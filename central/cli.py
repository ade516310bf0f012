"""``bonus-central``: serve, migrate, stores, settings, expiry and the invariant check."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from central import stores
from central.app import create_app
from central.config import CentralConfig, load_config
from central.db import Database, migrate
from central.expiry import expire
from central.invariants import check_invariants
from central.phones import RehashProgress, count_stale, load_phone_key, rehash
from central.program import current_settings, set_settings
from central.schema_check import DatabaseRefused, masked_url, require_schema
from central.staff import Permission, StaffExists, add_staff, hash_password
from central.tls import server_ssl_context
from central.workers import supervise
from service.config import ConfigError
from service.logs import setup_logging
from service.notify import SystemdNotifier
from service.phonekey import PhoneHasher
from service.version import package_version
from service.web import listen
from shared.lots import local_date

log = logging.getLogger("central")


def _sqlite_dir(config: CentralConfig) -> None:
    prefix = "sqlite+aiosqlite:///"
    if config.database_url.startswith(prefix):
        Path(config.database_url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


async def _with_db(config: CentralConfig, work: Callable[[Database], Awaitable[int]]) -> int:
    """Run ``work`` on a database that has the schema (``DatabaseRefused`` otherwise), brought to
    this release's revision first."""
    await require_schema(config.database_url)
    db = Database(config.database_url)
    try:
        await migrate(db.engine)
        return await work(db)
    finally:
        await db.close()


async def serve(config: CentralConfig, worker: int | None = None) -> int:
    """Run until SIGTERM or SIGINT: the server, or worker ``worker`` of several (``workers``).

    Returns the exit code: 1 when the port cannot be had (nothing says "ready" then).
    """
    app = create_app(config, run_expiry=worker in (None, 0))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        config.listen_host,
        config.listen_port,
        reuse_address=True,
        reuse_port=worker is not None,
        ssl_context=server_ssl_context(config),
    )
    if not await listen(runner, site, config.listen_host, config.listen_port):
        return 1
    log.info("central server ready on %s:%s", config.listen_host, config.listen_port)
    notifier = SystemdNotifier()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier.ready()
    try:
        await stop.wait()
    finally:
        notifier.stopping()
        await runner.cleanup()
        notifier.close()
    return 0


def _serve_worker(config: CentralConfig, index: int) -> None:
    """One of several server processes (``central.workers``)."""
    setup_logging(config.log_level, as_json=config.log_json)
    sys.exit(asyncio.run(serve(config, worker=index)))


async def _upgrade_only(config: CentralConfig) -> None:
    # ``serve`` with workers: the schema exists (checked), the supervisor upgrades it once.
    db = Database(config.database_url)
    try:
        await migrate(db.engine)
    finally:
        await db.close()


def _migrate_now(config: CentralConfig) -> None:
    asyncio.run(_upgrade_only(config))


async def _migrate(config: CentralConfig) -> int:
    """``migrate``: the one command that may create the database; says what it did."""
    _sqlite_dir(config)
    db = Database(config.database_url)
    try:
        before, after = await migrate(db.engine)
    finally:
        await db.close()
    print(describe_migration(masked_url(config.database_url), before, after))
    return 0


def describe_migration(database: str, before: str | None, after: str | None) -> str:
    """What ``migrate`` did, from which revision to which."""
    if before is None:
        return f"created the schema at revision {after} in {database}"
    if before == after:
        return f"{database} is already at revision {after}: nothing to do"
    return f"upgraded {database} from revision {before} to {after}"


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bonus-central``."""
    parser = argparse.ArgumentParser(
        prog="bonus-central", description="Pharmacy bonus central server"
    )
    parser.add_argument("--config", help="TOML configuration file (or BONUS_CENTRAL_CONFIG)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    # Also after the command, as the systemd unit writes it (``bonus-central serve --config …``).
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def command(group: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(name, parents=[after], **kwargs)
        return parser

    commands = parser.add_subparsers(dest="command", required=True)
    command(commands, "serve", help="serve stores (and run the daily expiry)")
    command(commands, "migrate", help="create or upgrade the database schema")
    store = command(commands, "store", help="the registry of stores")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    add = command(store_commands, "add", help="register a store and print its token once")
    add.add_argument("store_id")
    add.add_argument("--name", required=True)
    add.add_argument("--address")
    add.add_argument("--opening-hours")
    add.add_argument("--phone")
    rotate = command(
        store_commands,
        "rotate-token",
        help="give a store a new token; the old one works until the store uses the new one",
    )
    rotate.add_argument("store_id")
    rotate.add_argument(
        "--overlap-hours",
        type=float,
        default=stores.TOKEN_OVERLAP_DEFAULT_H,
        help="the longest the old token keeps working (0: it stops at once; "
        f"default {stores.TOKEN_OVERLAP_DEFAULT_H:g})",
    )
    for name, text in (
        ("disable", "refuse the store's syncs (it redeems nothing; its sales wait at the store)"),
        ("enable", "let a disabled store sync again"),
        ("close", "close a store for good once it has uploaded everything it holds"),
    ):
        change = command(store_commands, name, help=text)
        change.add_argument("store_id")
        change.add_argument("--reason", help="why (shown in the store list)")
    command(store_commands, "list", help="stores, their state, backlog and last sync")
    expire_parser = command(commands, "expire", help="burn expired points now")
    expire_parser.add_argument(
        "--as-of", type=date.fromisoformat, help="YYYY-MM-DD (default today)"
    )
    settings = command(commands, "settings", help="program settings")
    settings_commands = settings.add_subparsers(dest="settings_command", required=True)
    command(settings_commands, "show", help="the settings in force")
    set_parser = command(settings_commands, "set", help="a new settings version: KEY=VALUE …")
    set_parser.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    command(commands, "check", help="check the ledger's invariants")
    phone_key = command(commands, "phone-key", help="the chain's key of phone hashes")
    phone_key_commands = phone_key.add_subparsers(dest="phone_key_command", required=True)
    export = command(
        phone_key_commands,
        "export",
        help="write the key file a store's installer puts at the store",
    )
    export.add_argument("path", help="the file to write (mode 0600), or - for standard output")
    export.add_argument("--force", action="store_true", help="replace an existing file")
    phones = command(commands, "phones", help="the cards' phone hashes")
    phones_commands = phones.add_subparsers(dest="phones_command", required=True)
    rehash_parser = command(
        phones_commands,
        "rehash",
        help="hash the phones of cards made before the current key (resumable)",
    )
    rehash_parser.add_argument(
        "--check", action="store_true", help="only count the cards still to hash"
    )
    staff = command(commands, "staff", help="office accounts")
    staff_commands = staff.add_subparsers(dest="staff_command", required=True)
    staff_add = command(staff_commands, "add", help="create an office account")
    staff_add.add_argument("login")
    staff_add.add_argument("--name", required=True)
    staff_add.add_argument(
        "--permissions",
        required=True,
        help="comma-separated: " + ",".join(p.value for p in Permission),
    )
    staff_add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    args = parser.parse_args(argv)

    path = args.config or os.environ.get("BONUS_CENTRAL_CONFIG")
    try:
        config = load_config(Path(path) if path else None)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(config.log_level, as_json=config.log_json)
    now = datetime.now(UTC)
    if args.command == "migrate":
        return asyncio.run(_migrate(config))
    try:
        return _run(config, args, now)
    except DatabaseRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1


def _run(config: CentralConfig, args: argparse.Namespace, now: datetime) -> int:
    """Every command but ``migrate``: on a database that has the schema."""
    if args.command == "serve":
        try:
            server_ssl_context(config)  # unusable certificate files: refused before starting
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        # Refused before anything starts; the server then upgrades an older schema.
        asyncio.run(require_schema(config.database_url))
        if config.workers > 1:
            return supervise(config, _serve_worker, migrate_first=_migrate_now)
        return asyncio.run(serve(config))
    if args.command == "store":
        return asyncio.run(_with_db(config, lambda db: _store_command(db, args, now)))
    if args.command == "expire":
        return asyncio.run(_with_db(config, lambda db: _expire(db, args.as_of, now)))
    if args.command == "staff":
        return asyncio.run(_with_db(config, lambda db: _staff_command(db, args, now)))
    if args.command == "settings":
        return asyncio.run(_with_db(config, lambda db: _settings_command(db, args, now)))
    if args.command == "phone-key":
        return asyncio.run(_with_db(config, lambda db: _export_phone_key(db, config, args)))
    if args.command == "phones":
        return asyncio.run(_with_db(config, lambda db: _rehash(db, config, args.check)))
    return asyncio.run(_with_db(config, _check))


async def _store_command(db: Database, args: argparse.Namespace, now: datetime) -> int:
    if args.store_command == "add":
        try:
            async with db.write() as conn:
                token = await stores.add_store(
                    conn,
                    args.store_id,
                    args.name,
                    now,
                    address=args.address,
                    opening_hours=args.opening_hours,
                    phone=args.phone,
                )
        except stores.StoreExists:
            print(f"store {args.store_id} already exists", file=sys.stderr)
            return 1
        print(token)
        return 0
    if args.store_command == "rotate-token":
        if not 0 <= args.overlap_hours <= stores.TOKEN_OVERLAP_MAX_H:
            print(f"--overlap-hours: 0 to {stores.TOKEN_OVERLAP_MAX_H:g}", file=sys.stderr)
            return 2
        overlap = timedelta(hours=args.overlap_hours)
        async with db.write() as conn:
            new_token = await stores.rotate_token(conn, args.store_id, now, overlap)
        if new_token is None:
            print(f"no open store {args.store_id}", file=sys.stderr)
            return 1
        print(new_token)
        if overlap:
            print(
                f"the old token works until the store uses this one, at most until "
                f"{(now + overlap).isoformat(timespec='seconds')}",
                file=sys.stderr,
            )
        return 0
    if args.store_command in ("disable", "enable", "close"):
        targets: dict[str, stores.StoreState] = {
            "disable": "disabled",
            "enable": "active",
            "close": "closing",
        }
        target = targets[args.store_command]
        try:
            async with db.write() as conn:
                before = await stores.change_state(conn, args.store_id, target, now, args.reason)
        except stores.StateChangeRefused as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"store {args.store_id}: {before} → {target}")
        if target == "closing":
            print(
                "it uploads what it holds and records nothing new; it is closed at its next "
                "greeting that reports nothing unsent (see `store list`)",
                file=sys.stderr,
            )
        return 0
    async with db.read() as conn:
        for row in await stores.list_stores(conn):
            print(json.dumps(row, ensure_ascii=False))
    return 0


async def _expire(db: Database, as_of: date | None, now: datetime) -> int:
    async with db.read() as conn:
        settings, _ = await current_settings(conn)
    day = as_of or local_date(now, settings.zone)
    cards, burned = await expire(db, day, now)
    print(f"expired as of {day}: {cards} cards, {burned / 100:.2f} points burned")
    return 0


async def _settings_command(db: Database, args: argparse.Namespace, now: datetime) -> int:
    if args.settings_command == "show":
        async with db.read() as conn:
            settings, _ = await current_settings(conn)
        print(settings.model_dump_json(indent=2))
        return 0
    changes = {}
    for assignment in args.assignments:
        key, sep, value = assignment.partition("=")
        if not sep:
            print(f"expected KEY=VALUE, got {assignment!r}", file=sys.stderr)
            return 2
        changes[key] = _parse_value(value)
    try:
        async with db.write() as conn:
            new = await set_settings(conn, changes, now, by="cli")
    except ValidationError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"settings version {new.version} is in force")
    return 0


async def _staff_command(db: Database, args: argparse.Namespace, now: datetime) -> int:
    try:
        permissions = {Permission(p.strip()) for p in args.permissions.split(",") if p.strip()}
    except ValueError as exc:
        print(f"unknown permission: {exc}", file=sys.stderr)
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
    if len(password) < 8:
        print("the password needs at least 8 characters", file=sys.stderr)
        return 2
    # The hash is made in a thread before the transaction, which it would hold for ~150 ms.
    password_hash = await asyncio.to_thread(hash_password, password)
    try:
        async with db.write() as conn:
            await add_staff(conn, args.login, args.name, password_hash, permissions, now)
    except StaffExists:
        print(f"login {args.login} is taken", file=sys.stderr)
        return 1
    print(f"account {args.login} created with {', '.join(sorted(permissions)) or 'no permissions'}")
    return 0


async def _export_phone_key(db: Database, config: CentralConfig, args: argparse.Namespace) -> int:
    key = await load_phone_key(db, config.phone_hash_params)
    text = key.to_text()
    if args.path == "-":
        sys.stdout.write(text)
    else:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
        try:
            descriptor = os.open(args.path, flags, 0o600)
        except FileExistsError:
            print(f"{args.path} exists: --force replaces it", file=sys.stderr)
            return 1
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
    print(
        f"phone key {key.key_id} ({key.params.memory_kib} KiB, {key.params.time_cost} passes): "
        "install it at each store as /etc/pharmacy-bonus/phone-key, root-only (systemd/README.md)",
        file=sys.stderr,
    )
    return 0


async def _rehash(db: Database, config: CentralConfig, check_only: bool) -> int:
    key = await load_phone_key(db, config.phone_hash_params)
    stale = await count_stale(db, key)
    print(f"cards to hash with phone key {key.key_id}: {stale}", flush=True)
    if check_only or not stale:
        return 0
    hasher = PhoneHasher(key, threads=config.phone_hash_threads)

    def report(progress: RehashProgress) -> None:
        rate = progress.converted / progress.elapsed_s if progress.elapsed_s else 0.0
        left_s = (stale - progress.converted) / rate if rate else float("nan")
        print(
            f"hashed {progress.converted} of {stale} ({rate:.0f}/s, about {left_s:.0f} s left)",
            flush=True,
        )

    try:
        done = await rehash(db, hasher, report=report)
    finally:
        hasher.close()
    print(f"done: {done.converted} cards hashed in {done.elapsed_s:.1f} s")
    return 0


async def _check(db: Database) -> int:
    async with db.read() as conn:
        report = await check_invariants(conn)
    print(
        f"cards checked: {report.cards_checked}; transactions {report.transactions_total_kop / 100:.2f} = "
        f"remainders {report.remainders_total_kop / 100:.2f} − debt {report.debt_total_kop / 100:.2f}"
    )
    for problem in report.problems:
        print("PROBLEM:", problem)
    print("ok" if report.ok else "INVARIANTS BROKEN")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
