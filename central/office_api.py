"""The office's HTTP API (``/admin/v1``): staff sessions, cards, campaigns, zeroings, the journal
and its CSV export, annulment, stores and settings.  Every mutating request is audited.

Amounts come in as roubles (exact decimals, like the till API) and go out as integer kopecks in
``*_kop`` fields, so that no float appears anywhere; a page formats them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from central import login_limits, schema
from central.annulment import annul_receipt
from central.api import DB_KEY
from central.audit_refusals import RefusalCounter
from central.campaigns import CAMPAIGN_ID_CHARS_MAX, campaign_cards, cancel_campaign, run_campaign
from central.cards_office import CARDS_PAGE_MAX, card_page, search_cards
from central.client_address import IPNetwork, client_address
from central.journal import (
    JOURNAL_PAGE_MAX,
    JournalFilter,
    journal_count,
    journal_csv,
    journal_page,
)
from central.login_limits import InFlight, KnownBlocks, LoginPolicy, RefusalPauses
from central.office_ops import list_campaigns
from central.passwords import HashingBusy, PasswordHashing
from central.program import current_settings, set_settings
from central.selection import CardFilter, Selection
from central.staff import (
    Permission,
    StaffMember,
    log_out,
    member_of_session,
    open_session,
    password_matches,
    stored_hash,
)
from central.stores import (
    TOKEN_OVERLAP_DEFAULT_H,
    TOKEN_OVERLAP_MAX_H,
    StateChangeRefused,
    StoreExists,
    StoreState,
    add_store,
    change_state,
    list_stores,
    rotate_token,
)
from central.zeroings import cancel_zeroing, run_zeroing
from service.web import Handler, error_response, json_response, parse_body
from shared.amounts import AmountIn, DayIn
from shared.errors import BonusError, ErrorCode
from shared.lots import local_date

MEMBER_KEY = web.RequestKey("staff_member", StaffMember)
AUDIT_KEY = web.RequestKey("audit_params", dict)
P = Permission
#: What a login refused for a busy server tells the client to wait, in seconds.
LOGIN_BUSY_RETRY_S = 1


@dataclass(frozen=True)
class OfficeGuard:
    """What protects the office's login: the limits, the hashing threads, the trusted proxies
    and the counted audit of refusals."""

    policy: LoginPolicy
    hashing: PasswordHashing
    proxies: tuple[IPNetwork, ...]
    refusals: RefusalCounter
    blocks: KnownBlocks
    pauses: RefusalPauses
    in_flight: InFlight


GUARD_KEY = web.AppKey("office_guard", OfficeGuard)


def now() -> datetime:
    """The server's clock."""
    return datetime.now(UTC)


class Body(BaseModel):
    """An office request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class LoginRequest(Body):
    login: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


class CampaignRequest(Body):
    campaign_id: str = Field(
        min_length=1, max_length=CAMPAIGN_ID_CHARS_MAX, pattern=r"^[A-Za-z0-9._:\-]+$"
    )
    amount: AmountIn
    expires_on: DayIn | None = Field(
        None, description="Last day the points can pay; none = non-expiring."
    )
    note: str = Field(min_length=1, max_length=500)
    selection: Selection


class ZeroingRequest(Body):
    zeroing_id: str = Field(
        min_length=1, max_length=CAMPAIGN_ID_CHARS_MAX, pattern=r"^[A-Za-z0-9._:\-]+$"
    )
    before_date: DayIn = Field(description="Cards whose last purchase is strictly before this day.")
    note: str = Field(min_length=1, max_length=500)
    selection: Selection


class AnnulRequest(Body):
    note: str = Field("", max_length=500)


class StoreRequest(Body):
    store_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")
    name: str = Field(min_length=1, max_length=200)
    address: str | None = Field(None, max_length=500)
    opening_hours: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=40)


class StoreStateRequest(Body):
    reason: str | None = Field(None, max_length=500)


class TokenRotation(Body):
    overlap_hours: float = Field(
        TOKEN_OVERLAP_DEFAULT_H,
        strict=True,  # a number: `false` is not 0 hours
        ge=0,
        le=TOKEN_OVERLAP_MAX_H,
        description="The longest the old token keeps working (0: it stops at once).",
    )


class SettingsChange(Body):
    changes: dict[str, Any]


@dataclass(frozen=True)
class Route:
    """One office endpoint: method, path, handler, permission, request model."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    permissions: tuple[Permission, ...] = ()
    request: type[BaseModel] | None = None
    #: The status of a success (201 where the request creates something).
    status: int = 200


