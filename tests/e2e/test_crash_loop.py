"""A crash loop over the whole chain: a store agent and the central server as real processes under
a stream of tills' requests, each killed with SIGKILL at random moments (the agent, the central
server, or both at once), with the network between them cut and restored.

Customers are registered first; then tills sell (accrual only) and return some of their sales,
in full or in part, while the loop kills and cuts.  A request that gets no answer (the agent died
under it, or was down) has an unknown outcome, and the till retries it with the same ids until
it is answered, as a real till does.  At the end everything is restored and synced, and the
central ledger must hold every acknowledged sale and return exactly once, nothing else from the
tills, balances that the answers explain, and pass ``bonus-central check``.

Network cuts, through a proxy between the agent and the central server:

- ``refuse``: nothing listens where the central server should be (connections refused);
- ``silent``: connections are accepted and never answered, then reset when the cut ends;
- ``lost``: requests reach the central server, which commits them, and the answers are lost.

``BONUS_CRASH_LOOP_KILLS`` sets the number of kills (10 by default, about a minute per database);
``BONUS_CRASH_LOOP_SEED`` replays the loop's choices (timing still varies between runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web

from central import schema
from tests.e2e.processes import ServerProcess
from tests.e2e.proxy import Proxy, serve_proxy
from tests.e2e.system import System, ledger_balances, query
from tests.e2e.till import Till, kop, line

KILLS = int(os.environ.get("BONUS_CRASH_LOOP_KILLS", "10"))
SEED = int(os.environ.get("BONUS_CRASH_LOOP_SEED", str(random.randrange(2**32))))
STORE = "s1"
TILLS = 3
CUSTOMERS = 8
#: Seconds the chain runs between one restart and the next kill (or cut).
UP_S = (0.3, 2.0)
#: Seconds a killed process stays down.
DOWN_S = (0.0, 1.5)
CUT_SHARE = 0.5
#: Share of central kills timed to land while an upload is in flight.
KILL_IN_UPLOAD_SHARE = 0.5
UPLOAD_WAIT_S = 8.0
RETURN_SHARE = 0.2
THINK_S = 0.05
RETRY_S = 0.1
#: Longest a till keeps retrying one request: a restart takes a few seconds.
ANSWER_WAIT_S = 60.0
#: Longest a silent cut holds a connection (a cut always ends well before).
SILENT_HOLD_MAX_S = 60.0

# 5 to 10 s per kill (restarts dominate; a busy machine doubles it), plus registering and syncing.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120 + 15 * KILLS)]


class Cut(StrEnum):
    """How the network between the agent and the central server fails."""

    REFUSE = "refuse"
    SILENT = "silent"
    LOST = "lost"


@dataclass
class Link(Proxy):
    """The proxy of ``tests/e2e/proxy.py`` as the network between the agent and the central
    server, cut and restored by the test."""

    cut: Cut | None = None
    cuts: Counter[Cut] = field(default_factory=Counter)
    #: Set while nothing is cut; a silent cut holds its connections until then.
    whole: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when an upload passes (cleared by whoever waits for the next one).
    upload_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _listening: contextlib.AsyncExitStack | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/sync/v1/upload":
            self.upload_seen.set()
        if self.cut is Cut.SILENT:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SILENT_HOLD_MAX_S):
                    await self.whole.wait()
            return self._reset(request)
        try:
            response = await super().handle(request)
        except (aiohttp.ClientError, TimeoutError):
            # The central server is down: the agent sees its connection drop, as it would.
            return self._reset(request)
        if self.cut is Cut.LOST:
            return self._reset(request)
        return response

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        # No transport: the agent has gone already (killed while its request was held).
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=502)

    async def listen(self) -> None:
        """Forward to the central server."""
        if self._listening is None:
            stack = contextlib.AsyncExitStack()
            await stack.enter_async_context(serve_proxy(self))
            self._listening = stack
        self.whole.set()

    async def close(self) -> None:
        """Stop listening: connections are refused."""
        stack, self._listening = self._listening, None
        if stack is not None:
            await stack.aclose()

    async def cut_off(self, how: Cut) -> None:
        """Cut the network this way until ``restore``."""
        assert self.cut is None
        self.cut = how
        self.cuts[how] += 1
        self.whole.clear()
        if how is Cut.REFUSE:
            await self.close()

    async def restore(self) -> None:
        """The network works again."""
        self.cut = None
        await self.listen()


@dataclass(frozen=True)
class Sale:
    """A sale a till saw acknowledged."""

    card: str
    operation_id: str
    accrued_kop: int


@dataclass(frozen=True)
class Return:
    """A return a till saw acknowledged."""

    receipt_id: str
    card: str
    operation_id: str
    reversed_kop: int


@dataclass
class Book:
    """What the tills know."""

    sales: dict[str, Sale] = field(default_factory=dict)
    returns: dict[str, Return] = field(default_factory=dict)
    #: Requests answered only after retries (their first outcome was unknown).
    retried: int = 0
    #: Requests refused with a 4xx: none are expected.
    refused: list[tuple[str, dict[str, Any], int, Any]] = field(default_factory=list)


@dataclass
class Chaos:
    """What the loop did."""

    kills: Counter[str] = field(default_factory=Counter)
    both: int = 0
    kills_in_upload: int = 0


async def answer(till: Till, path: str, body: dict[str, Any], book: Book) -> dict[str, Any] | None:
    """The agent's answer to a request, retried with the same body while the outcome is unknown;
    None when refused."""
    deadline = time.monotonic() + ANSWER_WAIT_S
    attempts = 0
    while True:
        attempts += 1
        try:
            status, reply = await till.request("POST", path, body)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            status, reply = None, None
        if status == 200:
            if attempts > 1:
                book.retried += 1
            return dict(reply)
        if status is not None and 400 <= status < 500 and status != 429:
            book.refused.append((path, body, status, reply))
            return None
        if time.monotonic() > deadline:
            raise AssertionError(f"{till.name}: no answer to {path} {body} in {ANSWER_WAIT_S} s")
        await asyncio.sleep(RETRY_S)


async def till_loop(
    till: Till, cards: list[str], book: Book, rng: random.Random, stop: asyncio.Event
) -> None:
    """Sell and sometimes return until ``stop``; every request ends answered."""
    returnable: list[str] = []
    while not stop.is_set():
        if returnable and rng.random() < RETURN_SHARE:
            receipt_id = returnable.pop(rng.randrange(len(returnable)))
            body: dict[str, Any] = {"return_id": till.new_id("RET"), "receipt_id": receipt_id}
            if rng.random() < 0.5:
                body["lines"] = [{"line_id": "1", "qty": "0.5"}]
            reply = await answer(till, "/pos/v1/returns", body, book)
            if reply is not None:
                assert reply["return_id"] == body["return_id"], reply
                book.returns[body["return_id"]] = Return(
                    receipt_id,
                    book.sales[receipt_id].card,
                    str(reply["operation_id"]),
                    kop(reply["accrual_reversed"]),
                )
        else:
            card = rng.choice(cards)
            lines = [
                line(f"{rng.randint(50, 5000)}.{rng.randint(0, 99):02d}", str(k + 1))
                for k in range(rng.randint(1, 3))
            ]
            body = {"receipt_id": till.new_id("R"), "card": card, "lines": lines, "redeem": "0"}
            reply = await answer(till, "/pos/v1/receipts", body, book)
            if reply is not None:
                assert reply["receipt_id"] == body["receipt_id"], reply
                book.sales[body["receipt_id"]] = Sale(
                    card, str(reply["operation_id"]), kop(reply["accrued"])
                )
                returnable.append(body["receipt_id"])
        await asyncio.sleep(rng.uniform(0, THINK_S))


async def wait_for_upload(link: Link) -> bool:
    """Wait for the next upload through the link; False if none came in time."""
    link.upload_seen.clear()
    try:
        async with asyncio.timeout(UPLOAD_WAIT_S):
            await link.upload_seen.wait()
    except TimeoutError:
        return False
    return True


async def chaos(system: System, agent: ServerProcess, link: Link, rng: random.Random) -> Chaos:
    """Kill, cut, restart and restore, ``KILLS`` times."""
    done = Chaos()
    for _ in range(KILLS):
        await asyncio.sleep(rng.uniform(*UP_S))
        cut = rng.random() < CUT_SHARE
        if cut:
            await link.cut_off(rng.choice(list(Cut)))
            await asyncio.sleep(rng.uniform(*UP_S))
        victims = rng.choice([[agent], [system.central], [agent, system.central]])
        in_upload = system.central in victims and not cut and rng.random() < KILL_IN_UPLOAD_SHARE
        # Land in the middle of the central server's commit of a batch.
        if in_upload and await wait_for_upload(link):
            await asyncio.sleep(rng.uniform(0, 0.03))
            done.kills_in_upload += 1
        await asyncio.gather(*(victim.kill() for victim in victims))
        done.kills.update(victim.name for victim in victims)
        done.both += len(victims) == 2
        await asyncio.sleep(rng.uniform(*DOWN_S))
        if cut and rng.random() < 0.5:
            await link.restore()  # the network is back before the processes are
        for victim in victims:
            victim.spawn()
        await asyncio.gather(*(victim.wait_ready() for victim in victims))
        if cut:
            await link.restore()
    return done


@contextlib.asynccontextmanager
async def linked(link: Link) -> AsyncIterator[Link]:
    """The link listening; closed at the end whatever it was doing."""
    await link.listen()
    try:
        yield link
    finally:
        link.whole.set()
        await link.close()


async def test_acknowledged_operations_survive_crashes_and_cuts(system: System) -> None:
    rng = random.Random(SEED)
    await system.prepare([STORE])
    await system.central.start()
    async with linked(Link(system.central.url)) as link:
        agent = system.agent(STORE, central_url=link.url)
        started = datetime.now(UTC)
        await system.start_agents(STORE)
        # The first round adopts the chain's phone key; registrations come after it.
        await system.wait_synced(STORE, since=started)
        cards = [await system.till(STORE).register(f"917{i:07d}") for i in range(CUSTOMERS)]

        book = Book()
        stop = asyncio.Event()
        tills = [
            Till(
                system.session,
                agent.url,
                agent.messages_path,
                name=f"loop{i}",
                register_id=f"till-{i}",
            )
            for i in range(TILLS)
        ]
        workers = [
            asyncio.create_task(till_loop(till, cards, book, random.Random(f"{SEED}-{i}"), stop))
            for i, till in enumerate(tills)
        ]
        try:
            done = await chaos(system, agent, link, rng)
        except BaseException:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        stop.set()
        await asyncio.gather(*workers)
        await link.restore()
        await system.settle(STORE)

        cuts = ", ".join(f"{how} {n}" for how, n in sorted(link.cuts.items())) or "none"
        print(
            f"\ncrash loop, seed {SEED}, {system.database_url.split('+', 1)[0]}: "
            f"kills: agent {done.kills[agent.name]}, central {done.kills[system.central.name]} "
            f"({done.kills_in_upload} during an upload), both at once {done.both}; "
            f"network cuts: {cuts}; acknowledged: {len(book.sales)} sales, "
            f"{len(book.returns)} returns ({book.retried} answered only on a retry)"
        )
        assert sum(done.kills.values()) >= KILLS
        assert not book.refused, book.refused[:5]
        await check_ledger(system, book)


async def check_ledger(system: System, book: Book) -> None:
    """Every acknowledged operation once in the central ledger, nothing else from the tills."""
    url = system.database_url
    ops = await query(
        url,
        sa.select(schema.store_ops.c.seq, schema.store_ops.c.op_id, schema.store_ops.c.status)
        .where(schema.store_ops.c.store_id == STORE)
        .order_by(schema.store_ops.c.seq),
    )
    # Every operation of the store's journal once, in order, with none missing.
    assert [row.seq for row in ops] == list(range(1, len(ops) + 1))
    rejected = [row for row in ops if row.status != "applied"]
    assert not rejected, rejected[:5]
    op_ids = Counter(row.op_id for row in ops)
    assert max(op_ids.values()) == 1
    acked_ops = [sale.operation_id for sale in book.sales.values()]
    acked_ops += [ret.operation_id for ret in book.returns.values()]
    missing = [op_id for op_id in acked_ops if op_id not in op_ids]
    assert not missing, f"{len(missing)} acknowledged operations are not in the ledger"

    receipts = await query(
        url,
        sa.select(schema.receipts.c.receipt_id).where(schema.receipts.c.store_id == STORE),
    )
    # Every acknowledged sale, and no sale the tills did not see acknowledged.
    assert sorted(row.receipt_id for row in receipts) == sorted(book.sales)

    rows = await query(
        url,
        sa.select(
            schema.transactions.c.op_id,
            schema.transactions.c.kind,
            schema.transactions.c.receipt_id,
            schema.transactions.c.amount_kop,
        ).where(schema.transactions.c.store_id == STORE),
    )
    by_op: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        by_op.setdefault((row.op_id, row.kind), []).append(int(row.amount_kop))
        assert row.receipt_id in book.sales, row
    for sale in book.sales.values():
        expected = [sale.accrued_kop] if sale.accrued_kop else None
        assert by_op.get((sale.operation_id, "accrual")) == expected, sale
    for ret in book.returns.values():
        expected = [-ret.reversed_kop] if ret.reversed_kop else None
        assert by_op.get((ret.operation_id, "accrual_reversal")) == expected, ret
    kinds = {kind for _, kind in by_op}
    assert kinds <= {"accrual", "accrual_reversal"}, kinds

    # Balances follow from the answers alone: accruals less reversals, per card.
    expected_kop: Counter[str] = Counter()
    for sale in book.sales.values():
        expected_kop[sale.card] += sale.accrued_kop
    for ret in book.returns.values():
        expected_kop[ret.card] -= ret.reversed_kop
    balances = await ledger_balances(url)
    assert {card: kop_ for card, kop_ in balances.items() if kop_} == {
        card: kop_ for card, kop_ in expected_kop.items() if kop_
    }
    await system.check_cli()
