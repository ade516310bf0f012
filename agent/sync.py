"""The agent's side of synchronisation: upload the journal, pull card states, count a sync only
at the write checkpoint, and keep trying with capped backoff.

A round: hello (versions, the central clock) → snapshot if this store never bootstrapped →
upload every operation recorded before the round began → pull changes up to a cursor that
includes them → record the complete sync durably.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from agent import store
from agent.bootstrap import (
    DateCheck,
    SnapshotError,
    build_phone_index,
    drop_phone_index,
    store_snapshot_lines,
)
from agent.context import AgentContext
from agent.replica import apply_card_states
from agent.tls import central_ssl_context
from service.failures import describe
from service.version import package_version
from shared.protocol import (
    AGENT_HEADER,
    AGENT_PRODUCT,
    JOURNAL_HEAD_HEADER,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    STORE_HEADER,
    STORE_STATE_HEADER,
    UPLOAD_OPS_MAX,
    AuthorizeRequest,
    AuthorizeResponse,
    CardState,
    ChangesResponse,
    Hello,
    Op,
    SnapshotHeader,
    UploadRequest,
    UploadResponse,
)
from shared.settings import ProgramSettings

log = logging.getLogger(__name__)

#: Pages pulled in one round at most, so a round always ends.
PULL_PAGES_MAX = 10_000
PULL_PAGE_CARDS = 2000
#: Snapshot lines stored per write transaction (the tills' writes wait for one at most).
SNAPSHOT_APPLY_CARDS = 20_000
#: Bytes read from the snapshot's stream at a time.
SNAPSHOT_READ_BYTES = 1024 * 1024
#: How often a store without a central token looks again (a reload may add one).
TOKEN_WAIT_S = 5.0
#: Upload payload bytes per batch at most (well under the central server's limit).
UPLOAD_BYTES_MAX = 4 * 1024 * 1024


class SyncError(Exception):
    """A round that could not complete (network, central server, protocol)."""


class CentralRefused(SyncError):
    """The central server answered with an error."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.code = str(error.get("code", "unknown"))
        self.details: dict[str, Any] = error.get("details", {}) or {}
        super().__init__(f"central server refused ({status} {self.code}): {self.details}")


MessageT = TypeVar("MessageT", bound=BaseModel)


def _message(model: type[MessageT], body: Any) -> MessageT:
    """An answer of the central server as a protocol message; an unknown shape (a server of
    another version) is a failed round with a clear reason, not a crash of the sync loop."""
    try:
        if isinstance(body, bytes):
            return model.model_validate_json(body)
        return model.model_validate(body)
    except ValidationError as exc:
        raise SyncError(
            f"central server answered {model.__name__} in an unknown shape: {exc}"
        ) from None


