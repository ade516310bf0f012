"""``GET /metrics`` of the central server, and the middleware that counts the sync endpoints'
and the office's requests (by route template, never a raw path)."""

from __future__ import annotations

import time

from aiohttp import web

from central.api import DB_KEY
from central.config import CentralConfig
from central.metrics import METRICS_KEY
from service.metrics_web import check_metrics_access, metrics_response, route_template
from service.web import Handler

METRICS_PATH = "/metrics"
AUTHORIZE_ROUTE = "/sync/v1/authorize"
CENTRAL_CONFIG_KEY = web.AppKey("central_config", CentralConfig)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count each store's and office's request by route and status; time authorisations."""
    path = request.path
    sync = path.startswith("/sync/")
    if not sync and not path.startswith("/admin/"):
        return await handler(request)
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # a redirect or the like: the error middleware renders 4xx
        _count(request, sync, exc.status, time.perf_counter() - started)
        raise
    # A request whose client went away (cancelled) has no status and is not counted.
    _count(request, sync, response.status, time.perf_counter() - started)
    return response


def _count(request: web.Request, sync: bool, status: int, elapsed_s: float) -> None:
    metrics = request.app[METRICS_KEY]
    route = route_template(request)
    if sync:
        metrics.sync_requests.labels(route, str(status)).inc()
        if route == AUTHORIZE_ROUTE:
            metrics.authorize_duration.observe(elapsed_s)
    else:
        metrics.office_requests.labels(request.method, route, str(status)).inc()


async def metrics_endpoint(request: web.Request) -> web.Response:
    """``GET /metrics``: to a client on this machine (``metrics_loopback``) or one that sends
    ``metrics_token`` as a bearer token; store ids and sync state are nobody else's business."""
    config = request.app[CENTRAL_CONFIG_KEY]
    check_metrics_access(
        request, token=config.metrics_token.get_secret_value(), loopback=config.metrics_loopback
    )
    return metrics_response(await request.app[METRICS_KEY].scrape(request.app[DB_KEY]))
