"""The agent's application factory: resources opened and closed in ``cleanup_ctx``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from agent.clock import Clock
from agent.config import AgentConfig
from agent.context import AgentContext
from agent.db import Database
from agent.http import CONFIG_KEY, SESSION_KEY, auth_middleware, error_middleware
from agent.metrics import (
    METRICS_KEY,
    METRICS_PATH,
    AgentMetrics,
    metrics_endpoint,
    metrics_middleware,
)
from agent.operations import Operations
from agent.providers import make_provider
from agent.routes import CTX_KEY, OPS_KEY, VERIFY_KEY, add_routes
from agent.sync import CentralClient, Syncer
from agent.verifications import Verifications
from service.phonekey import PhoneHasher, load_phone_key
from service.web import REQUEST_TIMEOUT_KEY

log = logging.getLogger(__name__)

HIGH_WATER_INTERVAL_S = 30.0
SYNCER_KEY = web.AppKey("syncer", Syncer)
#: Outgoing connections to gateways and the central server, at most.
HTTP_CONNECTIONS_MAX = 20


def create_app(
    config: AgentConfig, *, clock: Clock | None = None, config_path: Path | None = None
) -> web.Application:
    """The till API over the local journal, with its background tasks."""
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, auth_middleware],
        client_max_size=config.request_body_bytes_max,
    )
    app[CONFIG_KEY] = config
    app[REQUEST_TIMEOUT_KEY] = lambda: config.request_timeout_s
    metrics = app[METRICS_KEY] = AgentMetrics()
    add_routes(app)
    app.router.add_get(METRICS_PATH, metrics_endpoint)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        db = Database(config.db_path)
        await db.open()
        ctx = AgentContext(config=config, db=db, clock=clock or Clock(), metrics=metrics)
        source = load_phone_key(config.phone_key_file)
        if source.key is not None:
            ctx.phone_hasher = PhoneHasher(source.key)
            log.info("phone key %s from %s", source.key.key_id, source.path)
        else:
            ctx.phone_key_problem = source.problem
            log.error(
                "%s: tills can find cards by number only (no lookup by phone, registration or "
                "codes) until the chain's key is installed; see systemd/README.md",
                source.problem,
            )
        await ctx.load()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=HTTP_CONNECTIONS_MAX),
            timeout=aiohttp.ClientTimeout(total=config.central_timeout_s),
        )
        app[SESSION_KEY] = session
        app[CTX_KEY] = ctx
        app[OPS_KEY] = Operations(ctx)
        app[VERIFY_KEY] = Verifications(ctx, make_provider(config.provider, session))
        metrics.watch(ctx, lambda: app[VERIFY_KEY].provider)
        tasks = [asyncio.create_task(_high_water_loop(ctx), name="high-water")]
        client = CentralClient(ctx, session)
        syncer = Syncer(ctx, client)
        app[SYNCER_KEY] = syncer
        # Always running: without a central_token the loop waits for one (a reload may add it).
        ctx.quick_round = syncer.quick_round
        ctx.central = client.authorize
        tasks.append(asyncio.create_task(syncer.run(), name="sync"))
        if config_path is not None:
            from agent.reload import watch_config

            tasks.append(asyncio.create_task(watch_config(app, config_path), name="config-watch"))
        await ctx.record_high_water()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await session.close()
            await db.close()
            if ctx.phone_hasher is not None:
                ctx.phone_hasher.close()

    app.cleanup_ctx.append(resources)
    return app


async def _high_water_loop(ctx: AgentContext) -> None:
    while True:
        await asyncio.sleep(HIGH_WATER_INTERVAL_S)
        try:
            await ctx.record_high_water()
        except Exception:
            log.exception("could not record the wall clock's high-water mark")