def _member(request: web.Request) -> StaffMember:
    return request[MEMBER_KEY]


def _today(settings_zone: Any) -> date:
    return local_date(now(), settings_zone)


async def _zone(request: web.Request) -> Any:
    async with request.app[DB_KEY].read() as conn:
        settings, _ = await current_settings(conn)
    return settings.zone


def _query_model(request: web.Request, model: type[BaseModel], drop: set[str]) -> Any:
    data = {k: v for k, v in request.query.items() if k not in drop and v != ""}
    return model.model_validate(data)


def _int(request: web.Request, name: str, default: int, maximum: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise BonusError(ErrorCode.VALIDATION_ERROR, field=name)
    return min(int(text), maximum)


# --- handlers -----------------------------------------------------------------------------------


def request_address(request: web.Request) -> str:
    """The client's address, through the trusted proxies' X-Forwarded-For."""
    return client_address(
        request.remote,
        request.headers.getall("X-Forwarded-For", []),
        request.app[GUARD_KEY].proxies,
    )


async def login(request: web.Request) -> web.Response:
    body = await parse_body(request, LoginRequest)
    request[AUDIT_KEY] = {"login": body.login}
    guard = request.app[GUARD_KEY]
    try:
        return await _log_in(request, guard, body)
    except BonusError as exc:
        if exc.code in (ErrorCode.LOGIN_RATE_LIMITED, ErrorCode.LOGIN_BUSY):
            await guard.pauses.pause()
        raise


async def _log_in(request: web.Request, guard: OfficeGuard, body: LoginRequest) -> web.Response:
    db = request.app[DB_KEY]
    address = request_address(request)
    moment = now()
    # The cheap refusals first, without a query: a full hashing queue, an address known to be
    # blocked.  A flood is mostly these.
    if guard.hashing.full:
        raise BonusError(ErrorCode.LOGIN_BUSY, retry_after_s=LOGIN_BUSY_RETRY_S)
    wait_s = guard.blocks.wait_s(login_limits.address_key(address), moment)
    if wait_s:
        raise BonusError(ErrorCode.LOGIN_RATE_LIMITED, retry_after_s=wait_s)
    # No transaction is open while the password is hashed: the hash takes a thread for
    # ~150 ms, and on SQLite a write transaction would hold the one writer lock all along.
    async with db.read() as conn:
        check = await login_limits.check_attempt(
            conn, guard.policy, body.login, address, moment, guard.blocks
        )
        password_hash = None if check.wait_s else await stored_hash(conn, body.login)
    if check.wait_s:
        raise BonusError(ErrorCode.LOGIN_RATE_LIMITED, retry_after_s=check.wait_s)
    if not guard.in_flight.claim(check.watched):
        # Another attempt at a key on the brink is being checked: its answer decides.
        raise BonusError(ErrorCode.LOGIN_RATE_LIMITED, retry_after_s=1)
    try:
        try:
            matches = await guard.hashing.run(password_matches, password_hash, body.password)
        except HashingBusy:
            raise BonusError(ErrorCode.LOGIN_BUSY, retry_after_s=LOGIN_BUSY_RETRY_S) from None
        moment = now()
        if not matches:
            async with db.write() as conn:
                blocks = await login_limits.record_failure(
                    conn, guard.policy, body.login, address, moment
                )
            guard.blocks.remember(
                {key: until for key, until in blocks.items() if key.startswith("address:")},
                moment,
            )
            raise BonusError(ErrorCode.UNAUTHORIZED, "Неверный логин или пароль")
    finally:
        guard.in_flight.release(check.watched)
    async with db.write() as conn:
        token, expires_at = await open_session(conn, body.login, moment)
        await login_limits.record_success(conn, guard.policy, body.login, address, moment)
    return json_response({"token": token, "expires_at": expires_at.isoformat()}, status=201)


async def logout(request: web.Request) -> web.Response:
    token = request.headers.get("Authorization", "").partition(" ")[2]
    async with request.app[DB_KEY].write() as conn:
        await log_out(conn, token)
    return json_response({"logged_out": True})


async def me(request: web.Request) -> web.Response:
    member = _member(request)
    return json_response(
        {"login": member.login, "name": member.name, "permissions": sorted(member.permissions)}
    )


async def cards(request: web.Request) -> web.Response:
    f = _query_model(request, CardFilter, {"sort", "desc", "limit", "offset"})
    sort = request.query.get("sort", "number")
    if sort not in ("number", "last_purchase_on", "non_expiring", "expiring"):
        raise BonusError(ErrorCode.VALIDATION_ERROR, field="sort")
    total, items = await search_cards(
        request.app[DB_KEY],
        f,
        _today(await _zone(request)),
        sort=sort,  # type: ignore[arg-type]
        descending=request.query.get("desc") in ("1", "true"),
        limit=_int(request, "limit", 50, CARDS_PAGE_MAX),
        offset=_int(request, "offset", 0, 10**9),
    )
    return json_response({"total": total, "cards": items})


async def card(request: web.Request) -> web.Response:
    page = await card_page(
        request.app[DB_KEY], request.match_info["number"], _today(await _zone(request))
    )
    if page is None:
        raise BonusError(ErrorCode.CARD_NOT_FOUND)
    return json_response(page)


async def create_campaign(request: web.Request) -> web.Response:
    body = await parse_body(request, CampaignRequest)
    request[AUDIT_KEY] = body.model_dump(mode="json")
    result = await run_campaign(
        request.app[DB_KEY],
        campaign_id=body.campaign_id,
        amount_kop=body.amount,
        expires_on=body.expires_on,
        note=body.note,
        selection=body.selection,
        today=_today(await _zone(request)),
        now=now(),
        login=_member(request).login,
    )
    return json_response(result, status=201)


async def campaigns(request: web.Request) -> web.Response:
    kind = request.query.get("kind")
    if kind not in (None, "campaign", "zeroing"):
        raise BonusError(ErrorCode.VALIDATION_ERROR, field="kind")
    total, items = await list_campaigns(
        request.app[DB_KEY],
        kind,
        _int(request, "limit", 50, 500),
        _int(request, "offset", 0, 10**9),
    )
    return json_response({"total": total, "items": items})


async def cancel_campaign_handler(request: web.Request) -> web.Response:
    result = await cancel_campaign(
        request.app[DB_KEY], request.match_info["campaign_id"], now(), _member(request).login
    )
    return json_response(result)


async def campaign_cards_handler(request: web.Request) -> web.Response:
    items = await campaign_cards(
        request.app[DB_KEY],
        request.match_info["campaign_id"],
        spent_only=request.query.get("spent_only") in ("1", "true"),
        after=request.query.get("after"),
        limit=_int(request, "limit", 100, 1000),
    )
    return json_response({"cards": items})


async def create_zeroing(request: web.Request) -> web.Response:
    body = await parse_body(request, ZeroingRequest)
    request[AUDIT_KEY] = body.model_dump(mode="json")
    result = await run_zeroing(
        request.app[DB_KEY],
        zeroing_id=body.zeroing_id,
        before_date=body.before_date,
        note=body.note,
        selection=body.selection,
        today=_today(await _zone(request)),
        now=now(),
        login=_member(request).login,
    )
    return json_response(result, status=201)


async def cancel_zeroing_handler(request: web.Request) -> web.Response:
    result = await cancel_zeroing(
        request.app[DB_KEY],
        request.match_info["zeroing_id"],
        _today(await _zone(request)),
        now(),
        _member(request).login,
    )
    return json_response(result)


async def journal(request: web.Request) -> web.Response:
    f = _query_model(request, JournalFilter, {"after", "limit", "count"})
    after = request.query.get("after")
    if after is not None and not after.isdigit():
        raise BonusError(ErrorCode.VALIDATION_ERROR, field="after")
    items, next_after = await journal_page(
        request.app[DB_KEY],
        f,
        after_id=int(after) if after else None,
        limit=_int(request, "limit", 100, JOURNAL_PAGE_MAX),
    )
    body: dict[str, Any] = {"transactions": items, "next_after": next_after}
    if request.query.get("count") in ("1", "true"):
        body["total"] = await journal_count(request.app[DB_KEY], f)
    return json_response(body)


async def journal_export(request: web.Request) -> web.StreamResponse:
    f = _query_model(request, JournalFilter, set())
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="journal.csv"',
        }
    )
    await response.prepare(request)
    try:
        async for chunk in journal_csv(request.app[DB_KEY], f):
            await response.write(chunk)
    except BaseException:
        # The status line is sent: no error answer is possible any more, and the client would
        # wait for the rest for ever.  A cut connection tells it the download failed.
        if request.transport is not None:
            request.transport.abort()
        raise
    await response.write_eof()
    return response


