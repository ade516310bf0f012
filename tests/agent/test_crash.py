"""Crash test with a real agent process: SIGKILL during a stream of sales, restart, check.

Several tills commit sales against one card while the agent is killed at a random moment.  What
a till saw acknowledged (a 200 answer) must survive every crash exactly once; a request in flight
at the kill is unknown, and its retry after the restart must either find the recorded sale (the
same operation id) or record it once.  After each restart the SQLite file, opened read-only, and
the agent's answers are checked against what the tills know.

``BONUS_CRASH_KILLS`` raises the number of kills for long runs; ``BONUS_CRASH_SEED`` replays one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.agent.conftest_process import AgentProcess

KILLS_DEFAULT = 25
KILLS = int(os.environ.get("BONUS_CRASH_KILLS", KILLS_DEFAULT))
TILLS = 4
KILL_DELAY_MS = (50, 400)
#: Timeout of one till request; a healthy agent answers in milliseconds.
REQUEST_TIMEOUT_S = 10.0
PHONE = "+7 (912) 345-67-89"

# About a second per kill (the restart dominates); long runs get a timeout to match.
pytestmark = pytest.mark.timeout(max(120, 5 * KILLS))


@dataclass(frozen=True)
class Ack:
    """A sale a till saw acknowledged."""

    operation_id: str
    accrued_kop: int
    till: str


@dataclass
class Tills:
    """What the tills know: every request sent, what was acknowledged, what is unknown."""

    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    acked: dict[str, Ack] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    #: Receipt ids in the order each till saw them acknowledged.
    order: dict[str, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def ack(self, receipt_id: str, answer: dict[str, Any], till: str) -> None:
        assert answer["receipt_id"] == receipt_id, answer
        self.acked[receipt_id] = Ack(answer["operation_id"], to_kop(answer["accrued"]), till)
        self.order.setdefault(till, []).append(receipt_id)

    def settle(self, receipt_id: str, answer: dict[str, Any]) -> None:
        """An unknown sale answered by its retry (retries run concurrently: no order)."""
        assert answer["receipt_id"] == receipt_id, answer
        self.acked[receipt_id] = Ack(answer["operation_id"], to_kop(answer["accrued"]), "retry")
        self.unknown.discard(receipt_id)


@dataclass(frozen=True)
class JournalRow:
    seq: int
    op_id: str
    kind: str
    idem_key: str
    card: str
    accrued_kop: int


def to_kop(amount: Decimal | int) -> int:
    kop = Decimal(amount) * 100
    assert kop == kop.to_integral_value(), f"{amount} has more than 2 decimals"
    return int(kop)


def loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def sale_body(receipt_id: str, card: str, rng: random.Random) -> dict[str, Any]:
    lines = []
    for index in range(rng.randint(1, 3)):
        qty = rng.randint(1, 3)
        price_kop = rng.randint(100, 500_000)
        amount_kop = price_kop * qty
        lines.append(
            {
                "line_id": str(index + 1),
                "sku": f"SKU{rng.randint(1, 500)}",
                "name": "Товар",
                "qty": qty,
                "price": f"{price_kop // 100}.{price_kop % 100:02d}",
                "amount": f"{amount_kop // 100}.{amount_kop % 100:02d}",
                "vital": rng.random() < 0.3,
            }
        )
    return {"receipt_id": receipt_id, "card": card, "lines": lines, "redeem": 0}


# --- talking to the agent ----------------------------------------------------------------------


def till_session(till: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"X-Register-Id": till},
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        connector=aiohttp.TCPConnector(limit=1),
    )


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with session.post(url, json=body) as answer:
        return answer.status, loads(await answer.text())


async def register(agent: AgentProcess) -> str:
    async with till_session("till-reg") as session:
        status, answer = await post(
            session,
            agent.base_url + "/pos/v1/customers",
            {"phone": PHONE, "consents": {"personal_data": True}},
        )
    # The pending verification (if the program asks for one) is not needed for sales.
    assert status in (200, 201), answer
    return str(answer["card"]["number"])


async def run_till(
    agent: AgentProcess,
    till: str,
    card: str,
    round_no: int,
    tills: Tills,
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """Commit sales one after another until the agent dies under this till."""
    url = agent.base_url + "/pos/v1/receipts"
    async with till_session(till) as session:
        number = 0
        while not stop.is_set():
            number += 1
            receipt_id = f"k{round_no}-{till}-{number}"
            body = sale_body(receipt_id, card, rng)
            tills.bodies[receipt_id] = body
            try:
                status, answer = await post(session, url, body)
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
                # In flight at the kill: committed or not, nobody can tell yet.
                tills.unknown.add(receipt_id)
                return
            if status != 200:
                tills.failures.append(f"{receipt_id}: {status} {answer}")
                return
            tills.ack(receipt_id, answer, till)


async def retry(
    agent: AgentProcess, tills: Tills, receipt_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """Send the same sales again from a few tills; every retry must be answered 200."""
    answers: dict[str, dict[str, Any]] = {}
    url = agent.base_url + "/pos/v1/receipts"
    queue = list(receipt_ids)

    async def worker(till: str) -> None:
        async with till_session(till) as session:
            while queue:
                receipt_id = queue.pop()
                status, answer = await post(session, url, tills.bodies[receipt_id])
                assert status == 200, (receipt_id, answer)
                answers[receipt_id] = answer

    await asyncio.gather(*(worker(f"till-retry-{n}") for n in range(TILLS)))
    return answers


async def lookup_available_kop(agent: AgentProcess, card: str) -> int:
    async with till_session("till-lookup") as session:
        status, answer = await post(
            session, agent.base_url + "/pos/v1/cards/lookup", {"card": card}
        )
    assert status == 200, answer
    balance = answer["balance"]
    expiring_kop = sum(to_kop(item["amount"]) for item in balance["expiring"])
    available_kop = to_kop(balance["available"])
    # Sales only: every point is an expiring purchase accrual, nothing is held, owed or pending.
    assert available_kop == expiring_kop + to_kop(balance["non_expiring"]), balance
    assert to_kop(balance["held"]) == to_kop(balance["debt"]) == to_kop(balance["pending"]) == 0
    return available_kop


# --- reading the file --------------------------------------------------------------------------


@dataclass
class FileState:
    journal: list[JournalRow]
    receipts: dict[str, tuple[str, int]]
    wallet_remaining_kop: int


def read_file(db_path: Path, card: str) -> FileState:
    """The journal, receipts and the card's wallet, read-only, after an integrity check."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        journal = [
            JournalRow(
                seq,
                op_id,
                kind,
                idem_key,
                row_card,
                sum(line["accrued_kop"] for line in json.loads(payload)["lines"]),
            )
            if kind == "sale"
            else JournalRow(seq, op_id, kind, idem_key, row_card, 0)
            for seq, op_id, kind, idem_key, row_card, payload in conn.execute(
                "SELECT seq, op_id, kind, idem_key, card, payload FROM journal ORDER BY rowid"
            )
        ]
        receipts = {
            receipt_id: (row_card, seq)
            for receipt_id, row_card, seq in conn.execute(
                "SELECT receipt_id, card, seq FROM receipts"
            )
        }
        row = conn.execute("SELECT wallet FROM cards WHERE number = ?", (card,)).fetchone()
        assert row is not None, f"card {card} is in the replica"
        remaining_kop = sum(int(lot["remaining"]) for lot in json.loads(row[0])["lots"])
    finally:
        conn.close()
    return FileState(journal, receipts, remaining_kop)


