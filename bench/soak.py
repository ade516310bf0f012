"""Soak run: ``--agents`` store agents against one central server, ``--tills`` tills on each agent,
for ``--duration`` seconds; what stays steady and what grows.

Not a test: it prints figures.

1. A fresh central database (SQLite by default, ``--db postgresql``) with one store per agent and
   program settings without confirmation codes (a code round trip would only slow the tills).
2. A real ``bonus-central serve`` and real ``bonus-agent serve`` processes, syncing every
   ``--sync-interval-s`` seconds.  Each store registers ``--customers`` customers; once every
   store has synced, every replica knows every customer.
3. The tills, all in this process, serve customers in a loop for ``--duration`` seconds: a
   lookup (by card, one in ten by phone), a calculation, a sale; some sales redeem points
   (online authorisation by the central server), some are returned, some customers are new, and
   one visit in five is a customer of another store.  A pause of ``--think-ms`` on average
   (exponential) separates one till's customers.
4. Every ``--sample-s`` seconds: the resident memory (VmRSS) of every process, requests per
   second and the sale's p99 in that interval.
5. At the end: each operation's throughput, p50/p99/max latency and errors; memory at the start,
   the end and its peak; the time every store takes to upload what is left; the central
   ledger's size; and ``bonus-central check`` (the invariants).

Run from the repository root: ``.venv/bin/python bench/soak.py --agents 4 --tills 4
--duration 180``.  The exit status is 0 when no request failed, every process survived and the
invariants hold.  A redemption the central server declines because another store spent the
points first (``409 insufficient_balance``, reason ``chain_wide_balance``: the till redeemed what
its own, older view allowed) is the program working, and is counted apart, not as a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from central_common import (
    MACHINE,
    AgentServer,
    CentralServer,
    Process,
    code_source,
    database,
    load_text,
    memory_kib,
    prepare_central,
    rm_tree,
    set_central_settings,
)

REQUEST_TIMEOUT_S = 30.0
JSON_HEADERS = {"Content-Type": "application/json"}
OPERATIONS = ("lookup", "calculate", "sale", "sale+redeem", "return", "register")
REDEEM_SHARE = 0.15
RETURN_SHARE = 0.05
NEW_CUSTOMER_SHARE = 0.03
OTHER_STORE_SHARE = 0.2
#: Answers printed of each kind of error.
ERROR_EXAMPLES = 3
#: Tills of a store that register its customers before the load, at once.
REGISTER_TILLS = 4
#: Longest wait for every store to upload what is left after the load.
DRAIN_TIMEOUT_S = 300.0


# --- measuring ---------------------------------------------------------------------------------


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


@dataclass
class Series:
    """Latencies (seconds) and errors of one operation."""

    values: list[float] = field(default_factory=list)
    #: (monotonic time of the answer, latency) for the per-interval figures.
    timed: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    #: The first answers of each kind of error, to tell one cause from another.
    error_examples: dict[str, list[str]] = field(default_factory=dict)
    #: Answers the program gives by design, not failures: a redemption the central server
    #: declines because another store spent the points first (the till's view was older).
    refused: dict[str, int] = field(default_factory=dict)

    def add(self, at: float, latency_s: float) -> None:
        self.values.append(latency_s)
        self.timed.append((at, latency_s))

    def error(self, kind: str, example: str = "") -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        examples = self.error_examples.setdefault(kind, [])
        if example and len(examples) < ERROR_EXAMPLES:
            examples.append(example)


class Recorder:
    """Every request's latency by operation."""

    def __init__(self) -> None:
        self.series = {name: Series() for name in OPERATIONS}
        self.measuring = False

    async def post(
        self, session: aiohttp.ClientSession, operation: str, url: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        data = json.dumps(body, separators=(",", ":")).encode()
        started = time.monotonic()
        try:
            async with session.post(url, data=data, headers=JSON_HEADERS) as answer:
                raw = await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            if self.measuring:
                self.series[operation].error(type(exc).__name__)
            return None
        ended = time.monotonic()
        reply = json.loads(raw) if raw else None
        if self.measuring:
            series = self.series[operation]
            if status in (200, 201):
                series.add(ended, ended - started)
            else:
                error = reply.get("error", {}) if isinstance(reply, dict) else {}
                reason = error.get("details", {}).get("reason")
                kind = f"{status} {error.get('code')}" + (f" ({reason})" if reason else "")
                if reason == "chain_wide_balance":
                    series.refused[kind] = series.refused.get(kind, 0) + 1
                else:
                    series.error(
                        kind, f"{url.rsplit('/pos/v1', 1)[-1]} {data.decode()} → {raw.decode()}"
                    )
        return reply if status in (200, 201) else None


# --- the tills ---------------------------------------------------------------------------------


@dataclass
class Store:
    """One store: its agent and what its tills know."""

    agent: AgentServer
    #: Card → phone of the customers registered before the load: every store knows them.
    phones: dict[str, str] = field(default_factory=dict)
    #: Customers registered during the load: other stores know them only after a sync or two.
    new_phones: dict[str, str] = field(default_factory=dict)
    new_customers: int = 0


@dataclass
class AtTills:
    """The customers standing at a till right now: one person is at one till at a time.

    Without this two tills could redeem the same card's points at the same moment, each from a
    balance that did not count the other: a refusal the program is right to give, but one no
    real customer causes.
    """

    busy: set[str] = field(default_factory=set)

    def pick(self, rng: random.Random, customers: list[tuple[str, str]]) -> tuple[str, str] | None:
        """A customer not at a till now, seated; None when ten draws found only busy ones."""
        for _ in range(10):
            card, phone = rng.choice(customers)
            if card not in self.busy:
                self.seat(card)
                return card, phone
        return None

    def seat(self, card: str) -> None:
        self.busy.add(card)

    def leave(self, card: str) -> None:
        self.busy.discard(card)


def money(kop: int) -> str:
    return f"{kop // 100}.{kop % 100:02d}"


def basket(rng: random.Random) -> list[dict[str, Any]]:
    lines = []
    for index in range(rng.randint(1, 4)):
        qty = rng.choice((1, 1, 1, 2))
        price = rng.randint(50_00, 2500_00)
        lines.append(
            {
                "line_id": str(index + 1),
                "sku": f"SKU-{rng.randint(1, 5000)}",
                "name": "Товар",
                "qty": qty,
                "price": money(price),
                "amount": money(price * qty),
                "vital": rng.random() < 0.2,
            }
        )
    return lines


def till_session(register_id: str) -> aiohttp.ClientSession:
    # One keep-alive connection per till, as a till's HTTP client would hold.
    return aiohttp.ClientSession(
        headers={"X-Register-Id": register_id},
        connector=aiohttp.TCPConnector(limit=1),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


async def register(
    recorder: Recorder, session: aiohttp.ClientSession, store: Store, phone: str, *, new: bool
) -> str | None:
    reply = await recorder.post(
        session,
        "register",
        store.agent.base_url + "/pos/v1/customers",
        {"phone": phone, "consents": {"personal_data": True}},
    )
    if reply is None:
        return None
    number = str(reply["card"]["number"])
    (store.new_phones if new else store.phones)[number] = phone
    return number


async def register_customers(stores: list[Store], count: int) -> None:
    """``count`` customers per store, registered through the till API."""
    recorder = Recorder()

    async def one_till(index: int, store: Store, till: int) -> None:
        async with till_session(f"setup-{till}") as session:
            for n in range(till, count, REGISTER_TILLS):
                number = await register(recorder, session, store, f"9{index:02d}{n:07d}", new=False)
                assert number is not None, f"store {index}: registration {n} failed"

    await asyncio.gather(
        *(
            one_till(index, store, till)
            for index, store in enumerate(stores)
            for till in range(REGISTER_TILLS)
        )
    )


async def till_loop(
    recorder: Recorder,
    stores: list[Store],
    at_tills: AtTills,
    home: int,
    till: int,
    rng: random.Random,
    think_s: float,
    until: float,
) -> None:
    """Serve customers until ``until`` (monotonic)."""
    store = stores[home]
    base = store.agent.base_url + "/pos/v1"
    recent: list[str] = []
    receipts = 0
    async with till_session(f"till-{till}") as session:
        while time.monotonic() < until:
            if think_s:
                await asyncio.sleep(rng.expovariate(1 / think_s))
            if recent and rng.random() < RETURN_SHARE:
                receipt_id = recent.pop(rng.randrange(len(recent)))
                body: dict[str, Any] = {"return_id": f"RET-{receipt_id}", "receipt_id": receipt_id}
                if rng.random() < 0.5:
                    body["lines"] = [{"line_id": "1", "qty": 1}]
                await recorder.post(session, "return", base + "/returns", body)
                continue
            if rng.random() < NEW_CUSTOMER_SHARE:
                store.new_customers += 1
                phone = f"8{home:02d}{till:02d}{store.new_customers:05d}"
                card = await register(recorder, session, store, phone, new=True)
                if card is None:
                    continue
                at_tills.seat(card)
            else:
                customers = [*store.phones.items(), *store.new_phones.items()]
                if len(stores) > 1 and rng.random() < OTHER_STORE_SHARE:
                    other = rng.choice([i for i in range(len(stores)) if i != home])
                    customers = list(stores[other].phones.items())
                picked = at_tills.pick(rng, customers)
                if picked is None:
                    continue
                card, phone = picked
            try:
                receipts += 1
                receipt_id = f"R-{home}-{till}-{receipts}"
                if await serve(recorder, session, base, rng, card, phone, receipt_id):
                    recent.append(receipt_id)
                    del recent[:-20]
            finally:
                at_tills.leave(card)


async def serve(
    recorder: Recorder,
    session: aiohttp.ClientSession,
    base: str,
    rng: random.Random,
    card: str,
    phone: str,
    receipt_id: str,
) -> bool:
    """One customer at the till: lookup, calculation, sale; whether the sale went through."""
    by_phone = rng.random() < 0.1
    found = await recorder.post(
        session,
        "lookup",
        base + "/cards/lookup",
        {"phone": phone} if by_phone else {"card": card},
    )
    if found is None:
        return False
    lines = basket(rng)
    calc = await recorder.post(
        session, "calculate", base + "/receipts/calculate", {"card": card, "lines": lines}
    )
    if calc is None:
        return False
    redeem = "0"
    if rng.random() < REDEEM_SHARE and calc["redemption_allowed"] and calc["max_redeem"]:
        redeem = str(calc["max_redeem"])
    sale = await recorder.post(
        session,
        "sale+redeem" if redeem != "0" else "sale",
        base + "/receipts",
        {"receipt_id": receipt_id, "card": card, "lines": lines, "redeem": redeem},
    )
    return sale is not None


# --- memory over time --------------------------------------------------------------------------


@dataclass
class Sample:
    at_s: float
    rss_kib: dict[str, int]
    requests_per_s: float
    sale_p99_ms: float


async def sampler(
    processes: dict[str, Process],
    recorder: Recorder,
    interval_s: float,
    started: float,
    samples: list[Sample],
    until: float,
) -> None:
    """Memory of every process, request rate and sale p99, every ``interval_s``."""
    last = time.monotonic()
    while True:
        now = time.monotonic()
        window = [
            latency
            for name, series in recorder.series.items()
            if name in ("sale", "sale+redeem")
            for at, latency in series.timed
            if last < at <= now
        ]
        requests = sum(
            1 for series in recorder.series.values() for at, _ in series.timed if last < at <= now
        )
        samples.append(
            Sample(
                now - started,
                {name: rss(process) for name, process in processes.items()},
                requests / max(now - last, 1e-9) if now > started else 0.0,
                percentile(sorted(window), 99) * 1000,
            )
        )
        last = now
        if now >= until:
            return
        await asyncio.sleep(min(interval_s, max(0.0, until - now)))


def rss(process: Process) -> int:
    if process.proc is None or process.proc.poll() is not None:
        return 0
    return memory_kib(process.pid).get("VmRSS", 0)


def peak(process: Process) -> int:
    if process.proc is None or process.proc.poll() is not None:
        return 0
    return memory_kib(process.pid).get("VmHWM", 0)


# --- the run -----------------------------------------------------------------------------------


async def status(session: aiohttp.ClientSession, agent: AgentServer) -> dict[str, Any]:
    async with session.get(agent.base_url + "/pos/v1/status") as answer:
        return dict(await answer.json())


async def wait_synced(stores: list[Store], since: datetime, timeout_s: float) -> float:
    """Seconds until every store has nothing to upload and a complete sync after ``since``."""
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while True:
            answers = [await status(session, store.agent) for store in stores]
            if all(
                a["pending_ops"] == 0
                and a["last_sync_at"]
                and datetime.fromisoformat(a["last_sync_at"]) > since
                for a in answers
            ):
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"stores did not sync in {timeout_s} s: {answers}")
            await asyncio.sleep(0.2)


async def ledger_size(url: str) -> dict[str, int]:
    """Rows of the central ledger's main tables, and the most lots one card has."""
    import sqlalchemy as sa

    from central import schema
    from central.db import Database

    db = Database(url)
    try:
        async with db.read() as conn:
            sizes = {
                table.name: int(
                    await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0
                )
                for table in (
                    schema.cards,
                    schema.store_ops,
                    schema.transactions,
                    schema.receipts,
                    schema.lots,
                )
            }
            # A card's state carries its lots: what every sync of that card costs.
            per_card = (
                sa.select(sa.func.count().label("n"))
                .select_from(schema.lots)
                .group_by(schema.lots.c.card)
            )
            sizes["most lots on a card"] = int(
                await conn.scalar(sa.select(sa.func.max(per_card.subquery().c.n))) or 0
            )
            return sizes
    finally:
        await db.close()


@dataclass
class Outcome:
    samples: list[Sample]
    duration_s: float
    drain_s: float
    start_peak_kib: dict[str, int]
    end_peak_kib: dict[str, int]


async def soak(
    args: argparse.Namespace, stores: list[Store], processes: dict[str, Process]
) -> tuple[Recorder, Outcome]:
    print(f"  registering {args.customers} customers per store …")
    await register_customers(stores, args.customers)
    # Two rounds each: the first uploads every store's customers, the second pulls all of them.
    for _ in range(2):
        await wait_synced(stores, datetime.now(UTC), DRAIN_TIMEOUT_S)
    start_peak = {name: peak(process) for name, process in processes.items()}
    recorder = Recorder()
    recorder.measuring = True
    started = time.monotonic()
    until = started + args.duration
    samples: list[Sample] = []
    print(f"  load: {len(stores)} stores × {args.tills} tills for {args.duration:.0f} s …")
    rng = random.Random(args.seed)
    at_tills = AtTills()
    tills = [
        till_loop(
            recorder,
            stores,
            at_tills,
            home,
            till,
            random.Random(rng.random()),
            args.think_ms / 1000,
            until,
        )
        for home in range(len(stores))
        for till in range(args.tills)
    ]
    await asyncio.gather(
        sampler(processes, recorder, args.sample_s, started, samples, until), *tills
    )
    duration = time.monotonic() - started
    recorder.measuring = False
    drain = await wait_synced(stores, datetime.now(UTC), DRAIN_TIMEOUT_S)
    end_peak = {name: peak(process) for name, process in processes.items()}
    return recorder, Outcome(samples, duration, drain, start_peak, end_peak)


# --- the report --------------------------------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def print_report(
    recorder: Recorder, outcome: Outcome, names: list[str], ledger: dict[str, int]
) -> int:
    print(f"\nper operation over {outcome.duration_s:.0f} s:")
    print(
        f"  {'operation':<12} {'count':>7} {'per s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'errors':>6}"
    )
    total = errors = 0
    for name, series in recorder.series.items():
        ordered = sorted(series.values)
        total += len(ordered)
        errors += series.errors
        print(
            f"  {name:<12} {len(ordered):>7} {len(ordered) / outcome.duration_s:>7.1f} "
            f"{percentile(ordered, 50) * 1000:>7.1f} {percentile(ordered, 99) * 1000:>7.1f} "
            f"{(ordered[-1] if ordered else math.nan) * 1000:>7.1f} {series.errors:>6}"
        )
        for kind, count in series.error_kinds.items():
            print(f"  {'':<12} error {kind}: {count}")
            for example in series.error_examples.get(kind, []):
                print(f"  {'':<14} {example}")
        for kind, count in series.refused.items():
            print(f"  {'':<12} refused by design {kind}: {count} (another store spent first)")
    print(f"  {'all':<12} {total:>7} {total / outcome.duration_s:>7.1f}{'':>24} {errors:>6}")

    print("\nover time (RSS in MiB; requests per second and sale p99 in each interval):")
    header = f"  {'t s':>5} {'req/s':>6} {'sale p99':>8} " + " ".join(f"{n:>9}" for n in names)
    print(header)
    stride = max(1, math.ceil(len(outcome.samples) / 15))
    shown = outcome.samples[::stride]
    if shown[-1] is not outcome.samples[-1]:
        shown.append(outcome.samples[-1])
    for sample in shown:
        print(
            f"  {sample.at_s:>5.0f} {sample.requests_per_s:>6.0f} {sample.sale_p99_ms:>8.1f} "
            + " ".join(f"{mib(sample.rss_kib[n]):>9}" for n in names)
        )
    first, last = outcome.samples[0], outcome.samples[-1]
    print(
        "  growth "
        + " ".join(f"{n} {(last.rss_kib[n] - first.rss_kib[n]) / 1024:+.1f}" for n in names)
        + " MiB"
    )
    print(
        "  peak (VmHWM) " + " ".join(f"{n} {mib(outcome.end_peak_kib[n])}" for n in names) + " MiB"
    )
    print(f"\nevery store uploaded the rest and synced in {outcome.drain_s:.1f} s after the load")
    print("central ledger: " + ", ".join(f"{name} {count:,}" for name, count in ledger.items()))
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Soak run: tills against store agents against one central server, for a "
        "set time; throughput, latencies, errors, memory over time, invariants at the end.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tills", type=int, default=4, help="tills per store agent")
    parser.add_argument("--agents", type=int, default=4, help="store agents")
    parser.add_argument("--duration", type=float, default=180, help="seconds of load")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--customers", type=int, default=2000, help="customers per store before the load"
    )
    parser.add_argument("--think-ms", type=float, default=100, help="mean pause between customers")
    parser.add_argument("--sample-s", type=float, default=5, help="seconds between samples")
    parser.add_argument("--sync-interval-s", type=float, default=30, help="agents' sync interval")
    parser.add_argument("--pg-url", help="an empty PostgreSQL database instead of a throw-away one")
    parser.add_argument("--dir", help="where the temporary databases go (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    args = parser.parse_args(argv)

    work_dir = Path(tempfile.mkdtemp(prefix="soak-", dir=args.dir))
    print(
        f"soak: {MACHINE}; {args.agents} agents × {args.tills} tills, {args.duration:.0f} s, "
        f"central on {args.db}; work dir {work_dir}"
    )
    print(f"  {code_source()}")
    print(f"  before: {load_text()}")
    stores: list[Store] = []
    stops: list[Callable[[], None]] = []
    try:
        with database(args.db, work_dir, args.pg_url, "bench_soak") as url:
            try:
                return run(args, work_dir, url, stores, stops)
            finally:
                # Before the database's context ends: a throw-away PostgreSQL stops with it.
                for stop in reversed(stops):
                    stop()
    finally:
        if args.keep:
            print(f"kept {work_dir}")
        else:
            rm_tree(work_dir)


def run(
    args: argparse.Namespace,
    work_dir: Path,
    url: str,
    stores: list[Store],
    stops: list[Callable[[], None]],
) -> int:
    """Start the chain, soak it, report; the exit status."""
    store_ids = [f"soak-{i + 1:02d}" for i in range(args.agents)]
    phone_key, tokens = asyncio.run(prepare_central(url, store_ids))
    asyncio.run(
        set_central_settings(
            url, {"redemption_confirmation": "none", "registration_confirmation": "none"}
        )
    )
    central = CentralServer(work_dir, url)
    central.start()
    stops.append(central.stop)
    for store_id in store_ids:
        store_dir = work_dir / store_id
        store_dir.mkdir()
        agent = AgentServer(
            store_dir,
            store_id=store_id,
            central_url=central.base_url,
            token=tokens[store_id],
            log_level="WARNING",
            phone_key=phone_key,
            extra_env={
                "BONUS_AGENT_SYNC_INTERVAL_S": str(args.sync_interval_s),
                "BONUS_AGENT_SYNC_JITTER_S": str(min(5.0, args.sync_interval_s / 4)),
                "BONUS_AGENT_SYNC_BACKOFF_MAX_S": "5",
            },
        )
        agent.start()
        stops.append(agent.stop)
        stores.append(Store(agent))
    processes: dict[str, Process] = {"central": central}
    processes.update({f"agent-{i + 1}": store.agent for i, store in enumerate(stores)})
    recorder, outcome = asyncio.run(soak(args, stores, processes))
    dead = [name for name, p in processes.items() if p.proc is None or p.proc.poll() is not None]
    ledger = asyncio.run(ledger_size(url))
    errors = print_report(recorder, outcome, list(processes), ledger)
    ok, report = central.check()
    print(f"\nbonus-central check: {report.splitlines()[-1] if report else '?'}")
    if not ok:
        print(report)
    if dead:
        print(f"processes that died: {', '.join(dead)}")
    print(f"  after: {load_text()}")
    return 0 if ok and not errors and not dead else 1


if __name__ == "__main__":
    sys.exit(main())
