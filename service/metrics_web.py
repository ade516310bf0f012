"""Prometheus metrics over HTTP, shared by the agent's and the central server's aiohttp apps:
who may read ``GET /metrics``, the route template a request is counted under, and the answer.

Label values are never taken from a request as it came: a path is counted under its route
template (``/pos/v1/cards/{card}``, never a card number), and a path of no route as
``unmatched``; error codes are the stable ``ErrorCode`` values.
"""

from __future__ import annotations

import ipaddress
import secrets

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from shared.errors import BonusError, ErrorCode

#: The route of a request that matched none.
ROUTE_UNMATCHED = "unmatched"
#: Buckets of the request latency histograms, in seconds: a till waits for a sale in
#: milliseconds, an online authorisation at most 1.5 s, a snapshot may stream for minutes.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
    30.0,
    120.0,
)
#: Headers a reverse proxy adds: a request that carries one did not come from this machine,
#: whatever its TCP peer says.
FORWARDED_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")

TOKEN_MESSAGE = "Нет доступа к метрикам: нужен верный ключ метрик (metrics_token)"
LOOPBACK_MESSAGE = (
    "Метрики доступны только с этого же сервера: для доступа по сети задайте metrics_token"
)


def route_template(request: web.Request) -> str:
    """The route a request matched, as its template; ``unmatched`` for none."""
    match_info = request.match_info
    if match_info.http_exception is not None:
        return ROUTE_UNMATCHED
    resource = match_info.route.resource
    return resource.canonical if resource is not None else ROUTE_UNMATCHED


def from_loopback(request: web.Request) -> bool:
    """Whether the client is on this machine: a loopback peer, not relaying anybody."""
    if any(name in request.headers for name in FORWARDED_HEADERS):
        return False
    try:
        address = ipaddress.ip_address((request.remote or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_metrics_access(request: web.Request, *, token: str, loopback: bool) -> None:
    """Let the client read the metrics, or refuse it in the error shape.

    A bearer token, when sent, must be ``token``; without one only a client on this machine is
    let in (when ``loopback``). Refusals: ``401 unauthorized`` for a missing or wrong token,
    ``403 forbidden`` when no token is configured and the client is elsewhere.
    """
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, given = header.partition(" ")
        if (
            token
            and scheme.lower() == "bearer"
            and secrets.compare_digest(given.strip().encode(), token.encode())
        ):
            return
        raise BonusError(ErrorCode.UNAUTHORIZED, TOKEN_MESSAGE, reason="wrong_metrics_token")
    if loopback and from_loopback(request):
        return
    if token:
        raise BonusError(ErrorCode.UNAUTHORIZED, TOKEN_MESSAGE, reason="metrics_token_required")
    raise BonusError(ErrorCode.FORBIDDEN, LOOPBACK_MESSAGE, reason="metrics_loopback_only")


def metrics_response(*texts: bytes) -> web.Response:
    """The metrics in Prometheus's text format (each part a registry's ``generate_latest``)."""
    return web.Response(body=b"".join(texts), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
