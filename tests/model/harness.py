"""The real system for the model test: one central server and two store agents in-process.

The central server runs on SQLite in a temporary directory behind an aiohttp ``TestServer``; each
agent is a ``TestClient`` over ``agent.app.create_app`` with its own ``FakeClock``, talking to the
central server over real HTTP.  Time is the test's: the agents' clocks and the central server's
clock (``central.api.now``, patched for the life of the system) move only when the test says.

The agents' background sync loops are stopped at start-up, so that a sync round happens only when
the test asks for one (``Till.sync``) or when the agent itself tries a quick round before refusing
a redemption for staleness, which is the behaviour under test.  A store goes offline by pointing its
``central_url`` at a local port that refuses connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

import central.api
from agent import store as agent_store
from agent.app import SYNCER_KEY, create_app
from agent.clock import FakeClock
from agent.config import AgentConfig, ProviderConfig
from agent.context import AgentContext
from agent.routes import CTX_KEY
from agent.sync import Syncer, SyncError
from central import schema
from central.api import DB_KEY
from central.app import create_app as create_central
from central.db import Database
from central.invariants import InvariantReport, check_invariants
from central.program import set_settings
from central.stores import add_store
from shared.journal import Return as JournalReturn
from shared.journal import Sale as JournalSale
from shared.protocol import AuthorizeRequest, Op
from tests.phonekeys import central_config, export_key_file

HEADERS = {"X-Register-Id": "till-1"}


def roubles(kop: int) -> str:
    """Kopecks as the exact rouble text a till sends."""
    assert kop >= 0
    return f"{kop // 100}.{kop % 100:02d}"


def kop(value: Any) -> int:
    """A rouble amount from an answer (a JSON number) in kopecks, exactly."""
    from decimal import Decimal

    exact = Decimal(str(value)) * 100
    assert exact == exact.to_integral_value(), value
    return int(exact)


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass
class Till:
    """One store's agent and the HTTP calls its till makes."""

    store_id: str
    client: TestClient[Any, Any]
    clock: FakeClock
    config: AgentConfig
    messages_path: Path

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        headers = dict(HEADERS)
        if data is not None:
            headers["Content-Type"] = "application/json"
        response = await self.client.request(method, path, data=data, headers=headers)
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()

    async def sync(self) -> bool:
        """One sync round; False when it failed (the store is offline)."""
        try:
            await self.client.app[SYNCER_KEY].round()
        except SyncError:
            return False
        return True

    def code_of(self, verification_id: str) -> str:
        """The code the customer received, as the file provider wrote it."""
        rows = [
            json.loads(row)
            for row in self.messages_path.read_text(encoding="utf-8").splitlines()
            if row.strip()
        ]
        sent = [row for row in rows if row["request_id"] == verification_id]
        assert len(sent) == 1, sent
        return str(sent[0]["code"])

    def local_refund_overflows(self, receipt_id: str, refund_kop: int, day: date) -> bool:
        """Whether giving back ``refund_kop`` of a receipt's redemption to the lots the store
        itself took them from would overfill one of them (known bug "local-refund-lots").

        Reads the agent's own tables (read-only): the receipt's local allocations and the card's
        working wallet, which after a pull are the central server's lots.
        """
        uri = f"file:{self.config.db_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            row = conn.execute(
                "SELECT card, allocations, refunded_kop FROM receipts WHERE receipt_id = ?",
                (receipt_id,),
            ).fetchone()
            assert row is not None, receipt_id
            card, allocations, refunded = row[0], json.loads(row[1]), int(row[2])
            (wallet,) = conn.execute(
                "SELECT wallet FROM cards WHERE number = ?", (card,)
            ).fetchone()
        lots = {lot["id"]: lot for lot in json.loads(wallet)["lots"]}
        skip, left = refunded, refund_kop
        for lot_id, amount in reversed(allocations):
            from_skip = min(skip, amount)
            skip -= from_skip
            given = min(amount - from_skip, left)
            left -= given
            lot = lots.get(lot_id)
            if not given or lot is None:
                continue
            if lot["expires_on"] and date.fromisoformat(lot["expires_on"]) < day:
                continue
            if lot["remaining"] + given > lot["amount"]:
                return True
        return False

    async def confirmed_code(self, card: str, phone: str, purpose: str = "redemption") -> str:
        """Ask for a code, read it from the messages and confirm it; the verification's id."""
        status, body = await self.call(
            "POST", "/pos/v1/verifications", {"card": card, "purpose": purpose, "phone": phone}
        )
        assert status == 201, body
        verification_id = str(body["verification_id"])
        await self.confirm(verification_id)
        return verification_id

    async def confirm(self, verification_id: str) -> None:
        status, body = await self.call(
            "POST",
            f"/pos/v1/verifications/{verification_id}/confirm",
            {"code": self.code_of(verification_id)},
        )
        assert status == 200, body
        assert body == {"verification_id": verification_id, "confirmed": True}, body


