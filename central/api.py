"""The central server's sync endpoints for stores (``/sync/v1``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import zlib
from datetime import UTC, datetime

import sqlalchemy as sa
from aiohttp import web
from pydantic import ValidationError

from central import feed, schema
from central.authorize import authorize
from central.db import Database, head_cursor
from central.metrics import METRICS_KEY
from central.program import current_settings
from central.snapshot import card_lines
from central.stores import Store, authenticate, end_token_overlap, note_greeting
from central.sync import upload
from service.phonekey import PhoneHasher
from service.web import Handler, model_response, parse_body, validation_details
from shared import protocol_v1
from shared.errors import BonusError, ErrorCode
from shared.lots import local_date
from shared.protocol import (
    AGENT_HEADER,
    CHANGES_PAGE_MAX,
    JOURNAL_HEAD_HEADER,
    PROTOCOL_HEADER,
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    PROTOCOL_VERSION,
    SEQ_MAX,
    STORE_HEADER,
    STORE_STATE_HEADER,
    AuthorizeRequest,
    ChangesResponse,
    Hello,
    Op,
    SnapshotHeader,
    UploadRequest,
)
from shared.protocol_v1 import OpResultV1, UploadRequestV1, UploadResponseV1

#: A card number is never longer.
CARD_PARAM_MAX = 40

DB_KEY = web.AppKey("db", Database)
#: The legacy HMAC key of protocol 1 (``meta.phone_key``), for answering stores not yet
#: upgraded; protocol 2 never sends a key.
PHONE_KEY = web.AppKey("phone_key", bytes)
#: The chain's phone key (slow hashes) with its threads: registrations are hashed with it.
PHONE_HASHER_KEY = web.AppKey("phone_hasher", PhoneHasher)
STORE_KEY = web.RequestKey("store", Store)
PROTOCOL_KEY = web.RequestKey("protocol", int)
AUTH_HOLD_KEY = web.AppKey("authorization_hold_s", int)
#: gzip level of the snapshot: 1 costs half of 6 for a quarter more bytes (bench/README.md).
SNAPSHOT_GZIP_LEVEL = 1

log = logging.getLogger(__name__)


def now() -> datetime:
    """The central server's clock: the reference time of the whole chain."""
    return datetime.now(UTC)


