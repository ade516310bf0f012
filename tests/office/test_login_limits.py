"""The office login under attack: limits per client address and per login name, kept in the
database (shared by every server), the same answers for an unknown login as for a known one,
password hashing that never holds a transaction or the event loop, and a bounded audit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher, extract_parameters

from central import office_api, schema, staff
from central.app import create_app, prune_office
from central.office_api import GUARD_KEY
from central.staff import Permission
from tests.office.conftest import PASSWORD, Office, assert_error
from tests.phonekeys import central_config

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
OfficeFactory = Callable[..., Awaitable[Office]]
#: The tests' server believes the X-Forwarded-For of the test client, as of a reverse proxy.
BEHIND_PROXY = {"trusted_proxies": ["127.0.0.1"]}


class Clock:
    """The office API's clock, moved by the test."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


class CountingHasher(PasswordHasher):
    """The suite's cheap argon2, counting the verifications (each one is a hash)."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024)
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        self.verifications += 1
        return super().verify(hash, password)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moving = Clock()
    monkeypatch.setattr(office_api, "now", moving)
    return moving


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    counting = CountingHasher()
    monkeypatch.setattr(staff, "_hasher", counting)
    return counting


@pytest.fixture
def make_office(central_db_url: str, aiohttp_client: ClientFactory) -> OfficeFactory:
    """A central server over the test's database with these configuration changes."""

    async def make(**changes: Any) -> Office:
        # Refusals are answered at once here, unless a test is about their pause.
        changes.setdefault("login_refusal_pause_s", 0)
        config = central_config(central_db_url, **changes)
        return Office(await aiohttp_client(create_app(config, run_expiry=False)))

    return make


async def attempt(
    office: Office, login: str, password: str, address: str | None = None
) -> tuple[int, Any, str | None]:
    """A login from ``address`` (as a proxy forwards it): status, body, Retry-After."""
    headers = {"X-Forwarded-For": address} if address else {}
    response = await office.client.post(
        "/admin/v1/session", json={"login": login, "password": password}, headers=headers
    )
    return response.status, await response.json(), response.headers.get("Retry-After")


def assert_limited(answer: tuple[int, Any, str | None], retry_after_s: int) -> None:
    status, body, header = answer
    assert_error(status, body, "login_rate_limited", 429)
    assert body["error"]["message"] == "Слишком много неудачных попыток входа, повторите позже"
    assert body["error"]["details"] == {"retry_after_s": retry_after_s}
    assert header == str(retry_after_s)


async def test_an_address_is_slowed_after_its_free_failures(
    make_office: OfficeFactory, clock: Clock
) -> None:
    office = await make_office(**BEHIND_PROXY)
    await office.add_staff("admin", {Permission.JOURNAL})
    # Ten failures from one address are free (each with another login, so that no login trips).
    for index in range(10):
        status, body, _ = await attempt(office, f"guess-{index}", "wrong", "203.0.113.5")
        assert_error(status, body, "unauthorized", 401)
    # The eleventh still gets its answer, and blocks the address for a second.
    status, body, _ = await attempt(office, "guess-10", "wrong", "203.0.113.5")
    assert_error(status, body, "unauthorized", 401)
    assert_limited(await attempt(office, "admin", PASSWORD, "203.0.113.5"), 1)
    # Other addresses are not touched.
    assert (await attempt(office, "admin", PASSWORD, "198.51.100.7"))[0] == 201
    # After the block, the right password works from there again; the address's count goes on
    # (a valid account buys no fresh guesses), so its next failure blocks it for 2 s.
    clock.advance(1)
    assert (await attempt(office, "admin", PASSWORD, "203.0.113.5"))[0] == 201
    assert (await attempt(office, "guess-11", "wrong", "203.0.113.5"))[0] == 401
    assert_limited(await attempt(office, "admin", PASSWORD, "203.0.113.5"), 2)
    # An hour after its last failure the address starts afresh.
    clock.advance(3601)
    for index in range(10):
        assert (await attempt(office, f"again-{index}", "wrong", "203.0.113.5"))[0] == 401
    assert (await attempt(office, "admin", PASSWORD, "203.0.113.5"))[0] == 201