@dataclass(frozen=True)
class CentralLot:
    amount: int
    remaining: int
    created_on: date
    expires_on: date | None
    active_from: date | None
    source: str


@dataclass(frozen=True)
class CentralHold:
    amount: int
    expires_at: datetime
    state: str


@dataclass
class CentralCard:
    """A card as the central database holds it."""

    status: str
    merged_into: str | None
    debt: int
    last_purchase_on: date | None
    lots: dict[str, CentralLot]
    holds: dict[str, CentralHold]


@dataclass
class CentralState:
    cards: dict[str, CentralCard]
    last_applied_seq: dict[str, int]
    store_ops: dict[str, int]
    report: InvariantReport
    #: per store: (applied sales and returns, operations booked with other figures than its)
    figures: dict[str, tuple[int, int]]


def tamper_with(syncer: Syncer, ctx: AgentContext) -> None:
    """Make a store dishonest on the wire: every figure it uploads claims more points for the
    customer than its till computed, and every authorisation it asks for claims pending credits
    it does not have and the release of every other store's authorisation hold it can see.

    An honest store's debits are left as they are: a store that hides its own pending debits can
    always make the central server approve a double spend (it becomes debt); that is the limit
    of online authorisation, not something to model.
    """
    upload = syncer.client.upload
    authorize = syncer.client.authorize

    async def dishonest_upload(ops: list[Op]) -> Any:
        return await upload([_inflated(op) for op in ops])

    async def dishonest_authorize(request: AuthorizeRequest) -> Any:
        others = [
            hold.hold_id
            for hold in _replica_holds(ctx, request.card)
            if hold.hold_id.startswith("auth:")
            and not hold.hold_id.startswith(f"auth:{ctx.config.store_id}:")
        ]
        claim = (
            request.pending_delta + 10**12 if request.pending_delta >= 0 else request.pending_delta
        )
        return await authorize(
            request.model_copy(
                update={"pending_delta": claim, "releases": [*request.releases, *others]}
            )
        )

    syncer.client.upload = dishonest_upload  # type: ignore[method-assign]
    syncer.client.authorize = dishonest_authorize  # type: ignore[method-assign]
    ctx.central = dishonest_authorize


def _inflated(op: Op) -> Op:
    operation = op.operation
    if isinstance(operation, JournalSale):
        lines = tuple(
            line.model_copy(update={"accrued_kop": line.accrued_kop * 1000 + 1, "redeemed_kop": 0})
            for line in operation.lines
        )
        operation = operation.model_copy(update={"lines": lines})
    elif isinstance(operation, JournalReturn):
        operation = operation.model_copy(
            update={
                "accrual_reversed_kop": 0,
                "redemption_refunded_kop": operation.redemption_refunded_kop * 100 + 1,
            }
        )
    return op.model_copy(update={"operation": operation})


def _replica_holds(ctx: AgentContext, number: str) -> tuple[Any, ...]:
    card = agent_store.find_card(ctx.db.reader, number)
    return () if card is None else card.wallet.holds