@web.middleware
async def store_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stores prove who they are with their token and speak a protocol version we accept."""
    if not request.path.startswith("/sync/"):
        return await handler(request)
    version_text = request.headers.get(PROTOCOL_HEADER, "")
    if (
        not _VERSION.fullmatch(version_text)
        or not PROTOCOL_MIN <= int(version_text) <= PROTOCOL_MAX
    ):
        raise BonusError(
            ErrorCode.PROTOCOL_VERSION,
            protocol_min=PROTOCOL_MIN,
            protocol_max=PROTOCOL_MAX,
            given=version_text[:20] or None,
        )
    store_id = request.headers.get(STORE_HEADER, "")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if (
        not store_id
        or len(store_id) > STORE_ID_MAX
        or scheme.lower() != "bearer"
        or not token
        or len(token) > TOKEN_MAX
    ):
        raise BonusError(ErrorCode.UNAUTHORIZED)
    async with request.app[DB_KEY].read() as conn:
        found = await authenticate(conn, store_id, token, now())
    if found is None:
        raise BonusError(ErrorCode.UNAUTHORIZED)
    if found.new_token_first_used:
        async with request.app[DB_KEY].write() as conn:
            await end_token_overlap(conn, store_id)
    store = found.store
    if store.state == "disabled":
        raise BonusError(ErrorCode.STORE_DISABLED, store_id=store.store_id)
    if store.state == "closed" or (
        store.state == "closing" and request.path == "/sync/v1/authorize"
    ):
        raise BonusError(ErrorCode.STORE_CLOSED, store_id=store.store_id, state=store.state)
    request[STORE_KEY] = store
    request[PROTOCOL_KEY] = int(version_text)
    response = await handler(request)
    if not response.prepared:  # a streamed snapshot has sent its headers already
        response.headers[STORE_STATE_HEADER] = request.get(_STATE_KEY, store.state)
    return response


#: The store's state after the request (a greeting can close a drained store).
_STATE_KEY = web.RequestKey("store_state", str)


_VERSION = re.compile(r"[0-9]{1,4}")
#: A store id and a token are never longer (``bonus-central store add`` makes them).
STORE_ID_MAX = 64
TOKEN_MAX = 256


def _current_protocol_only(request: web.Request) -> None:
    """Card states are made for the current protocol: an agent of version 1 expects the phone
    hashes it can compute itself, so it is told to upgrade; its uploads still go through, and
    without a complete sync it stops redeeming within the hour."""
    if request[PROTOCOL_KEY] != PROTOCOL_VERSION:
        raise BonusError(
            ErrorCode.PROTOCOL_VERSION,
            protocol_min=PROTOCOL_VERSION,
            protocol_max=PROTOCOL_MAX,
            given=str(request[PROTOCOL_KEY]),
            reason="upgrade the agent to follow the change feed",
        )


def _journal_head(request: web.Request) -> int | None:
    """The journal head a store reports in its greeting, if it does (and sensibly)."""
    text = request.headers.get(JOURNAL_HEAD_HEADER, "")
    if not _SEQ.fullmatch(text):
        return None
    return int(text)


_SEQ = re.compile(r"[0-9]{1,18}")


async def hello(request: web.Request) -> web.Response:
    store = request[STORE_KEY]
    # Which release the store runs (optional: agents before 0.2.0 do not say).
    log.debug(
        "hello from store %s: %s, protocol %s",
        store.store_id,
        request.headers.get(AGENT_HEADER, "unknown agent"),
        request[PROTOCOL_KEY],
    )
    journal_head = _journal_head(request)
    if (journal_head is not None and journal_head != store.reported_head_seq) or (
        store.state == "closing"
    ):
        async with request.app[DB_KEY].write() as conn:
            request[_STATE_KEY] = await note_greeting(conn, store, journal_head, now())
    async with request.app[DB_KEY].read() as conn:
        head = await head_cursor(conn)
    if request[PROTOCOL_KEY] == protocol_v1.VERSION:
        # A store not yet upgraded: its greeting, with the legacy key its replica hashes with.
        return model_response(
            protocol_v1.HelloV1(
                protocol_min=PROTOCOL_MIN,
                protocol_max=PROTOCOL_MAX,
                server_time=now(),
                store_id=store.store_id,
                phone_key=request.app[PHONE_KEY].hex(),
                last_applied_seq=store.last_applied_seq,
                head_cursor=head,
            )
        )
    return model_response(
        Hello(
            protocol_min=PROTOCOL_MIN,
            protocol_max=PROTOCOL_MAX,
            server_time=now(),
            store_id=store.store_id,
            phone_key_id=request.app[PHONE_HASHER_KEY].key.key_id,
            last_applied_seq=store.last_applied_seq,
            head_cursor=head,
        )
    )


async def upload_batch(request: web.Request) -> web.Response:
    store = request[STORE_KEY]
    v1 = request[PROTOCOL_KEY] == protocol_v1.VERSION
    ops = (
        _ops_v1(await parse_body(request, UploadRequestV1))
        if v1
        else (await parse_body(request, UploadRequest)).ops
    )
    result = await upload(
        request.app[DB_KEY],
        store.store_id,
        ops,
        now(),
        request.app[PHONE_HASHER_KEY],
        metrics=request.app.get(METRICS_KEY),
    )
    if v1:
        return model_response(
            UploadResponseV1(
                acked_seq=result.acked_seq,
                results=[
                    OpResultV1.model_validate(r.model_dump(exclude={"differences"}))
                    for r in result.results
                ],
                checkpoint=result.checkpoint,
                server_time=result.server_time,
            )
        )
    return model_response(result)


def _ops_v1(batch: UploadRequestV1) -> list[Op]:
    """A version 1 batch as typed operations; an operation that cannot be read refuses the
    batch, naming it (nothing is applied)."""
    ops = []
    for op in batch.ops:
        try:
            operation = protocol_v1.operation_from_v1(op.kind, op.payload)
        except ValidationError as exc:
            raise BonusError(
                ErrorCode.VALIDATION_ERROR, seq=op.seq, kind=op.kind, **validation_details(exc)
            ) from None
        if operation.card != op.card:
            raise BonusError(ErrorCode.VALIDATION_ERROR, reason="payload card differs", seq=op.seq)
        ops.append(Op(seq=op.seq, op_id=op.op_id, created_at=op.created_at, operation=operation))
    return ops


def _int_param(request: web.Request, name: str, default: int, maximum: int | None = None) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not _DIGITS.fullmatch(text) or int(text) > SEQ_MAX:
        raise BonusError(ErrorCode.VALIDATION_ERROR, field=name, reason="a whole number")
    value = int(text)
    return min(value, maximum) if maximum is not None else value


_DIGITS = re.compile(r"[0-9]{1,19}")


async def changes(request: web.Request) -> web.Response:
    """Card states changed after a cursor, and the settings if they changed."""
    _current_protocol_only(request)
    cursor = _int_param(request, "cursor", 0)
    after_card = request.query.get("card") or None
    if after_card is not None and len(after_card) > CARD_PARAM_MAX:
        raise BonusError(ErrorCode.VALIDATION_ERROR, field="card", reason="too long")
    limit = max(1, _int_param(request, "limit", 1000, CHANGES_PAGE_MAX))
    async with request.app[DB_KEY].read() as conn:
        head = await head_cursor(conn)
        settings, settings_cursor = await current_settings(conn)
        today = local_date(now(), settings.zone)
        found = await feed.changed_cards(conn, cursor, after_card, limit)
        rows = await feed.within_lot_budget(conn, found, today)
        states = await feed.card_states(conn, rows, today)
    more = len(found) == limit or len(rows) < len(found)
    if rows:
        next_cursor, next_card = rows[-1].cursor, (rows[-1].number if more else None)
        if not more:
            next_cursor = max(next_cursor, head)
    else:
        next_cursor, next_card = max(cursor, head), None
    if not more:
        # The store has pulled to the head: the end of its round, as the office sees it.
        async with request.app[DB_KEY].write() as conn:
            await conn.execute(
                schema.stores.update()
                .where(schema.stores.c.store_id == request[STORE_KEY].store_id)
                .values(last_sync_at=now())
            )
    return model_response(
        ChangesResponse(
            cards=states,
            settings=settings if settings_cursor > cursor or cursor == 0 else None,
            next_cursor=next_cursor,
            next_card=next_card,
            more=more,
            head_cursor=head,
            server_time=now(),
        )
    )


async def snapshot(request: web.Request) -> web.StreamResponse:
    """Every card, as gzip-compressed JSON lines, from one read transaction."""
    _current_protocol_only(request)
    response = web.StreamResponse(
        headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    )
    await response.prepare(request)
    compressor = zlib.compressobj(SNAPSHOT_GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    async with request.app[DB_KEY].read() as conn:
        # One transaction: the cursor is read before any card (see docs/sync-protocol.md).
        head = await head_cursor(conn)
        settings, _ = await current_settings(conn)
        today = local_date(now(), settings.zone)
        total = await conn.scalar(sa.select(sa.func.count()).select_from(schema.cards))
        header = SnapshotHeader(
            cursor=head,
            settings=settings,
            cards=int(total or 0),
            server_time=now(),
        )
        await response.write(compressor.compress(header.model_dump_json().encode() + b"\n"))
        async with contextlib.aclosing(card_lines(conn, today)) as chunks:
            async for lines in chunks:
                # zlib lets go of the GIL: the event loop goes on meanwhile.
                await response.write(await asyncio.to_thread(compressor.compress, lines))
    await response.write(compressor.flush())
    await response.write_eof()
    return response


async def authorize_redemption(request: web.Request) -> web.Response:
    body = await parse_body(request, AuthorizeRequest)
    result = await authorize(
        request.app[DB_KEY], request[STORE_KEY].store_id, body, now(), request.app[AUTH_HOLD_KEY]
    )
    return model_response(result)


def add_sync_routes(app: web.Application) -> None:
    """The store-facing endpoints."""
    app.router.add_post("/sync/v1/authorize", authorize_redemption)
    app.router.add_get("/sync/v1/hello", hello)
    app.router.add_post("/sync/v1/upload", upload_batch)
    app.router.add_get("/sync/v1/changes", changes)
    app.router.add_get("/sync/v1/snapshot", snapshot)