class CentralClient:
    """HTTP calls to the central server's sync endpoints, each with a timeout."""

    def __init__(self, ctx: AgentContext, session: aiohttp.ClientSession) -> None:
        self.ctx = ctx
        self.session = session
        #: Checks the central server's certificate (central_ca_file or the system's store); the
        #: session's own default stays for the SMS gateways.
        self.ssl = central_ssl_context(ctx.config.central_ca_file)

    @property
    def configured(self) -> bool:
        """Whether this store has a token and an address for the central server."""
        config = self.ctx.config
        return bool(config.central_token.get_secret_value() and config.central_url.strip())

    def _headers(self) -> dict[str, str]:
        config = self.ctx.config
        return {
            "Authorization": f"Bearer {config.central_token.get_secret_value()}",
            STORE_HEADER: config.store_id,
            PROTOCOL_HEADER: str(PROTOCOL_VERSION),
            AGENT_HEADER: f"{AGENT_PRODUCT}/{package_version()}",
        }

    def _url(self, path: str) -> str:
        return self.ctx.config.central_url.rstrip("/") + path

    async def _answer(self, response: aiohttp.ClientResponse, body: Any) -> CentralRefused | None:
        """Note what an answer says of this store's state (its header, or a refusal's code);
        the refusal it is, if it is one."""
        state = response.headers.get(STORE_STATE_HEADER)
        error = CentralRefused(response.status, body) if response.status >= 400 else None
        if error is not None:
            if error.code == "store_disabled":
                state = "disabled"
            elif error.code == "store_closed":
                state = str(error.details.get("state") or "closed")
        if state:
            await self.ctx.note_store_state(state)
        return error

    async def _call(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        limit = self.ctx.config.central_timeout_s
        try:
            async with self.session.request(
                method,
                self._url(path),
                headers=self._headers() | (headers or {}),
                timeout=aiohttp.ClientTimeout(total=limit),
                ssl=self.ssl,
                **kwargs,
            ) as response:
                body = await response.json(content_type=None)
                refused = await self._answer(response, body)
                if refused is not None:
                    raise refused
        except CentralRefused as exc:
            self.ctx.note_central(str(exc))
            raise
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            error = f"central server unreachable: {describe(exc, timeout_s=limit)}"
            self.ctx.note_central(error)
            raise SyncError(error) from None
        self.ctx.note_central(None)
        return body

    async def hello(self, journal_head: int) -> Hello:
        # The journal's head tells the central server this store's backlog (and when a store
        # being closed has nothing left to upload).
        head = {JOURNAL_HEAD_HEADER: str(journal_head)}
        return _message(Hello, await self._call("GET", "/sync/v1/hello", headers=head))

    async def upload(self, ops: list[Op]) -> UploadResponse:
        body = UploadRequest(ops=ops).model_dump(mode="json")
        return _message(UploadResponse, await self._call("POST", "/sync/v1/upload", json=body))

    async def authorize(self, request: AuthorizeRequest) -> AuthorizeResponse | None:
        """Ask for an online authorisation within the short timeout; None when there is no
        answer in time (the caller falls back to the offline rules)."""
        if not self.configured:
            return None
        limit = self.ctx.config.online_authorization_timeout_s
        try:
            async with self.session.post(
                self._url("/sync/v1/authorize"),
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=limit),
                ssl=self.ssl,
                json=request.model_dump(mode="json"),
            ) as response:
                body = await response.json(content_type=None)
                error = await self._answer(response, body)
                if error is not None:
                    if error.code in ("card_not_found",):
                        # Registered here and not yet uploaded: the central server cannot judge.
                        self.ctx.note_central(None)
                        return None
                    self.ctx.note_central(str(error))
                    log.warning("authorisation refused: %s", error)
                    return None
                answer = AuthorizeResponse.model_validate(body)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, ValueError) as exc:
            reason = describe(exc, timeout_s=limit)
            self.ctx.note_central(f"authorisation failed: {reason}")
            log.info("authorisation request failed: %s", reason)
            return None
        self.ctx.note_central(None)
        return answer

    async def changes(self, cursor: int, card: str | None) -> ChangesResponse:
        params = {"cursor": str(cursor), "limit": str(PULL_PAGE_CARDS)}
        if card:
            params["card"] = card
        return _message(ChangesResponse, await self._call("GET", "/sync/v1/changes", params=params))

    async def snapshot(self) -> AsyncIterator[list[bytes]]:
        """The snapshot's JSON lines, decompressed as they arrive, a list per network chunk.

        A stream that ends before its gzip end (a server that stopped half-way) is an error,
        never a short snapshot.
        """
        limit = self.ctx.config.central_timeout_s
        try:
            async with self.session.get(
                self._url("/sync/v1/snapshot"),
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=limit),
                ssl=self.ssl,
                auto_decompress=False,
            ) as response:
                if response.status >= 400:
                    raise CentralRefused(response.status, await response.json(content_type=None))
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                pending = b""
                async for chunk in response.content.iter_chunked(SNAPSHOT_READ_BYTES):
                    pending += decompressor.decompress(chunk)
                    *lines, pending = pending.split(b"\n")
                    if lines:
                        yield lines
                pending += decompressor.flush()
                if not decompressor.eof:
                    raise SyncError("snapshot failed: the stream ended before its end")
                if pending.strip():
                    yield [pending]
        except (aiohttp.ClientError, TimeoutError, zlib.error) as exc:
            error = f"snapshot failed: {describe(exc, timeout_s=limit)}"
            self.ctx.note_central(error)
            raise SyncError(error) from None


@dataclass(frozen=True, slots=True)
class Renumbered:
    """Operations moved up the journal: those after ``acked_seq`` up to ``last_seq``, by
    ``shift``."""

    acked_seq: int
    last_seq: int
    shift: int
    count: int

    def target(self, seq: int) -> int:
        """Where an operation's number went."""
        return seq + self.shift if seq > self.acked_seq else seq