class System:
    """The central server and the stores' agents, started and stopped together."""

    def __init__(
        self,
        root: Path,
        store_ids: tuple[str, ...],
        wall: datetime,
        dishonest: frozenset[str] = frozenset(),
    ) -> None:
        self.root = root
        self.store_ids = store_ids
        self.dishonest = dishonest
        self.wall = wall
        self.central: TestServer | None = None
        self.tills: dict[str, Till] = {}
        self._online_url = ""
        self._closed_port = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._saved_now: Callable[[], datetime] | None = None

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # A bound port that never listens: connecting to it is refused at once.
        self._closed_port.bind(("127.0.0.1", 0))
        self._saved_now = central.api.now
        central.api.now = lambda: self.wall
        url = f"sqlite+aiosqlite:///{self.root / 'central.db'}"
        config = central_config(url)
        self.central = TestServer(create_central(config, run_expiry=False))
        await self.central.start_server()
        self._online_url = str(self.central.make_url(""))
        tokens = {}
        async with self.db.write() as conn:
            for store_id in self.store_ids:
                tokens[store_id] = await add_store(conn, store_id, store_id, self.wall)
        await export_key_file(url, self.root / "phone-key")
        for store_id in self.store_ids:
            self.tills[store_id] = await self._start_agent(store_id, tokens[store_id])

    async def _start_agent(self, store_id: str, token: str) -> Till:
        data_dir = self.root / store_id
        messages = data_dir / "messages.jsonl"
        # Without a token the agent's sync loop only waits; it is stopped below and the token
        # set afterwards, so that no round ever runs unless the test (or a quick round) asks.
        config = AgentConfig(
            store_id=store_id,
            data_dir=data_dir,
            central_url=self._online_url,
            sync_interval_s=3600,
            sync_jitter_s=0,
            phone_key_file=self.root / "phone-key",
            provider=ProviderConfig(kind="file", file_path=messages),
        )
        clock = FakeClock(wall=self.wall)
        before = {task for task in asyncio.all_tasks() if task.get_name() == "sync"}
        client = TestClient(TestServer(create_app(config, clock=clock)))
        await client.start_server()
        loops = [t for t in asyncio.all_tasks() if t.get_name() == "sync" and t not in before]
        assert len(loops) == 1, loops
        loops[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loops[0]
        config.central_token = SecretStr(token)
        if store_id in self.dishonest:
            tamper_with(client.app[SYNCER_KEY], client.app[CTX_KEY])
        return Till(store_id, client, clock, config, messages)

    async def close(self) -> None:
        for till in self.tills.values():
            await till.client.close()
        self.tills = {}
        if self.central is not None:
            await self.central.close()
            self.central = None
        if self._saved_now is not None:
            central.api.now = self._saved_now
            self._saved_now = None
        self._closed_port.close()

    # --- the outside world --------------------------------------------------------------------

    @property
    def db(self) -> Database:
        assert self.central is not None
        return self.central.app[DB_KEY]

    def advance(self, seconds: float) -> None:
        """Real time passes for everyone: the central clock and every store's clocks."""
        for till in self.tills.values():
            till.clock.advance(seconds)
            assert till.clock.wall == self.tills[self.store_ids[0]].clock.wall
        self.wall = self.tills[self.store_ids[0]].clock.wall

    def set_online(self, store_id: str, online: bool) -> None:
        port = self._closed_port.getsockname()[1]
        self.tills[store_id].config.central_url = (
            self._online_url if online else f"http://127.0.0.1:{port}/"
        )

    async def set_program(self, **changes: Any) -> None:
        async with self.db.write() as conn:
            await set_settings(conn, changes, self.wall, by="model-test")

    async def central_state(self) -> CentralState:
        """Every card with its lots and holds, the stores' sequence numbers, the invariants."""
        async with self.db.read() as conn:
            cards = {
                row.number: CentralCard(
                    status=row.status,
                    merged_into=row.merged_into,
                    debt=int(row.debt_kop),
                    last_purchase_on=row.last_purchase_on,
                    lots={},
                    holds={},
                )
                for row in (await conn.execute(sa.select(schema.cards))).all()
            }
            for row in (await conn.execute(sa.select(schema.lots))).all():
                cards[row.card].lots[row.lot_id] = CentralLot(
                    amount=int(row.amount_kop),
                    remaining=int(row.remaining_kop),
                    created_on=row.created_on,
                    expires_on=row.expires_on,
                    active_from=row.active_from,
                    source=row.source,
                )
            for row in (await conn.execute(sa.select(schema.holds))).all():
                cards[row.card].holds[row.hold_id] = CentralHold(
                    amount=int(row.amount_kop), expires_at=aware(row.expires_at), state=row.state
                )
            applied = {
                row.store_id: int(row.last_applied_seq)
                for row in (await conn.execute(sa.select(schema.stores))).all()
            }
            ops = {
                row.store_id: int(row.n)
                for row in (
                    await conn.execute(
                        sa.select(schema.store_ops.c.store_id, sa.func.count().label("n")).group_by(
                            schema.store_ops.c.store_id
                        )
                    )
                ).all()
            }
            report = await check_invariants(conn)
            figures = {}
            for row in (await conn.execute(sa.select(schema.stores))).all():
                priced = await conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(schema.store_ops)
                    .where(
                        schema.store_ops.c.store_id == row.store_id,
                        schema.store_ops.c.kind.in_(["sale", "return"]),
                        schema.store_ops.c.status == "applied",
                    )
                )
                figures[row.store_id] = (int(priced or 0), int(row.ops_differing))
        return CentralState(cards, applied, ops, report, figures)