async def annul(request: web.Request) -> web.Response:
    body = await parse_body(request, AnnulRequest)
    result = await annul_receipt(
        request.app[DB_KEY],
        request.match_info["store_id"],
        request.match_info["receipt_id"],
        now(),
        body.note,
        _member(request).login,
    )
    return json_response(result)


async def stores(request: web.Request) -> web.Response:
    async with request.app[DB_KEY].read() as conn:
        return json_response({"stores": await list_stores(conn)})


async def create_store(request: web.Request) -> web.Response:
    body = await parse_body(request, StoreRequest)
    request[AUDIT_KEY] = body.model_dump(mode="json")
    try:
        async with request.app[DB_KEY].write() as conn:
            token = await add_store(
                conn,
                body.store_id,
                body.name,
                now(),
                address=body.address,
                opening_hours=body.opening_hours,
                phone=body.phone,
            )
    except StoreExists as exc:
        raise BonusError(
            ErrorCode.IDEMPOTENCY_CONFLICT, "Аптека с таким кодом уже есть", store_id=body.store_id
        ) from exc
    return json_response({"store_id": body.store_id, "token": token}, status=201)


_STORE_CHANGES: tuple[tuple[str, StoreState, str], ...] = (
    ("disable", "disabled", "Disable a store: its syncs refused, no redemption"),
    ("enable", "active", "Enable a disabled store again"),
    ("close", "closing", "Close a store for good once it has uploaded everything"),
)