async def test_a_login_is_slowed_from_anywhere_but_where_it_logged_in_before(
    make_office: OfficeFactory, clock: Clock
) -> None:
    office = await make_office(**BEHIND_PROXY, login_account_delay_max_s=8)
    await office.add_staff("admin", set(Permission))
    assert (await attempt(office, "admin", PASSWORD, "192.0.2.10"))[0] == 201  # the owner's desk
    # A flood against "admin" from many addresses: five failures are free, then 1, 2, 4, 8, 8 …
    # seconds, never more than the cap, and never a lock that does not end.
    addresses = (f"198.51.100.{index}" for index in range(1, 200))
    for _ in range(5):
        assert (await attempt(office, "admin", "wrong", next(addresses)))[0] == 401
    for expected in (1, 2, 4, 8, 8, 8):
        assert (await attempt(office, "admin", "wrong", next(addresses)))[0] == 401
        assert_limited(await attempt(office, "admin", PASSWORD, next(addresses)), expected)
        clock.advance(expected)
    assert (await attempt(office, "admin", "wrong", next(addresses)))[0] == 401
    assert_limited(await attempt(office, "admin", PASSWORD, next(addresses)), 8)
    # The owner at their usual address is not held back by the flood; their success starts
    # the login's count afresh, so the next failure is free again.
    status, session, _ = await attempt(office, "admin", PASSWORD, "192.0.2.10")
    assert status == 201, session
    assert (await attempt(office, "admin", "wrong", next(addresses)))[0] == 401
    assert (await attempt(office, "admin", PASSWORD, next(addresses)))[0] == 201
    # Other logins never noticed.
    await office.add_staff("other", set())
    assert (await attempt(office, "other", PASSWORD, next(addresses)))[0] == 201


async def test_refused_attempts_do_not_extend_a_block(
    make_office: OfficeFactory, clock: Clock, hasher: CountingHasher
) -> None:
    office = await make_office(**BEHIND_PROXY)
    await office.add_staff("admin", set())
    for index in range(6):
        assert (await attempt(office, "admin", "wrong", f"198.51.100.{index}"))[0] == 401
    before = hasher.verifications
    for index in range(50):
        assert_limited(await attempt(office, "admin", "wrong", f"192.0.2.{index}"), 1)
    assert hasher.verifications == before  # refused before any hashing
    clock.advance(1)
    assert (await attempt(office, "admin", PASSWORD, "192.0.2.99"))[0] == 201


async def test_an_unknown_login_pays_exactly_what_a_known_one_does(
    make_office: OfficeFactory, clock: Clock, hasher: CountingHasher
) -> None:
    office = await make_office(**BEHIND_PROXY)
    await office.add_staff("admin", set())

    async def run(login: str, network: str) -> list[tuple[Any, ...]]:
        seen = []
        for index in range(9):
            before = hasher.verifications
            status, body, header = await attempt(office, login, "wrong", f"{network}.{index}")
            seen.append((status, body, header, hasher.verifications - before))
            if status == 429:
                clock.advance(int(header or 0))
        return seen

    known = await run("admin", "198.51.100")
    unknown = await run("nobody", "203.0.113")
    assert known == unknown
    # Each failure hashed once, each refusal not at all, the same for both.
    assert [row[0] for row in known] == [401] * 6 + [429, 401, 429]
    assert [row[3] for row in known] == [1] * 6 + [0, 1, 0]
    # And the unknown login's hash is made with the accounts' parameters.
    async with office.db.read() as conn:
        stored = await staff.stored_hash(conn, "admin")
    assert stored is not None
    assert staff._dummy is not None
    assert extract_parameters(staff._dummy[1]) == extract_parameters(stored)


async def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(
    make_office: OfficeFactory,
) -> None:
    office = await make_office()  # no trusted proxies: the header is anybody's
    await office.add_staff("admin", set())
    for index in range(11):
        assert (await attempt(office, f"guess-{index}", "wrong", f"198.51.100.{index}"))[0] == 401
    # Every attempt counted against the peer, 127.0.0.1, whatever the header said.
    assert_limited(await attempt(office, "admin", PASSWORD, "192.0.2.1"), 1)
    assert_limited(await attempt(office, "admin", PASSWORD), 1)