def check_file(
    state: FileState, tills: Tills, card: str, seen: list[JournalRow], *, settled: bool
) -> None:
    """The file against what the tills know.

    ``seen`` is the journal as read last time: a crash may only append to it.  ``settled``
    means no request is unknown any more, so the journal's sales are exactly the acknowledged.
    """
    journal = state.journal
    seqs = [row.seq for row in journal]
    assert all(a < b for a, b in itertools.pairwise(seqs)), "seq strictly increases"
    op_ids = [row.op_id for row in journal]
    assert len(op_ids) == len(set(op_ids)), "no operation id appears twice"
    assert journal[: len(seen)] == seen, "a crash only ever appends to the journal"

    sales: dict[str, list[JournalRow]] = {}
    for row in journal:
        if row.kind == "sale":
            sales.setdefault(row.idem_key, []).append(row)
    for receipt_id, ack in tills.acked.items():
        rows = sales.get(receipt_id, [])
        assert len(rows) == 1, f"acknowledged sale {receipt_id} is in the journal {len(rows)} times"
        assert rows[0].op_id == ack.operation_id, f"{receipt_id} kept its operation id"
        assert rows[0].accrued_kop == ack.accrued_kop, f"{receipt_id} kept its accrual"
        assert rows[0].card == card
    phantoms = set(sales) - set(tills.acked) - tills.unknown
    assert not phantoms, f"sales nobody sent or nobody could have seen committed: {phantoms}"
    if settled:
        assert set(sales) == set(tills.acked)

    # Each sale has its receipt row, written in the same transaction.
    assert set(state.receipts) == set(sales)
    for receipt_id, (rows_card, seq) in state.receipts.items():
        assert (rows_card, seq) == (card, sales[receipt_id][0].seq)

    # A till's sales were committed in the order it saw them acknowledged.
    by_id = {receipt_id: rows[0].seq for receipt_id, rows in sales.items()}
    for till, receipt_ids in tills.order.items():
        till_seqs = [by_id[receipt_id] for receipt_id in receipt_ids]
        assert till_seqs == sorted(till_seqs), f"{till}'s sales are in its order"

    accrued_kop = sum(row.accrued_kop for row in journal if row.kind == "sale")
    assert state.wallet_remaining_kop == accrued_kop, "the wallet holds every accrual"