def _store_state_handler(target: StoreState) -> Handler:
    async def change(request: web.Request) -> web.Response:
        body = await parse_body(request, StoreStateRequest)
        store_id = request.match_info["store_id"]
        request[AUDIT_KEY] = {"store_id": store_id, "state": target, "reason": body.reason}
        try:
            async with request.app[DB_KEY].write() as conn:
                before = await change_state(conn, store_id, target, now(), body.reason)
        except StateChangeRefused as exc:
            raise BonusError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "Состояние аптеки так изменить нельзя",
                store_id=store_id,
                reason=str(exc),
            ) from exc
        return json_response({"store_id": store_id, "state": target, "was": before})

    return change


async def rotate_store_token(request: web.Request) -> web.Response:
    body = await parse_body(request, TokenRotation)
    store_id = request.match_info["store_id"]
    request[AUDIT_KEY] = {"store_id": store_id, "overlap_hours": body.overlap_hours}
    at = now()
    overlap = timedelta(hours=body.overlap_hours)
    async with request.app[DB_KEY].write() as conn:
        token = await rotate_token(conn, store_id, at, overlap)
    if token is None:
        raise BonusError(ErrorCode.NOT_FOUND, "Аптека не найдена или закрыта", store_id=store_id)
    until = (at + overlap).isoformat() if overlap else None
    return json_response({"store_id": store_id, "token": token, "old_token_until": until})


