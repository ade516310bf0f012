"""What every operation of the agent needs: the database, configuration, clocks, the program's
settings as last synced, and the redemption rule (fresh sync, offline caps)."""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from agent import store
from agent.clock import Clock
from agent.config import AgentConfig
from agent.db import Database
from agent.freshness import SyncMark, is_fresh, sync_age_s
from agent.metrics import AgentMetrics
from agent.models import Refusal
from service.phonekey import PhoneHashBusy, PhoneHasher
from shared.errors import MESSAGES_RU, BonusError, ErrorCode
from shared.journal import Registration
from shared.lots import local_date
from shared.protocol import STORE_STATES, AuthorizeRequest, AuthorizeResponse
from shared.settings import ProgramSettings

log = logging.getLogger(__name__)

#: A quick sync round the agent may try before refusing a redemption for staleness.
QuickRound = Callable[[float], Awaitable[bool]]
#: Ask the central server to authorise a redemption; None when it did not answer in time.
CentralAuthorize = Callable[[AuthorizeRequest], Awaitable[AuthorizeResponse | None]]


def request_hash(body: dict[str, Any]) -> str:
    """The fingerprint of a validated request, to tell a retry from a different request."""
    return hashlib.sha256(store.dumps(body).encode("utf-8")).hexdigest()


@dataclass
class Freshness:
    """The sync state that decides redemption, as read from the meta table."""

    mark: SyncMark | None
    wall_high_water: datetime | None