def check_upload_answer(ops: list[Op], answer: UploadResponse) -> None:
    """An upload's answer acknowledges only what the batch covered and has a result for each
    operation it acknowledges, under its number and op id; else ``SyncError`` and nothing is
    marked synced (an acknowledgement beyond the batch would mark operations synced that the
    central server has never seen).  The central server may acknowledge a prefix of the batch
    (it applies a bounded number of registrations at a time); the rest goes again."""
    first, last = ops[0].seq, ops[-1].seq
    if not first <= answer.acked_seq <= last:
        raise SyncError(
            f"the central server acknowledged seq {answer.acked_seq} "
            f"for a batch of seq {first}..{last}"
        )
    sent = sorted((op.seq, op.op_id) for op in ops if op.seq <= answer.acked_seq)
    answered = sorted((result.seq, result.op_id) for result in answer.results)
    if answered != sent:
        raise SyncError(
            f"the central server's results do not match the batch of seq {first}..{last} "
            f"({len(answer.results)} results for {len(ops)} operations)"
        )


class Syncer:
    """Runs sync rounds: on schedule, with backoff after failures, and on demand."""

    def __init__(self, ctx: AgentContext, client: CentralClient) -> None:
        self.ctx = ctx
        self.client = client
        self._round_lock = asyncio.Lock()
        self.rounds_completed = 0
        #: The central server is ahead of a journal with nothing to renumber: said once.
        self._ahead_logged = False

    # --- one round ----------------------------------------------------------------------------

    async def round(self) -> None:
        """One complete round, or ``SyncError``; only one runs at a time."""
        if not self.client.configured:
            raise SyncError("no central_token or central_url configured: this store does not sync")
        async with self._round_lock:
            try:
                await self._round()
            except SyncError:
                self.ctx.online = False
                self.ctx.metrics.sync_round(complete=False)
                raise
            except Exception as exc:
                # A fault of ours (or a database error): the round failed like any other, and
                # the loop goes on; letting it escape would end the sync task for good.
                self.ctx.online = False
                self.ctx.metrics.sync_round(complete=False)
                log.exception("sync round failed unexpectedly")
                raise SyncError(f"unexpected failure: {describe(exc)}") from exc
            self.ctx.online = True
            self.ctx.metrics.sync_round(complete=True)
            self.rounds_completed += 1

    async def _round(self) -> None:
        ctx = self.ctx
        target_seq = store.last_seq(ctx.db.reader)
        try:
            hello = await self.client.hello(target_seq)
            if not hello.protocol_min <= PROTOCOL_VERSION <= hello.protocol_max:
                raise SyncError(
                    f"protocol {PROTOCOL_VERSION} is outside the central server's "
                    f"{hello.protocol_min}..{hello.protocol_max}: upgrade the agent"
                )
            ctx.central_clock_offset_s = (hello.server_time - ctx.clock.now()).total_seconds()
            await self._note_phone_key(hello.phone_key_id)
            target_seq = await self._match_journal(hello.last_applied_seq, target_seq)
            await self._match_feed(hello.head_cursor)
            if store.get_meta(ctx.db.reader, "cursor") is None:
                await self._bootstrap()
        except SyncError as exc:
            # A refused greeting (a wrong token, an unsupported protocol) or a failed snapshot
            # must show in the status too, or the store cannot tell why it never syncs.
            ctx.last_download_error = str(exc)
            raise
        checkpoint = hello.head_cursor
        try:
            checkpoint = max(checkpoint, await self._upload_until(target_seq))
            ctx.last_upload_error = None
        except SyncError as exc:
            ctx.last_upload_error = str(exc)
            raise
        try:
            server_time = await self._pull_until(checkpoint)
            ctx.last_download_error = None
        except SyncError as exc:
            ctx.last_download_error = str(exc)
            raise
        # The write checkpoint is reached: everything uploaded before the round is acknowledged
        # and the replica includes it. Only now does "last sync" move.
        await ctx.record_sync(server_time)
        log.info("sync round complete: acked up to %d, cursor %d", target_seq, checkpoint)

    async def _match_journal(self, central_last: int, target_seq: int) -> int:
        """Compare what the central server holds of this store (``Hello.last_applied_seq``) with
        the journal, and put the journal right; returns the round's target, moved with the
        operations if they were renumbered.

        - The central server holds more than the journal ever numbered: this journal was
          restored from a backup, or the store's machine was replaced.  The unsent operations
          are renumbered after the central server's number.
        - It holds less than it acknowledged: it was restored from an older backup.  What it
          lost is sent again from its number on (the journal keeps every operation).
        """
        reader = self.ctx.db.reader
        acked = int(store.get_meta(reader, "acked_seq") or 0)
        last = store.last_seq(reader)
        if central_last > last:
            moved = await self._renumber(
                central_last,
                f"the central server holds this store's operations up to seq {central_last}, "
                f"this journal only up to seq {last} (restored from a backup, or a new machine)",
            )
            if moved is None and not self._ahead_logged:
                self._ahead_logged = True
                log.error(
                    "the central server holds this store's operations up to seq %d, this "
                    "journal only up to seq %d (restored from a backup, or a new machine): "
                    "nothing unsent to renumber; operations recorded from now on are "
                    "renumbered after seq %d before they are uploaded",
                    central_last,
                    last,
                    central_last,
                )
            return target_seq if moved is None else moved.target(target_seq)
        if central_last < acked:
            log.error(
                "the central server holds this store's operations only up to seq %d but had "
                "acknowledged them up to seq %d (restored from an older backup): sending seq "
                "%d..%d again",
                central_last,
                acked,
                central_last + 1,
                acked,
            )
            await self.ctx.db.write(lambda conn: store.set_meta(conn, "acked_seq", central_last))
        return target_seq

    async def _renumber(self, central_last: int, why: str) -> Renumbered | None:
        """Move the operations not acknowledged yet to follow ``central_last``; None when there
        are none, or they follow it already."""

        def _write(conn: sqlite3.Connection) -> Renumbered | None:
            # Read again in the writer: a sale may have been recorded since the caller looked.
            acked = int(store.get_meta(conn, "acked_seq") or 0)
            last = store.last_seq(conn)
            if central_last <= acked or last <= acked:
                return None
            shift = central_last - acked
            count = store.renumber_after(conn, acked, shift)
            # Nothing of this store lies between: everything up to there is the central server's.
            store.set_meta(conn, "acked_seq", central_last)
            return Renumbered(acked, last, shift, count)

        moved = await self.ctx.db.write(_write)
        if moved is not None:
            log.error(
                "%s: renumbered %d unsent operations from seq %d..%d to %d..%d, keeping their op "
                "ids (the central server answers those it already holds as duplicates)",
                why,
                moved.count,
                moved.acked_seq + 1,
                moved.last_seq,
                moved.acked_seq + 1 + moved.shift,
                moved.last_seq + moved.shift,
            )
        return moved

    async def _match_feed(self, head_cursor: int) -> None:
        """A change feed behind this store's cursor: the central server was restored from an
        older backup, and its new changes reuse cursors the store has passed.  Load the
        snapshot again, or those changes would never reach this store."""
        cursor = store.get_meta(self.ctx.db.reader, "cursor")
        if cursor is None or int(cursor) <= head_cursor:
            return
        log.error(
            "the central server's change feed ends at cursor %d, before this store's cursor %d "
            "(it was restored from an older backup): loading its snapshot again",
            head_cursor,
            int(cursor),
        )

        def _write(conn: sqlite3.Connection) -> None:
            store.set_meta(conn, "cursor", None)
            store.set_meta(conn, "cursor_card", None)

        await self.ctx.db.write(_write)

    async def _note_phone_key(self, key_id: str) -> None:
        """Remember which key the chain's phone hashes are made with: a store whose key file is
        another one cannot find its customers by phone, and must say so rather than "not found"
        (the key itself never travels; ``bonus-central phone-key export`` provides it)."""
        ctx = self.ctx
        if ctx.central_phone_key_id != key_id:
            await ctx.db.write(lambda conn: store.set_meta(conn, "central_phone_key_id", key_id))
            ctx.central_phone_key_id = key_id
        own = ctx.phone_hasher.key.key_id if ctx.phone_hasher is not None else None
        if own != key_id:
            log.error(
                "the chain's phone hashes are of key %s and this store has %s: install the key "
                "file from `bonus-central phone-key export` and restart; no lookups by phone "
                "until then",
                key_id,
                own or "none",
            )

    async def _bootstrap(self) -> None:
        """Load every card from the central server's snapshot, then follow the change feed.

        Batches of lines are parsed, checked and stored by the writer thread (``bootstrap``), one
        batch at a time while the next one arrives; the tills keep being served meanwhile. The
        replica's phone index is down meanwhile and built again with the last batch, which also
        saves the header's cursor and settings.
        """
        ctx = self.ctx
        dates = DateCheck()
        header: SnapshotHeader | None = None
        batch: list[bytes] = []
        writing: asyncio.Future[int] | None = None
        count = 0

        def store_batch(lines: list[bytes]) -> Callable[[sqlite3.Connection], int]:
            return lambda conn: store_snapshot_lines(
                conn, lines, dates, ctx.clock.now(), ctx.config.store_id
            )

        ctx.bootstrapping = True  # before the index goes: lookups by phone go to the writer
        complete = False
        try:
            await ctx.db.write(drop_phone_index)
            async for lines in self.client.snapshot():
                if header is None:
                    header = _message(SnapshotHeader, lines[0])
                    lines = lines[1:]
                batch.extend(lines)
                if len(batch) >= SNAPSHOT_APPLY_CARDS:
                    if writing is not None:
                        count += await writing
                    writing = asyncio.ensure_future(ctx.db.write(store_batch(batch)))
                    batch = []
            if writing is not None:
                count += await writing
                writing = None
            if header is None:
                raise SyncError("empty snapshot")
            settings, cursor = header.settings, header.cursor
            write_last = store_batch(batch)

            def last(conn: sqlite3.Connection) -> int:
                stored = write_last(conn)
                build_phone_index(conn)
                if settings.version >= ctx.settings.version:
                    store.set_meta(conn, "settings", settings.model_dump(mode="json"))
                # Saved in the same transaction as the last cards: the snapshot is complete.
                store.set_meta(conn, "cursor", cursor)
                store.set_meta(conn, "cursor_card", None)
                # Every card now has the chain's current phone hash (after an upgrade).
                conn.execute("DELETE FROM meta WHERE key = 'phone_hashes_stale'")
                return stored

            count += await ctx.db.write(last)
            complete = True
        except SnapshotError as exc:
            raise SyncError(f"snapshot card {count + exc.line} refused: {exc}") from None
        finally:
            await self._end_bootstrap(writing, complete)
        if settings.version >= ctx.settings.version:
            ctx.settings = settings
        ctx.phone_hashes_stale = False
        log.info("bootstrapped %d cards from the snapshot at cursor %d", count, cursor)

    async def _end_bootstrap(self, writing: asyncio.Future[int] | None, complete: bool) -> None:
        """After a snapshot, stored or failed: no batch left running, the phone index back."""
        if writing is not None:
            # A failed download: let the batch being written finish (it is whole states).
            with contextlib.suppress(Exception):
                await writing
        if not complete:
            try:
                await self.ctx.db.write(build_phone_index)
            except Exception:
                # Lookups by phone keep going to the writer; the next start builds the index.
                log.exception("could not build the phone index again after a failed snapshot")
                return
        self.ctx.bootstrapping = False

    async def _store_states(
        self,
        states: list[CardState],
        *,
        settings: ProgramSettings | None = None,
        cursor: int | None = None,
        card: str | None = None,
    ) -> None:
        ctx = self.ctx

        def _write(conn: sqlite3.Connection) -> None:
            acked = int(store.get_meta(conn, "acked_seq") or 0)
            apply_card_states(conn, states, acked, ctx.clock.now(), ctx.config.store_id)
            if settings is not None and settings.version >= ctx.settings.version:
                store.set_meta(conn, "settings", settings.model_dump(mode="json"))
            if cursor is not None:
                # Saved in the same transaction as the data it covers.
                store.set_meta(conn, "cursor", cursor)
                store.set_meta(conn, "cursor_card", card)

        await ctx.db.write(_write)
        if settings is not None and settings.version >= ctx.settings.version:
            ctx.settings = settings

    async def _upload_until(self, target_seq: int) -> int:
        """Upload in bounded batches until ``target_seq`` is acknowledged; returns the checkpoint."""
        ctx = self.ctx
        checkpoint = 0
        while True:
            acked = int(store.get_meta(ctx.db.reader, "acked_seq") or 0)
            if acked >= target_seq:
                return checkpoint
            # The protocol takes at most UPLOAD_OPS_MAX operations a batch, whatever the setting
            # allows: a larger batch would be refused every round and the queue would never move.
            batch_ops = min(ctx.config.sync_batch_ops_max, UPLOAD_OPS_MAX)
            entries = store.entries_after(ctx.db.reader, acked, batch_ops)
            ops: list[Op] = []
            size = 0
            for entry in entries:
                op = Op(
                    seq=entry.seq,
                    op_id=entry.op_id,
                    created_at=entry.created_at,
                    operation=entry.operation,
                )
                size += len(op.model_dump_json())
                if ops and size > UPLOAD_BYTES_MAX:
                    break
                ops.append(op)
            if not ops:
                return checkpoint  # nothing after ``acked``: the target moved past the journal
            try:
                result = await self.client.upload(ops)
            except CentralRefused as exc:
                resume = exc.details.get("resume_from")
                if exc.details.get("reason") == "sync_gap" and isinstance(resume, int):
                    # The central server has less than we thought (restored from a backup):
                    # send again from where it stands; the journal keeps every operation.
                    log.warning("central server asks to resume from %d", resume)
                    await self._set_acked(resume - 1)
                    continue
                central_last = exc.details.get("last_applied_seq")
                if exc.code == "idempotency_conflict" and isinstance(central_last, int):
                    # Our numbers were used by other operations (a journal restored from a
                    # backup that recorded sales before its first round): renumber after them.
                    moved = await self._renumber(
                        central_last,
                        f"the central server holds seq {exc.details.get('seq')} of this store "
                        f"as another operation (restored from a backup, or a new machine)",
                    )
                    if moved is not None:
                        target_seq = moved.target(target_seq)
                        continue
                raise
            check_upload_answer(ops, result)
            await self._set_acked(result.acked_seq)
            checkpoint = max(checkpoint, result.checkpoint)
            rejected = [r for r in result.results if r.status == "rejected"]
            for item in rejected:
                ctx.metrics.op_rejected(item.reason)
                log.warning(
                    "operation %d rejected by the central server: %s", item.seq, item.reason
                )

    async def _set_acked(self, acked_seq: int) -> None:
        def _write(conn: sqlite3.Connection) -> int:
            store.set_meta(conn, "acked_seq", acked_seq)
            # The store keeps no names or phone numbers once the central server has them.
            removed = conn.execute(
                "UPDATE journal SET payload = json_set(payload, '$.phone', NULL, '$.profile', NULL) "
                "WHERE kind = 'register' AND seq <= ? AND json_extract(payload, '$.phone') IS NOT NULL",
                (acked_seq,),
            ).rowcount
            return int(removed)

        if await self.ctx.db.write(_write):
            # secure_delete zeroes them in the database file; the log's old frames go too.
            self.ctx.db.truncate_log_soon()

    async def _pull_until(self, checkpoint: int) -> datetime:
        """Pull pages of changes until the cursor includes ``checkpoint``; returns server time."""
        ctx = self.ctx
        cursor = int(store.get_meta(ctx.db.reader, "cursor") or 0)
        card = store.get_meta(ctx.db.reader, "cursor_card")
        for _ in range(PULL_PAGES_MAX):
            page = await self.client.changes(cursor, card)
            await self._store_states(
                page.cards, settings=page.settings, cursor=page.next_cursor, card=page.next_card
            )
            cursor, card = page.next_cursor, page.next_card
            if not page.more and cursor >= checkpoint:
                return page.server_time
        raise SyncError("the change feed did not end within a round")

    # --- scheduling ---------------------------------------------------------------------------

    async def quick_round(self, timeout_s: float) -> bool:
        """One round bounded in time (before refusing a redemption); True if it completed."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.round()
        except SyncError as exc:
            log.info("quick sync round did not complete: %s", exc)
            return False
        except TimeoutError:
            # Cut short: its last request (if any answered or failed) has said how the link is.
            log.info("quick sync round did not complete: no complete round within %g s", timeout_s)
            return False
        return True

    async def run(self) -> None:
        """Rounds forever: on schedule with jitter, retried with capped backoff after failures."""
        config = self.ctx.config
        if not self.client.configured:
            for warning in config.sync_warnings():
                log.warning("%s; the store serves tills", warning)
        while True:
            if not self.client.configured:
                await asyncio.sleep(TOKEN_WAIT_S)
                continue
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(SyncError),
                wait=wait_exponential_jitter(multiplier=2, max=config.sync_backoff_max_s, jitter=2),
                before_sleep=lambda state: log.warning(
                    "sync round failed (attempt %d): %s",
                    state.attempt_number,
                    _outcome(state.outcome.exception() if state.outcome else None),
                ),
            ):
                with attempt:
                    await self.round()
            await asyncio.sleep(config.sync_interval_s + random.uniform(0, config.sync_jitter_s))


def _outcome(exc: BaseException | None) -> str:
    """A failed round's reason for the log: a ``SyncError`` says it all, anything else by type."""
    if isinstance(exc, SyncError) and str(exc):
        return str(exc)
    return describe(exc) if exc is not None else "no exception recorded"