async def settings_show(request: web.Request) -> web.Response:
    async with request.app[DB_KEY].read() as conn:
        settings, _ = await current_settings(conn)
    return json_response(settings.model_dump(mode="json"))


async def settings_change(request: web.Request) -> web.Response:
    body = await parse_body(request, SettingsChange)
    request[AUDIT_KEY] = body.model_dump(mode="json")
    try:
        async with request.app[DB_KEY].write() as conn:
            new = await set_settings(conn, body.changes, now(), by=_member(request).login)
    except ValidationError as exc:
        raise BonusError(
            ErrorCode.VALIDATION_ERROR, errors=[e["msg"] for e in exc.errors()][:20]
        ) from exc
    return json_response(new.model_dump(mode="json"))


async def openapi(request: web.Request) -> web.Response:
    from central.office_openapi import office_openapi

    return json_response(office_openapi(ROUTES))


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/admin/v1/session",
        login,
        "Log in: a session token with its expiry",
        request=LoginRequest,
        status=201,
    ),
    Route("DELETE", "/admin/v1/session", logout, "Log out"),
    Route("GET", "/admin/v1/me", me, "The logged-in worker and permissions"),
    Route(
        "GET",
        "/admin/v1/cards",
        cards,
        "Search cards with filters, sorting and paging",
        (P.JOURNAL,),
    ),
    Route(
        "GET",
        "/admin/v1/cards/{number}",
        card,
        "A card: balance, lots, holds, debt, transactions",
        (P.JOURNAL,),
    ),
    Route(
        "POST",
        "/admin/v1/campaigns",
        create_campaign,
        "Run a campaign (idempotent on campaign_id)",
        (P.CAMPAIGNS,),
        CampaignRequest,
        status=201,
    ),
    Route(
        "GET",
        "/admin/v1/campaigns",
        campaigns,
        "Campaigns and zeroings with state, counts, totals",
        (P.CAMPAIGNS, P.ZEROING, P.JOURNAL),
    ),
    Route(
        "POST",
        "/admin/v1/campaigns/{campaign_id}/cancel",
        cancel_campaign_handler,
        "Cancel a campaign",
        (P.CAMPAIGNS,),
    ),
    Route(
        "GET",
        "/admin/v1/campaigns/{campaign_id}/cards",
        campaign_cards_handler,
        "A campaign's cards: spent, debited",
        (P.CAMPAIGNS,),
    ),
    Route(
        "POST",
        "/admin/v1/zeroings",
        create_zeroing,
        "Zero the non-expiring points of inactive cards",
        (P.ZEROING,),
        ZeroingRequest,
        status=201,
    ),
    Route(
        "POST",
        "/admin/v1/zeroings/{zeroing_id}/cancel",
        cancel_zeroing_handler,
        "Cancel a zeroing",
        (P.ZEROING,),
    ),
    Route(
        "GET", "/admin/v1/journal", journal, "The transaction journal with filters", (P.JOURNAL,)
    ),
    Route(
        "GET", "/admin/v1/journal.csv", journal_export, "The journal as CSV for Excel", (P.JOURNAL,)
    ),
    Route(
        "POST",
        "/admin/v1/receipts/{store_id}/{receipt_id}/annul",
        annul,
        "Annul a receipt's accrual",
        (P.ANNULMENT,),
        AnnulRequest,
    ),
    Route("GET", "/admin/v1/stores", stores, "Stores and their sync health", (P.STORES,)),
    Route(
        "POST",
        "/admin/v1/stores",
        create_store,
        "Register a store (its token is shown once)",
        (P.STORES,),
        StoreRequest,
        status=201,
    ),
    *(
        Route(
            "POST",
            f"/admin/v1/stores/{{store_id}}/{action}",
            _store_state_handler(target),
            text,
            (P.STORES,),
            StoreStateRequest,
        )
        for action, target, text in _STORE_CHANGES
    ),
    Route(
        "POST",
        "/admin/v1/stores/{store_id}/rotate-token",
        rotate_store_token,
        "A new token; the old one works until the store uses it, or the overlap ends",
        (P.STORES,),
        TokenRotation,
    ),
    Route("GET", "/admin/v1/settings", settings_show, "Program settings in force", (P.SETTINGS,)),
    Route(
        "PATCH",
        "/admin/v1/settings",
        settings_change,
        "A new settings version",
        (P.SETTINGS,),
        SettingsChange,
    ),
)
_PUBLIC = {("POST", "/admin/v1/session"), ("GET", "/admin/v1/openapi.json")}
_PERMISSIONS = {(route.method, route.path): route.permissions for route in ROUTES}