@dataclass
class AgentContext:
    """The agent's resources and cached state, shared by the operations."""

    config: AgentConfig
    db: Database
    clock: Clock
    settings: ProgramSettings = field(default_factory=ProgramSettings)
    #: Hashes phones with the chain's key (from outside the database); None without a key.
    phone_hasher: PhoneHasher | None = None
    #: Why there is no usable key (shown in the status), None when there is one.
    phone_key_problem: str | None = None
    #: The key id the central server announced last (kept in meta across restarts).
    central_phone_key_id: str | None = None
    #: The replica's phone hashes are of a key no longer used (an upgraded store before its
    #: new snapshot): finding a card by phone would wrongly answer "not found".
    phone_hashes_stale: bool = False
    code_key: bytes = b""
    freshness: Freshness = field(default_factory=lambda: Freshness(None, None))
    quick_round: QuickRound | None = None
    central: CentralAuthorize | None = None
    #: Whether the last request to the central server succeeded (a round's, or an
    #: authorisation's): a timed-out authorisation makes the store "unreachable" at once.
    online: bool = False
    #: The last failed request to the central server, and when (kept after a success).
    last_central_error: str | None = None
    last_central_error_at: datetime | None = None
    last_upload_error: str | None = None
    last_download_error: str | None = None
    central_clock_offset_s: float | None = None
    #: A snapshot is being stored and the replica's phone index is down: lookups by phone scan
    #: the cards in the writer thread rather than on the event loop.
    bootstrapping: bool = False
    #: Phones seen in this process (card → 10 digits), to send codes without storing numbers.
    phones: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: This store's state at the central server (active, disabled, closing, closed), as its
    #: last answer said (kept in meta across restarts).
    store_state: str = "active"
    #: What ``GET /metrics`` counts (``agent/metrics.py``).
    metrics: AgentMetrics = field(default_factory=AgentMetrics)

    def note_central(self, error: str | None) -> None:
        """The outcome of one request to the central server: None when it succeeded."""
        self.online = error is None
        if error is not None:
            self.last_central_error = error
            self.last_central_error_at = self.clock.now()

    async def load(self) -> None:
        """Read the settings and the sync state from the database."""
        conn = self.db.reader
        settings = store.get_meta(conn, "settings")
        if settings is not None:
            self.settings = ProgramSettings.model_validate(settings)
        # The key of code hashes is the store's own and never changes; it needs no protection
        # beyond the database's (a code is four digits, valid for minutes).
        code_key = store.get_meta(conn, "code_key")
        if code_key is None:
            code_key = secrets.token_hex(32)
            await self.db.write(lambda wconn: store.set_meta(wconn, "code_key", code_key))
        self.code_key = bytes.fromhex(code_key)
        mark = store.get_meta(conn, "sync_mark")
        high_water = store.get_meta(conn, "wall_high_water")
        self.freshness = Freshness(
            SyncMark.from_json(mark) if mark else None,
            datetime.fromisoformat(high_water) if high_water else None,
        )
        self.central_phone_key_id = store.get_meta(conn, "central_phone_key_id")
        self.phone_hashes_stale = bool(store.get_meta(conn, "phone_hashes_stale"))
        self.store_state = str(store.get_meta(conn, "store_state") or "active")
        await self.rehash_pending_registrations()

    async def note_store_state(self, state: str) -> None:
        """The central server told this store's state: remember it (durably when it changed)."""
        if state not in STORE_STATES or state == self.store_state:
            return
        await self.db.write(lambda conn: store.set_meta(conn, "store_state", state))
        log.warning("the central server says this store is %s (was %s)", state, self.store_state)
        self.store_state = state

    def closed_refusal(self) -> BonusError | None:
        """Why no new operation may be recorded here (a store being closed), or None."""
        if self.store_state in ("closing", "closed"):
            return BonusError(ErrorCode.STORE_CLOSED, store_state=self.store_state)
        return None

    async def rehash_pending_registrations(self) -> None:
        """Cards registered here and not yet acknowledged, hashed with another key (or none,
        after the upgrade that removed the old one): hashed again from their registrations,
        which carry the phone until the central server has it."""
        if self.phone_hasher is None:
            return
        key = self.phone_hasher.key
        conn = self.db.reader
        acked = int(store.get_meta(conn, "acked_seq") or 0)
        stale: dict[str, str] = {}
        for entry in store.entries_after(conn, acked, 1_000_000):
            registration = entry.operation
            if not isinstance(registration, Registration) or registration.phone is None:
                continue
            card = store.find_card(conn, entry.card)
            if card is not None and card.status != "merged" and not key.made_it(card.phone_hash):
                stale[entry.card] = registration.phone
        if not stale:
            return
        hashes = await self.phone_hasher.hash_many(stale.values())

        def _write(wconn: sqlite3.Connection) -> None:
            for number, phone10 in stale.items():
                wconn.execute(
                    "UPDATE cards SET phone_hash = ? WHERE number = ?", (hashes[phone10], number)
                )

        await self.db.write(_write)
        log.info(
            "hashed the phones of %d cards registered here with key %s", len(stale), key.key_id
        )

    def phone_refusal(self) -> BonusError | None:
        """Why nothing can be done by phone right now, or None."""
        if self.phone_hasher is None:
            return BonusError(
                ErrorCode.PHONE_LOOKUP_UNAVAILABLE,
                reason="no_phone_key",
                problem=self.phone_key_problem,
            )
        key_id = self.phone_hasher.key.key_id
        if self.central_phone_key_id is not None and self.central_phone_key_id != key_id:
            return BonusError(
                ErrorCode.PHONE_LOOKUP_UNAVAILABLE,
                "Поиск по телефону недоступен: на сервере аптеки не тот ключ телефонов. "
                "Найдите карту по номеру и сообщите в техподдержку",
                reason="wrong_phone_key",
                key_id=key_id,
                central_key_id=self.central_phone_key_id,
            )
        if self.phone_hashes_stale:
            return BonusError(
                ErrorCode.PHONE_LOOKUP_UNAVAILABLE,
                "Поиск по телефону временно недоступен: данные карт обновляются после "
                "обновления программы. Найдите карту по номеру или повторите позже",
                reason="replica_updating",
            )
        return None

    async def hash_phone(self, phone10: str) -> str:
        """The keyed, slow hash under which the replica finds a phone's card (in a thread).

        Refused with ``phone_lookup_unavailable`` when there is no usable key, and as busy when
        too many hashes wait already.
        """
        refusal = self.phone_refusal()
        if refusal is not None:
            raise refusal
        assert self.phone_hasher is not None
        try:
            return await self.phone_hasher.hash(phone10)
        except PhoneHashBusy as exc:
            raise BonusError(ErrorCode.SERVICE_BUSY, reason="phone_hashes_waiting") from exc

    async def record_high_water(self) -> None:
        """Remember the latest wall time seen, so a clock set back after a reboot is noticed."""
        now = self.clock.now()
        if self.freshness.wall_high_water is None or now > self.freshness.wall_high_water:
            await self.db.write(
                lambda conn: store.set_meta(conn, "wall_high_water", now.isoformat())
            )
            self.freshness.wall_high_water = now

    async def record_sync(self, central_at: datetime) -> None:
        """A complete sync (write checkpoint reached): store its moment durably."""
        mark = SyncMark(
            central_at=central_at,
            wall_at=self.clock.now(),
            boot_id=self.clock.boot_id,
            monotonic_s=self.clock.monotonic_s(),
        )
        await self.db.write(lambda conn: store.set_meta(conn, "sync_mark", mark.to_json()))
        self.freshness.mark = mark

    def pending_ops(self) -> int:
        """Operations recorded here that the central server has not acknowledged yet."""
        conn = self.db.reader
        acked = int(store.get_meta(conn, "acked_seq") or 0)
        return store.last_seq(conn) - acked

    def today(self) -> date:
        """Today in the program's time zone."""
        return local_date(self.clock.now(), self.settings.zone)

    def sync_age_s(self) -> float | None:
        """Seconds since the last complete sync; None when unknown (treated as stale)."""
        return sync_age_s(
            self.freshness.mark,
            boot_id=self.clock.boot_id,
            monotonic_s=self.clock.monotonic_s(),
            wall_now=self.clock.now(),
            wall_high_water=self.freshness.wall_high_water,
        )

    def last_sync_at(self) -> datetime | None:
        """When the last complete sync happened, by the central server's clock."""
        return self.freshness.mark.central_at if self.freshness.mark else None

    def redemption_fresh(self) -> bool:
        """Whether the last complete sync is recent enough to redeem."""
        return is_fresh(self.sync_age_s(), self.settings.sync_staleness_max_s)

    def redemption_refusal(self) -> BonusError | None:
        """Why redemption is refused right now, or None when it is allowed."""
        if self.store_state == "disabled":
            return BonusError(ErrorCode.STORE_DISABLED)
        closed = self.closed_refusal()
        if closed is not None:
            return closed
        if self.redemption_fresh():
            return None
        age = self.sync_age_s()
        return BonusError(
            ErrorCode.REDEMPTION_STALE_SYNC,
            reason="never_synced" if self.freshness.mark is None else "sync_stale",
            sync_age_s=None if age is None else round(age, 1),
            sync_age_max_s=self.settings.sync_staleness_max_s,
        )

    async def require_fresh(self) -> None:
        """Allow a redemption only on a fresh sync, after one quick round if it is stale."""
        if self.store_state != "active":
            refusal = self.redemption_refusal()
            if refusal is not None:
                raise refusal
        if self.redemption_fresh():
            return
        if self.quick_round is not None:
            await self.quick_round(self.config.sync_quick_round_timeout_s)
        refusal = self.redemption_refusal()
        if refusal is not None:
            raise refusal

    def remember_phone(self, card: str, phone10: str) -> None:
        """Keep a phone in memory for an hour, to send a code for this card."""
        now = self.clock.monotonic_s()
        if len(self.phones) > 10_000:
            self.phones = {k: v for k, v in self.phones.items() if now - v[1] < 3600}
        self.phones[card] = (phone10, now)

    def known_phone(self, card: str) -> str | None:
        """A phone seen for this card within the last hour."""
        entry = self.phones.get(card)
        if entry is None or self.clock.monotonic_s() - entry[1] > 3600:
            return None
        return entry[0]


def refusal_body(error: BonusError | None) -> Refusal | None:
    """A refusal as the ``redemption_refusal`` field of an answer."""
    if error is None:
        return None
    return Refusal(code=str(error.code), message=MESSAGES_RU[error.code])