async def test_only_the_address_the_trusted_proxy_saw_counts(make_office: OfficeFactory) -> None:
    office = await make_office(trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    await office.add_staff("admin", set())
    # The client puts a new address of its own in front every time; the proxies (the test
    # client, then 10.1.2.3) append the address they saw, and that one counts.
    for index in range(11):
        chain = f"192.0.2.{index}, 203.0.113.9, 10.1.2.3"
        assert (await attempt(office, f"guess-{index}", "wrong", chain))[0] == 401
    assert_limited(await attempt(office, "admin", PASSWORD, "192.0.2.200, 203.0.113.9"), 1)
    assert (await attempt(office, "admin", PASSWORD, "203.0.113.10"))[0] == 201


async def test_two_servers_over_one_database_share_the_limits(
    make_office: OfficeFactory,
) -> None:
    first = await make_office(**BEHIND_PROXY)
    second = await make_office(**BEHIND_PROXY)
    await first.add_staff("admin", set())
    for index in range(6):
        assert (await attempt(first, "admin", "wrong", f"198.51.100.{index}"))[0] == 401
    assert_limited(await attempt(second, "admin", PASSWORD, "192.0.2.1"), 1)
    for index in range(11):
        assert (await attempt(second, f"guess-{index}", "wrong", "203.0.113.3"))[0] == 401
    assert_limited(await attempt(first, "someone", PASSWORD, "203.0.113.3"), 1)


async def test_a_flood_of_refusals_adds_a_bounded_number_of_audit_rows(
    make_office: OfficeFactory, clock: Clock
) -> None:
    office = await make_office(**BEHIND_PROXY, audit_refusals_rows_per_window_max=10)
    await office.add_staff("admin", set())
    for index in range(40):
        address = f"198.51.100.{index}"
        assert (await attempt(office, f"guess-{index}", "wrong", address))[0] == 401
        response = await office.client.post(
            "/admin/v1/campaigns", json={}, headers={"X-Forwarded-For": address}
        )
        assert response.status == 401
    for _ in range(100):  # one login over its limit (after 6 failures), from one address
        await attempt(office, "admin", "wrong", "203.0.113.1")
    await office.app[GUARD_KEY].refusals.flush(office.db)

    table = schema.audit_refusals
    async with office.db.read() as conn:
        rows = (await conn.execute(sa.select(table))).all()
        audit_rows = await conn.scalar(sa.select(sa.func.count()).select_from(schema.audit))
    assert audit_rows == 0  # nothing of nobody in the row-per-request audit
    # Ten sources apart, the rest together; every attempt counted.
    apart = [row for row in rows if row.address != "*"]
    assert len(apart) <= 10
    assert len(rows) <= 10 + 3  # the overflow rows: one per action and code
    assert sum(row.attempts for row in rows) == 40 + 40 + 100
    by_code: dict[str, int] = {}
    for row in rows:
        by_code[row.code] = by_code.get(row.code, 0) + row.attempts
    assert by_code == {"unauthorized": 40 + 40 + 6, "login_rate_limited": 94}
    assert all(row.first_at <= row.last_at for row in rows)

    # A day later nothing of the limiter's state is left; the counts stay for keep_days.
    async with office.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(schema.login_throttle))
    guard = office.app[GUARD_KEY]
    await prune_office(office.db, guard.policy, 90, clock.moment + timedelta(days=1))
    async with office.db.read() as conn:
        left = await conn.scalar(sa.select(sa.func.count()).select_from(schema.login_throttle))
        kept = await conn.scalar(sa.select(sa.func.count()).select_from(table))
    assert left == 0
    assert kept == len(rows)
    await prune_office(office.db, guard.policy, 90, clock.moment + timedelta(days=91))
    async with office.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(table)) == 0


