"""The error shape over HTTP, shared by the agent's and the central server's aiohttp apps.

The one module of ``shared/`` that knows aiohttp: it maps requests to answers and does no I/O
of its own, so that both servers render every failure the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from service.failures import describe
from shared.errors import BonusError, ErrorCode

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: How long one request may take before it is answered with ``service_busy`` (read per request,
#: so a configuration reload applies to the next request).
REQUEST_TIMEOUT_KEY: web.AppKey[Callable[[], float]] = web.AppKey("request_timeout_s")
#: Paths that stream their answer and are not bound by the whole-request timeout.
STREAMING_PATHS_KEY = web.AppKey("streaming_paths", frozenset)
#: The stable code an error answer carries, for the metrics to count it by.
ERROR_CODE_KEY = web.ResponseKey("error_code", str)

#: The status recorded for a request whose client went away (nginx's "client closed request");
#: it never reaches anybody.
CLIENT_GONE_STATUS = 499

_HTTP_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer, UTF-8, Cyrillic as it is."""
    return web.Response(
        text=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    """A pydantic model as a JSON answer."""
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


def error_response(error: BonusError) -> web.Response:
    """An expected failure in the one error shape."""
    response = json_response(error.to_body(), status=error.http_status)
    response[ERROR_CODE_KEY] = str(error.code)
    return response


def validation_details(exc: ValidationError) -> dict[str, Any]:
    return {
        "errors": [
            {"field": ".".join(str(part) for part in item["loc"]), "problem": item["msg"]}
            for item in exc.errors(include_url=False, include_input=False)
        ][:20]
    }


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure in the error shape; bad input is a 4xx, never a 5xx."""
    try:
        if "\x00" in request.path or any(_has_nul(item) for item in request.query.items()):
            raise BonusError(ErrorCode.VALIDATION_ERROR, reason=NUL_REASON)
        if request.path in request.app.get(STREAMING_PATHS_KEY, frozenset()):
            # A stream (a snapshot of a million cards, a CSV export) runs as long as it sends;
            # its socket reads and writes are bounded instead.
            return await handler(request)
        timeout = request.app.get(REQUEST_TIMEOUT_KEY)
        async with asyncio.timeout(timeout() if timeout else 60.0):
            return await handler(request)
    except BonusError as exc:
        return error_response(exc)
    except ValidationError as exc:
        return error_response(BonusError(ErrorCode.VALIDATION_ERROR, **validation_details(exc)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, ErrorCode.VALIDATION_ERROR)
        response = error_response(BonusError(code))
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except TimeoutError:
        log.warning("request %s %s took too long", request.method, request.path)
        return error_response(BonusError(ErrorCode.SERVICE_BUSY, reason="timeout"))
    except Exception as exc:
        if isinstance(exc, ConnectionError) and _client_gone(request):
            # The till or the store hung up (a reset, a closed socket, a cut link): nothing of
            # ours failed and nobody is left to answer. One line, no traceback.
            log.info(
                "client %s went away during %s %s: %s",
                request.remote,
                request.method,
                request.path,
                describe(exc),
            )
            return web.Response(status=CLIENT_GONE_STATUS)
        log.exception("unexpected failure in %s %s", request.method, request.path)
        return error_response(BonusError(ErrorCode.INTERNAL_ERROR))


def _client_gone(request: web.Request) -> bool:
    """Whether the request's own connection is closed (not one the handler opened elsewhere)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object from a body; numbers are read as exact decimals."""
    try:
        text = raw.decode("utf-8")
        data = _DECODER.decode(text)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise BonusError(
            ErrorCode.VALIDATION_ERROR, reason=f"body is not valid JSON: {exc}"
        ) from exc
    except RecursionError as exc:
        # A body nested thousands of levels deep is an attack, not a receipt.
        raise BonusError(ErrorCode.VALIDATION_ERROR, reason="body is nested too deeply") from exc
    if not isinstance(data, dict):
        raise BonusError(ErrorCode.VALIDATION_ERROR, reason="body must be a JSON object")
    # json.loads refuses raw control characters in strings, so a NUL can only come from the
    # escape "\u0000": without it in the text (the usual case) there is nothing to walk.
    if "\\u0000" in text and _has_nul(data):
        raise BonusError(ErrorCode.VALIDATION_ERROR, reason=NUL_REASON)
    return data


#: PostgreSQL cannot store a NUL character in text: one in a customer's name would make every
#: upload of the store fail for good, one in a query a 500.  No field of ours has a use for it.
NUL_REASON = "text must not contain NUL characters"


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is in any string of a JSON value (keys included)."""
    # A loop, not recursion: a body nested as deep as json.loads allows must not overflow here.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return False


async def parse_body(request: web.Request, model: type[ModelT]) -> ModelT:
    """The request body validated as the given model."""
    return model.model_validate(parse_json(await request.read()))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


#: One decoder for every body (``json.loads`` with options builds a new one per call).
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constants)


async def listen(runner: web.AppRunner, site: web.TCPSite, host: str, port: int) -> bool:
    """Start listening; False (logged, the runner cleaned up) when the address cannot be had,
    so that a service says "ready" only once it really listens."""
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", host, port, exc.strerror or exc)
        await runner.cleanup()
        return False
    return True
