"""The central server's application factory and its daily expiry task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from aiohttp import web

from central import audit_refusals, login_limits
from central.api import (
    AUTH_HOLD_KEY,
    DB_KEY,
    PHONE_HASHER_KEY,
    PHONE_KEY,
    add_sync_routes,
    store_auth_middleware,
)
from central.audit_refusals import RefusalCounter
from central.campaigns import carry_on
from central.client_address import parse_networks
from central.config import CentralConfig
from central.db import Database, migrate
from central.expiry import expire
from central.login_limits import InFlight, KnownBlocks, LoginPolicy, RefusalPauses
from central.metrics import METRICS_KEY, CentralMetrics
from central.metrics_web import (
    CENTRAL_CONFIG_KEY,
    METRICS_PATH,
    metrics_endpoint,
    metrics_middleware,
)
from central.office_api import GUARD_KEY, OfficeGuard, add_office_routes, office_middleware
from central.passwords import PasswordHashing, default_threads
from central.phones import load_phone_key
from central.program import current_settings
from central.staff import password_matches
from central.sync import phone_key
from service.phonekey import PhoneHasher
from service.web import REQUEST_TIMEOUT_KEY, STREAMING_PATHS_KEY, error_middleware, json_response
from shared.lots import local_date

log = logging.getLogger(__name__)

#: How often the counted refusals of the office are written, and the login limiter's and the
#: refusals' old rows pruned.
REFUSALS_FLUSH_S = 2.0
PRUNE_EVERY_S = 600.0
#: How often the office's mass operations left running are looked for.
CARRY_ON_EVERY_S = 60.0


async def health(request: web.Request) -> web.Response:
    """Liveness: the database answers."""
    async with request.app[DB_KEY].read() as conn:
        await conn.exec_driver_sql("SELECT 1")
    return json_response({"status": "ok"})


def create_app(config: CentralConfig, *, run_expiry: bool = True) -> web.Application:
    """The central server: sync endpoints for stores, and the daily expiry."""
    app = web.Application(
        middlewares=[
            metrics_middleware,
            error_middleware,
            store_auth_middleware,
            office_middleware,
        ],
        client_max_size=config.request_body_bytes_max,
    )
    app[CENTRAL_CONFIG_KEY] = config
    app[METRICS_KEY] = CentralMetrics()
    app[REQUEST_TIMEOUT_KEY] = lambda: 120.0
    app[STREAMING_PATHS_KEY] = frozenset({"/sync/v1/snapshot", "/admin/v1/journal.csv"})
    app[AUTH_HOLD_KEY] = config.authorization_hold_s
    app.router.add_get("/health", health)
    app.router.add_get(METRICS_PATH, metrics_endpoint)
    add_sync_routes(app)
    add_office_routes(app)
    policy = LoginPolicy.from_config(config)
    guard = OfficeGuard(
        policy=policy,
        hashing=PasswordHashing(
            threads=config.password_hashing_threads or default_threads(),
            queue_max=config.password_hashing_queue_max,
            wait_s=config.password_hashing_wait_s,
            nice=config.password_hashing_nice,
        ),
        proxies=parse_networks(config.trusted_proxies),
        refusals=RefusalCounter(
            config.audit_refusals_window_s, config.audit_refusals_rows_per_window_max
        ),
        blocks=KnownBlocks(),
        pauses=RefusalPauses(policy.refusal_pause_s, policy.refusal_pauses_max),
        in_flight=InFlight(),
    )
    app[GUARD_KEY] = guard

    async def resources(app: web.Application) -> AsyncIterator[None]:
        db = Database(config.database_url)
        await migrate(db.engine)
        app[DB_KEY] = db
        app[PHONE_KEY] = await phone_key(db)
        hasher = PhoneHasher(
            await load_phone_key(db, config.phone_hash_params), threads=config.phone_hash_threads
        )
        app[PHONE_HASHER_KEY] = hasher
        # The hash of nobody's password, made once now rather than by the first unknown login.
        await guard.hashing.run(password_matches, None, "")
        tasks = [
            asyncio.create_task(
                _office_housekeeping(db, guard, config.audit_refusals_keep_days),
                name="office-housekeeping",
            )
        ]
        if run_expiry:
            tasks.append(asyncio.create_task(_daily_expiry(db, config.expiry_hour), name="expiry"))
            tasks.append(asyncio.create_task(_carry_on_office(db), name="office-carry-on"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            hasher.close()
            try:
                await guard.refusals.flush(db)
            except Exception:
                log.exception("could not write the last counts of refused office requests")
            guard.hashing.close()
            await db.close()

    app.cleanup_ctx.append(resources)
    return app


async def _carry_on_office(db: Database) -> None:
    """At start-up and every minute: carry on an office mass operation left running (a server
    stopped half-way, a request cut short). Its chunks take turns with a request driving it."""
    while True:
        try:
            await carry_on(db)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not carry on the office's running operations")
        await asyncio.sleep(CARRY_ON_EVERY_S)


async def _daily_expiry(db: Database, hour: int) -> None:
    """Burn expired lots once a day at ``hour`` in the program's time zone, and at start-up."""
    while True:
        try:
            async with db.read() as conn:
                settings, _ = await current_settings(conn)
            now = datetime.now(UTC)
            await expire(db, local_date(now, settings.zone), now)
            local_now = now.astimezone(settings.zone)
            next_run = local_now.replace(hour=hour, minute=0, second=0, microsecond=0)
            if next_run <= local_now:
                next_run += timedelta(days=1)
            await asyncio.sleep((next_run - local_now).total_seconds())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("expiry job failed; retrying in 10 minutes")
            await asyncio.sleep(600)


async def _office_housekeeping(db: Database, guard: OfficeGuard, keep_days: int) -> None:
    """Write the counted refusals every few seconds; prune the login limiter's and the
    refusals' old rows every ten minutes (a chunk per transaction)."""
    next_prune = 0.0
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(REFUSALS_FLUSH_S)
        try:
            await guard.refusals.flush(db)
            if loop.time() >= next_prune:
                next_prune = loop.time() + PRUNE_EVERY_S
                await prune_office(db, guard.policy, keep_days, datetime.now(UTC))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("office housekeeping failed; retrying")


#: Transactions one pruning round may take, so that a round ends even after a long flood.
PRUNE_ROUNDS_MAX = 100


async def prune_office(
    db: Database, policy: login_limits.LoginPolicy, keep_days: int, now: datetime
) -> None:
    """Delete the login limiter's rows that no longer matter and refusal counts past keeping."""
    for _ in range(PRUNE_ROUNDS_MAX):
        async with db.write() as conn:
            deleted = await login_limits.prune(conn, policy, now)
            deleted += await audit_refusals.prune(conn, keep_days, now)
        if not deleted:
            return
        await asyncio.sleep(0)
