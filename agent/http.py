"""HTTP plumbing of the till API: the error shape, authentication, body parsing and limits."""

from __future__ import annotations

import logging
import secrets

import aiohttp
from aiohttp import web

from agent.config import AgentConfig
from service.web import Handler, ModelT, error_middleware, json_response
from service.web import parse_body as _parse_body
from shared.errors import BonusError, ErrorCode

__all__ = ["auth_middleware", "error_middleware", "json_response", "parse_body"]

log = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("config", AgentConfig)
SESSION_KEY = web.AppKey("http_session", aiohttp.ClientSession)
#: Paths anybody on the machine may read without a till's credentials.
PUBLIC_PATHS = frozenset({"/pos/v1/openapi.json", "/pos/v1/status"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Each till names itself; where the store set till tokens, it proves who it is."""
    if request.path in PUBLIC_PATHS or not request.path.startswith("/pos/"):
        return await handler(request)
    register_id = request.headers.get("X-Register-Id", "").strip()
    if not register_id or len(register_id) > 64:
        raise BonusError(ErrorCode.UNAUTHORIZED, reason="X-Register-Id header is required")
    tokens = request.app[CONFIG_KEY].till_tokens
    if tokens:
        expected = tokens.get(register_id)
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if (
            expected is None
            or scheme.lower() != "bearer"
            or not secrets.compare_digest(token.encode(), expected.get_secret_value().encode())
        ):
            raise BonusError(ErrorCode.UNAUTHORIZED)
    return await handler(request)


async def parse_body(request: web.Request, model: type[ModelT]) -> ModelT:
    """The request body as the given model, read under the body limit in force now.

    The application's ``client_max_size`` is fixed when it is created, but
    ``request_body_bytes_max`` is reloadable: without this a reload would report it applied and
    keep refusing (or accepting) bodies by the old limit.
    """
    limit = request.app[CONFIG_KEY].request_body_bytes_max
    if request.client_max_size != limit:
        request = request.clone(client_max_size=limit)
    return await _parse_body(request, model)
