"""HTTP plumbing of the till API: the error shape, authentication, body parsing and limits."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ValidationError

from agent.config import AgentConfig
from shared.errors import BonusError, ErrorCode

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONFIG_KEY = web.AppKey("config", AgentConfig)
SESSION_KEY = web.AppKey("http_session", aiohttp.ClientSession)
#: Paths anybody on the machine may read without a till's credentials.
PUBLIC_PATHS = frozenset({"/pos/v1/openapi.json", "/pos/v1/status"})


def error_response(error: BonusError) -> web.Response:
    """An expected failure in the one error shape."""
    return json_response(error.to_body(), status=error.http_status)


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer, UTF-8, Cyrillic as it is."""
    return web.Response(
        text=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


def _validation_details(exc: ValidationError) -> dict[str, Any]:
    return {
        "errors": [
            {"field": ".".join(str(part) for part in item["loc"]), "problem": item["msg"]}
            for item in exc.errors(include_url=False, include_input=False)
        ][:20]
    }


_HTTP_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure in the error shape; bad input is a 4xx, never a 5xx."""
    try:
        config = request.app[CONFIG_KEY]
        if request.client_max_size != config.request_body_bytes_max:
            # The application's own limit is fixed when it is created; the configured one may
            # change with a reload, so each request is read under the limit in force now.
            request = request.clone(client_max_size=config.request_body_bytes_max)
        async with asyncio.timeout(config.request_timeout_s):
            return await handler(request)
    except BonusError as exc:
        return error_response(exc)
    except ValidationError as exc:
        return error_response(BonusError(ErrorCode.VALIDATION_ERROR, **_validation_details(exc)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, ErrorCode.VALIDATION_ERROR)
        return error_response(BonusError(code))
    except TimeoutError:
        log.warning("request %s %s took too long", request.method, request.path)
        return error_response(BonusError(ErrorCode.SERVICE_BUSY, reason="timeout"))
    except Exception:
        log.exception("unexpected failure in %s %s", request.method, request.path)
        return error_response(BonusError(ErrorCode.INTERNAL_ERROR))


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
    """The request body as the given model: JSON numbers are read as exact decimals."""
    raw = await request.read()
    try:
        data = json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser's recursion limit (bad input).
        raise BonusError(
            ErrorCode.VALIDATION_ERROR, reason=f"body is not valid JSON: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise BonusError(ErrorCode.VALIDATION_ERROR, reason="body must be a JSON object")
    return model.model_validate(data)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")