class BlockingHasher(PasswordHasher):
    """A hash that lasts until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024)
        self.started = threading.Event()
        self.release = threading.Event()

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        self.started.set()
        assert self.release.wait(30)
        return super().verify(hash, password)


async def test_a_login_that_finds_the_hashing_threads_busy_is_answered_at_once(
    make_office: OfficeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    office = await make_office(
        **BEHIND_PROXY, password_hashing_threads=1, password_hashing_queue_max=1
    )
    await office.add_staff("admin", set())
    slow = BlockingHasher()
    monkeypatch.setattr(staff, "_hasher", slow)
    hashing = office.app[GUARD_KEY].hashing

    hashing_now = asyncio.create_task(attempt(office, "admin", PASSWORD, "192.0.2.1"))
    assert await asyncio.to_thread(slow.started.wait, 10)
    queued = asyncio.create_task(attempt(office, "admin", "wrong", "192.0.2.2"))
    for _ in range(1000):  # until the second login waits for the thread
        if hashing.admitted == 2:
            break
        await asyncio.sleep(0.01)
    assert hashing.admitted == 2
    # The thread is busy and the queue full: the next login is refused at once.
    started = time.monotonic()
    status, body, header = await attempt(office, "admin", PASSWORD, "192.0.2.3")
    assert time.monotonic() - started < 1
    assert_error(status, body, "login_busy", 429)
    assert body["error"]["details"] == {"retry_after_s": 1}
    assert header == "1"
    # Meanwhile the event loop answers and no transaction is held: a write goes through.
    async with asyncio.timeout(2):
        response = await office.client.get("/health")
        assert response.status == 200
        async with office.db.write() as conn:
            await conn.execute(sa.text("SELECT 1"))
    slow.release.set()
    assert (await hashing_now)[0] == 201
    assert (await queued)[0] == 401
    assert hashing.admitted == 0


async def test_a_login_waits_for_a_hashing_thread_only_so_long(
    make_office: OfficeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    office = await make_office(
        password_hashing_threads=1, password_hashing_queue_max=4, password_hashing_wait_s=0.2
    )
    await office.add_staff("admin", set())
    slow = BlockingHasher()
    monkeypatch.setattr(staff, "_hasher", slow)
    hashing_now = asyncio.create_task(attempt(office, "admin", PASSWORD))
    assert await asyncio.to_thread(slow.started.wait, 10)
    status, body, _ = await attempt(office, "admin", PASSWORD)
    assert_error(status, body, "login_busy", 429)
    slow.release.set()
    assert (await hashing_now)[0] == 201


async def test_a_refused_login_is_answered_after_a_pause_that_costs_nothing(
    make_office: OfficeFactory, clock: Clock
) -> None:
    office = await make_office(
        **BEHIND_PROXY, login_refusal_pause_s=0.3, login_refusal_pauses_max=2
    )
    for index in range(11):
        assert (await attempt(office, f"guess-{index}", "wrong", "203.0.113.5"))[0] == 401
    started = time.monotonic()
    assert_limited(await attempt(office, "admin", PASSWORD, "203.0.113.5"), 1)
    assert time.monotonic() - started >= 0.3
    # Two refusals pause at once; a third, beyond the bound, is answered without one.
    pauses = office.app[GUARD_KEY].pauses
    pausing = [
        asyncio.create_task(attempt(office, "admin", PASSWORD, "203.0.113.5")) for _ in range(2)
    ]
    for _ in range(1000):
        if pauses.pausing == 2:
            break
        await asyncio.sleep(0.01)
    assert pauses.pausing == 2
    started = time.monotonic()
    assert_limited(await attempt(office, "admin", PASSWORD, "203.0.113.5"), 1)
    assert time.monotonic() - started < 0.3
    for task in pausing:
        assert_limited(await task, 1)
    assert pauses.pausing == 0


async def test_a_key_on_the_brink_has_one_attempt_checked_at_a_time(
    make_office: OfficeFactory, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without this, every attempt that arrived while a block ended would be hashed before the
    # first of them failed and blocked the key again: a flood would get a burst of guesses
    # (as many as the hashing queue holds) after every block.
    office = await make_office(**BEHIND_PROXY)
    await office.add_staff("admin", set())
    for index in range(5):  # the free failures: the next one blocks
        assert (await attempt(office, "admin", "wrong", f"198.51.100.{index}"))[0] == 401
    slow = BlockingHasher()
    monkeypatch.setattr(staff, "_hasher", slow)
    first = asyncio.create_task(attempt(office, "admin", "wrong", "198.51.100.50"))
    assert await asyncio.to_thread(slow.started.wait, 10)
    assert_limited(await attempt(office, "admin", PASSWORD, "198.51.100.51"), 1)
    # Other logins and addresses are not held back meanwhile.
    await office.add_staff("other", set())
    other = asyncio.create_task(attempt(office, "other", PASSWORD, "198.51.100.52"))
    slow.release.set()
    assert (await first)[0] == 401
    assert (await other)[0] == 201
    assert_limited(await attempt(office, "admin", PASSWORD, "198.51.100.53"), 1)
