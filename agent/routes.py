"""The till API's endpoints: one table drives both the routing and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from agent import store
from agent.context import AgentContext, refusal_body
from agent.http import json_response, parse_body
from agent.models import (
    CalculateRequest,
    CalculateResponse,
    ConfirmRequest,
    ConfirmResponse,
    HoldRequest,
    HoldResponse,
    LookupRequest,
    LookupResponse,
    Refusal,
    RegisterRequest,
    RegisterResponse,
    ReturnRequest,
    ReturnResponse,
    SaleRequest,
    SaleResponse,
    StatusResponse,
    TransactionsResponse,
    VerificationOut,
    VerificationRequest,
)
from agent.operations import Operations
from agent.verifications import Verifications
from service.version import package_version
from service.web import model_response
from shared.errors import BonusError, ErrorCode

CTX_KEY = web.AppKey("ctx", AgentContext)
OPS_KEY = web.AppKey("operations", Operations)
VERIFY_KEY = web.AppKey("verifications", Verifications)

E = ErrorCode
#: Errors every till endpoint can answer with.
COMMON_ERRORS = (E.VALIDATION_ERROR, E.UNAUTHORIZED, E.PAYLOAD_TOO_LARGE, E.SERVICE_BUSY)


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of the till API."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    response: type[BaseModel]
    request: type[BaseModel] | None = None
    errors: tuple[ErrorCode, ...] = ()
    status: int = 200


def _version() -> str:
    return package_version()


async def status(request: web.Request) -> web.Response:
    ctx = request.app[CTX_KEY]
    provider = request.app[VERIFY_KEY].provider
    age = ctx.sync_age_s()
    refusal = ctx.redemption_refusal()
    phone_refusal = ctx.phone_refusal()
    body = StatusResponse(
        store_id=ctx.config.store_id,
        online=ctx.online,
        last_central_error=ctx.last_central_error,
        last_central_error_at=ctx.last_central_error_at,
        last_sync_at=ctx.last_sync_at(),
        sync_age_s=None if age is None else round(age, 1),
        redemption_allowed=refusal is None,
        redemption_refusal=refusal_body(refusal),
        pending_ops=ctx.pending_ops(),
        settings_version=ctx.settings.version,
        last_upload_error=ctx.last_upload_error,
        last_download_error=ctx.last_download_error,
        central_clock_offset_s=ctx.central_clock_offset_s,
        provider=provider.name,
        provider_error=provider.last_error,
        cards=store.count_cards(ctx.db.reader),
        phone_lookup_allowed=phone_refusal is None,
        phone_lookup_refusal=None
        if phone_refusal is None
        else Refusal(code=str(phone_refusal.code), message=phone_refusal.message),
        phone_key_problem=ctx.phone_key_problem,
        phone_key_id=ctx.phone_hasher.key.key_id if ctx.phone_hasher else None,
        store_state=ctx.store_state,
        version=_version(),
    )
    return model_response(body)


async def lookup(request: web.Request) -> web.Response:
    body = await parse_body(request, LookupRequest)
    result = await request.app[OPS_KEY].lookup(body)
    return model_response(result)


async def register(request: web.Request) -> web.Response:
    body = await parse_body(request, RegisterRequest)
    ctx = request.app[CTX_KEY]
    result, created = await request.app[OPS_KEY].register(body)
    if ctx.settings.registration_confirmation == "code" and not result.card.verified:
        try:
            result.verification = await request.app[VERIFY_KEY].create(
                VerificationRequest(
                    card=result.card.number, purpose="registration", phone=body.phone
                )
            )
        except BonusError as exc:
            # The card exists either way; the till may ask for a code again or skip it.
            result.verification_error = refusal_body(exc)
    return model_response(result, status=201 if created else 200)


async def create_verification(request: web.Request) -> web.Response:
    body = await parse_body(request, VerificationRequest)
    result = await request.app[VERIFY_KEY].create(body)
    return model_response(result, status=201)


async def confirm_verification(request: web.Request) -> web.Response:
    body = await parse_body(request, ConfirmRequest)
    verification_id = request.match_info["verification_id"]
    result = await request.app[VERIFY_KEY].confirm(verification_id, body)
    return model_response(result)


async def calculate(request: web.Request) -> web.Response:
    body = await parse_body(request, CalculateRequest)
    result = await request.app[OPS_KEY].calculate(body)
    return model_response(result)


async def sale(request: web.Request) -> web.Response:
    body = await parse_body(request, SaleRequest)
    return json_response(await request.app[OPS_KEY].sale(body))


async def return_(request: web.Request) -> web.Response:
    body = await parse_body(request, ReturnRequest)
    return json_response(await request.app[OPS_KEY].return_(body))


async def hold(request: web.Request) -> web.Response:
    body = await parse_body(request, HoldRequest)
    return json_response(await request.app[OPS_KEY].hold(body))


async def release_hold(request: web.Request) -> web.Response:
    return json_response(await request.app[OPS_KEY].release_hold(request.match_info["hold_id"]))


async def transactions(request: web.Request) -> web.Response:
    result = await request.app[OPS_KEY].transactions(request.match_info["card"])
    return model_response(result)


async def openapi(request: web.Request) -> web.Response:
    from agent.openapi import openapi_document

    return json_response(openapi_document(ENDPOINTS, _version()))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/pos/v1/status",
        status,
        "The store's sync state and redemption rule",
        StatusResponse,
    ),
    Endpoint(
        "POST",
        "/pos/v1/cards/lookup",
        lookup,
        "Find a card by phone, number or barcode",
        LookupResponse,
        LookupRequest,
        (E.CARD_NOT_FOUND, E.CARD_BLOCKED, E.PHONE_INVALID, E.PHONE_LOOKUP_UNAVAILABLE),
    ),
    Endpoint(
        "POST",
        "/pos/v1/customers",
        register,
        "Register a customer (a known phone returns its card)",
        RegisterResponse,
        RegisterRequest,
        (
            E.PHONE_INVALID,
            E.CONSENT_REQUIRED,
            E.CARD_EXISTS,
            E.CARD_NOT_FOUND,
            E.PHONE_LOOKUP_UNAVAILABLE,
        ),
        status=201,
    ),
    Endpoint(
        "POST",
        "/pos/v1/verifications",
        create_verification,
        "Send a confirmation code",
        VerificationOut,
        VerificationRequest,
        (
            E.CARD_NOT_FOUND,
            E.CARD_BLOCKED,
            E.PHONE_INVALID,
            E.PHONE_LOOKUP_UNAVAILABLE,
            E.VERIFICATION_RATE_LIMITED,
            E.PROVIDER_UNAVAILABLE,
            E.PROVIDER_NO_BALANCE,
        ),
        status=201,
    ),
    Endpoint(
        "POST",
        "/pos/v1/verifications/{verification_id}/confirm",
        confirm_verification,
        "Confirm the code the customer read out",
        ConfirmResponse,
        ConfirmRequest,
        (E.VERIFICATION_NOT_FOUND, E.VERIFICATION_INVALID, E.VERIFICATION_EXPIRED),
    ),
    Endpoint(
        "POST",
        "/pos/v1/receipts/calculate",
        calculate,
        "Accrual and the redeemable maximum of a receipt",
        CalculateResponse,
        CalculateRequest,
        (E.CARD_NOT_FOUND, E.CARD_BLOCKED),
    ),
    Endpoint(
        "POST",
        "/pos/v1/receipts",
        sale,
        "Commit a sale (idempotent on receipt_id)",
        SaleResponse,
        SaleRequest,
        (
            E.CARD_NOT_FOUND,
            E.CARD_BLOCKED,
            E.REDEMPTION_STALE_SYNC,
            E.REDEMPTION_EXCEEDS_MAX,
            E.REDEMPTION_OFFLINE_LIMIT,
            E.INSUFFICIENT_BALANCE,
            E.VERIFICATION_REQUIRED,
            E.VERIFICATION_EXPIRED,
            E.IDEMPOTENCY_CONFLICT,
            E.HOLD_NOT_FOUND,
            E.HOLD_EXPIRED,
            E.HOLD_RESOLVED,
        ),
    ),
    Endpoint(
        "POST",
        "/pos/v1/returns",
        return_,
        "Return a receipt wholly or in part (idempotent on return_id)",
        ReturnResponse,
        ReturnRequest,
        (E.RECEIPT_NOT_FOUND, E.RETURN_EXCEEDS_SALE, E.IDEMPOTENCY_CONFLICT),
    ),
    Endpoint(
        "POST",
        "/pos/v1/holds",
        hold,
        "Set points aside for an order (idempotent on hold_id)",
        HoldResponse,
        HoldRequest,
        (
            E.CARD_NOT_FOUND,
            E.CARD_BLOCKED,
            E.INSUFFICIENT_BALANCE,
            E.REDEMPTION_STALE_SYNC,
            E.VERIFICATION_REQUIRED,
            E.VERIFICATION_EXPIRED,
            E.IDEMPOTENCY_CONFLICT,
        ),
    ),
    Endpoint(
        "DELETE",
        "/pos/v1/holds/{hold_id}",
        release_hold,
        "Release a hold",
        HoldResponse,
        None,
        (E.HOLD_NOT_FOUND, E.HOLD_RESOLVED),
    ),
    Endpoint(
        "GET",
        "/pos/v1/cards/{card}/transactions",
        transactions,
        "The card's recent operations at this store, newest first",
        TransactionsResponse,
        None,
        (E.CARD_NOT_FOUND, E.CARD_BLOCKED),
    ),
)


def add_routes(app: web.Application) -> None:
    """Register every endpoint of the table, and the OpenAPI document."""
    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
    app.router.add_get("/pos/v1/openapi.json", openapi)


def describe(body: Any) -> str:  # pragma: no cover - used by the CLI's status printer
    """One line per key of a JSON object."""
    return "\n".join(f"{key}: {value}" for key, value in body.items())