async def _authorize(request: web.Request) -> StaffMember | None:
    """The session's worker, checked against the route's permissions (None for public routes)."""
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
    key = (request.method, route)
    if key in _PUBLIC:
        return None
    member: StaffMember | None = None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        async with request.app[DB_KEY].read() as conn:
            member = await member_of_session(conn, token, now())
    if member is None:
        raise BonusError(ErrorCode.UNAUTHORIZED, "Войдите в систему")
    request[MEMBER_KEY] = member
    needed = _PERMISSIONS.get(key, ())
    if needed and not member.permissions & set(needed):
        raise BonusError(ErrorCode.FORBIDDEN, needed=[str(p) for p in needed])
    return member


@web.middleware
async def office_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sessions, permissions and the audit of every mutating request, refused ones included."""
    if not request.path.startswith("/admin/"):
        return await handler(request)
    if request.method == "GET":
        await _authorize(request)
        return await handler(request)
    try:
        await _authorize(request)
        response = await handler(request)
    except BonusError as exc:
        await _audit(request, exc.http_status, exc.to_body())
        refused = error_response(exc)
        retry_after_s = exc.details.get("retry_after_s")
        if isinstance(retry_after_s, int):
            refused.headers["Retry-After"] = str(retry_after_s)
        return refused
    except ValidationError:
        await _audit(request, 422, {"error": "validation_error"})
        raise
    except web.HTTPException as exc:
        # Refused by aiohttp itself: no such route, a method not allowed, a body too large.
        if exc.status >= 400:
            await _audit(request, exc.status, {"error": exc.reason})
        raise
    except Exception:
        await _audit(request, 500, {"error": "internal_error"})
        raise
    result: Any = {}
    if isinstance(response, web.Response) and response.text:
        try:
            result = json.loads(response.text)
        except json.JSONDecodeError:
            result = {}
        if isinstance(result, dict):
            result = {k: v for k, v in result.items() if k != "token"}  # secrets never in the audit
    await _audit(request, response.status, result)
    return response


def _action(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource else request.path}"


#: The codes of refusals that aiohttp itself raised (as the error middleware answers them).
_HTTP_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}


def _error_code(status: int, result: Any) -> str:
    error = result.get("error") if isinstance(result, dict) else None
    if isinstance(error, dict):
        return str(error.get("code", ""))
    if status in _HTTP_CODES:
        return str(_HTTP_CODES[status])
    return str(error or "")


async def _audit(request: web.Request, status: int, result: Any) -> None:
    params = request.get(AUDIT_KEY, {})
    member = request.get(MEMBER_KEY)
    action = _action(request)
    if member is None and status >= 400:
        # Refused and nobody's: counted, not a row each (central/audit_refusals.py), so that a
        # flood neither grows the audit nor takes a write transaction per request.
        guard = request.app[GUARD_KEY]
        login = params.get("login")
        moment = now()
        key = guard.refusals.key(
            moment,
            request_address(request),
            action,
            login if isinstance(login, str) else None,
            _error_code(status, result),
            status,
        )
        guard.refusals.count(key, moment)
        return
    async with request.app[DB_KEY].write() as conn:
        await conn.execute(
            schema.audit.insert().values(
                at=now(),
                login=member.login if member else params.get("login"),
                # Cut to the columns' widths: a long path of no route must not fail the audit.
                action=action[:64],
                target=request.path[:200],
                params=params,
                status=status,
                result=result if isinstance(result, dict) else {"value": result},
            )
        )


def add_office_routes(app: web.Application) -> None:
    """The office endpoints."""
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    app.router.add_get("/admin/v1/openapi.json", openapi)