# --- the test ----------------------------------------------------------------------------------


async def test_acknowledged_sales_survive_sigkill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kills = KILLS
    seed = int(os.environ.get("BONUS_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    print(f"crash test: {kills} kills, seed {seed} (BONUS_CRASH_SEED replays it)")

    agent = AgentProcess(tmp_path)
    tills = Tills()
    seen: list[JournalRow] = []
    in_flight = in_flight_committed = 0
    try:
        agent.start()
        card = await register(agent)
        for round_no in range(1, kills + 1):
            stop = asyncio.Event()
            till_names = [f"till-{n}" for n in range(1, TILLS + 1)]
            stream = [
                asyncio.create_task(
                    run_till(agent, till, card, round_no, tills, stop, random.Random(rng.random()))
                )
                for till in till_names
            ]
            await asyncio.sleep(rng.uniform(*KILL_DELAY_MS) / 1000)
            agent.kill()
            stop.set()
            await asyncio.gather(*stream)
            assert not tills.failures, tills.failures

            # What was acknowledged is in the file before anything else opens it.
            state = read_file(agent.db_path, card)
            check_file(state, tills, card, seen, settled=False)
            seen = state.journal
            acked_this_round = [rid for rid in tills.acked if rid.startswith(f"k{round_no}-")]

            agent.start()
            committed = {row.idem_key: row.op_id for row in seen if row.kind == "sale"}
            unknown = sorted(tills.unknown)
            in_flight += len(unknown)
            in_flight_committed += sum(1 for receipt_id in unknown if receipt_id in committed)
            answers = await retry(agent, tills, unknown + acked_this_round)
            for receipt_id in unknown:
                answer = answers[receipt_id]
                if receipt_id in committed:
                    assert answer["operation_id"] == committed[receipt_id], receipt_id
                tills.settle(receipt_id, answer)
            for receipt_id in acked_this_round:
                assert answers[receipt_id]["operation_id"] == tills.acked[receipt_id].operation_id

            state = read_file(agent.db_path, card)
            check_file(state, tills, card, seen, settled=True)
            seen = state.journal
            journal_accrued_kop = sum(row.accrued_kop for row in seen if row.card == card)
            assert await lookup_available_kop(agent, card) == journal_accrued_kop

        # Every acknowledged sale, retried once more, answers its original operation.
        answers = await retry(agent, tills, list(tills.acked))
        for receipt_id, ack in tills.acked.items():
            assert answers[receipt_id]["operation_id"] == ack.operation_id, receipt_id
        assert await register(agent) == card, "the phone still finds its card"
        assert agent.terminate() == 0, agent.log_tail()
        state = read_file(agent.db_path, card)
        check_file(state, tills, card, seen, settled=True)
    finally:
        agent.kill()

    sales = sum(1 for row in state.journal if row.kind == "sale")
    with capsys.disabled():
        print(
            f"crash test (seed {seed}): survived {kills} SIGKILLs; "
            f"{len(tills.acked)} sales acknowledged ({len(tills.acked) - in_flight} by their first "
            f"answer; {in_flight} were in flight at a kill, {in_flight_committed} of them had been "
            "committed and their retries answered the recorded sale), "
            f"{sales} in the journal, balance {sum(a.accrued_kop for a in tills.acked.values()) / 100:.2f}"
        )
    assert sales == len(tills.acked)
