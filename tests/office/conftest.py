"""Fixtures of the office API tests: the central app in-process over each database, office
accounts, and a store that feeds the ledger through the real sync path.

Ledger data is seeded the way a store's agent sends it: ``central.sync.upload`` with operations
shaped like ``agent/operations.py`` builds them.  Everything the office does goes through HTTP.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from central import schema, staff
from central.api import DB_KEY, PHONE_HASHER_KEY
from central.app import create_app
from central.db import Database
from central.invariants import check_invariants
from central.office_api import GUARD_KEY
from central.staff import Permission, add_staff, hash_password
from central.stores import add_store
from central.sync import upload
from shared.journal import (
    Consents,
    Operation,
    Profile,
    Registration,
    Return,
    ReturnLine,
    accrual_lot_id,
)
from shared.protocol import Op, OpResult
from tests.honest import NON_EXPIRING, TEN_YEARS, honest_sale, install_test_programs
from tests.phonekeys import central_config

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
PASSWORD = "correct horse battery"
ALL = frozenset(Permission)
ERROR_KEYS = {"code", "message", "details"}


def assert_error(status: int, body: Any, code: str, http_status: int) -> None:
    """An answer in the one error shape with this code and status."""
    assert status == http_status, (status, body)
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    # argon2's default cost (64 MiB, 3 passes) is right for production and slow for a suite
    # that creates accounts in every test; the verification path is the same.
    monkeypatch.setattr(staff, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))


@dataclass
class Store:
    """A store that uploads journal operations as its agent would, in sequence order."""

    office: Office
    store_id: str
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _ops: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def op(self, operation: Operation) -> Op:
        return Op(
            seq=next(self._seq),
            op_id=f"{self.store_id}-op-{next(self._ops)}",
            created_at=datetime.now(UTC),
            operation=operation,
        )

    async def send(self, *ops: Op, received_at: datetime | None = None) -> list[OpResult]:
        """Upload operations (received centrally now, or at ``received_at``); all must apply."""
        response = await upload(
            self.office.db,
            self.store_id,
            list(ops),
            received_at or datetime.now(UTC),
            self.office.app[PHONE_HASHER_KEY],
        )
        for result in response.results:
            assert result.status == "applied", result
        return response.results

    async def register(self, card: str, phone: str) -> None:
        await self.send(
            self.op(
                Registration(
                    card=card,
                    phone=phone,
                    virtual=False,
                    profile=Profile(first_name="Анна", last_name="Петрова"),
                    consents=Consents(personal_data=True, advertising=False),
                )
            )
        )

    async def sale(
        self,
        card: str,
        receipt_id: str,
        *,
        day: date,
        accrued_kop: int = 0,
        redeemed_kop: int = 0,
        expires_on: date | None = None,
        received_at: datetime | None = None,
    ) -> str | None:
        """A one-line sale; returns the accrual's lot id.  Its accrual never expires, or, with
        ``expires_on``, is an expiring one (under the ten-year test program: expiring, and not
        within any test's dates)."""
        operation = honest_sale(
            card,
            receipt_id,
            day=day,
            accrued_kop=accrued_kop,
            redeemed_kop=redeemed_kop,
            version=TEN_YEARS if expires_on else NON_EXPIRING,
        )
        op = self.op(operation)
        (result,) = await self.send(op, received_at=received_at)
        assert not result.differences, result  # booked as the store computed it
        return accrual_lot_id(op.op_id) if accrued_kop else None

    async def return_all(
        self,
        card: str,
        receipt_id: str,
        *,
        day: date,
        lot: str | None,
        reversed_kop: int = 0,
        refunded_kop: int = 0,
    ) -> None:
        """Return the whole one-line receipt (the store's figures as given)."""
        await self.send(
            self.op(
                Return(
                    card=card,
                    receipt_id=receipt_id,
                    return_id=f"ret-{receipt_id}",
                    day=day,
                    lines=(ReturnLine(line_id="1", qty=Decimal(1)),),
                    accrual_lot=lot,
                    accrual_reversed_kop=reversed_kop,
                    redemption_refunded_kop=refunded_kop,
                )
            )
        )


@dataclass
class Office:
    """The central app and an office worker's browser."""

    client: TestClient[Any, Any]
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[no-any-return]

    @property
    def db(self) -> Database:
        return self.app[DB_KEY]

    async def add_staff(
        self, login: str, permissions: set[Permission] | frozenset[Permission]
    ) -> None:
        password_hash = hash_password(PASSWORD)
        async with self.db.write() as conn:
            await add_staff(
                conn, login, f"Сотрудник {login}", password_hash, set(permissions), _now()
            )

    async def log_in(self, login: str, password: str = PASSWORD) -> tuple[int, Any]:
        return await self.call("POST", "/admin/v1/session", {"login": login, "password": password})

    async def user(
        self, login: str = "admin", permissions: set[Permission] | frozenset[Permission] = ALL
    ) -> str:
        """Create an account, log it in, and make it the one that sends requests."""
        await self.add_staff(login, permissions)
        status, body = await self.log_in(login)
        assert status == 201, body
        self.tokens[login] = body["token"]
        return str(body["token"])

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        as_user: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """A request; the status and the JSON body."""
        headers = {}
        if as_user is not None:
            token = self.tokens[as_user]
        elif token is None and len(self.tokens) == 1:
            token = next(iter(self.tokens.values()))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False)
            headers["Content-Type"] = "application/json"
        response = await self.client.request(
            method, path, data=data, headers=headers, params=params
        )
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()

    async def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """A request that must succeed (200 or 201)."""
        status, answer = await self.call(method, path, body, **kwargs)
        assert status in (200, 201), (status, answer)
        return answer

    async def store(self, store_id: str = "store-1") -> Store:
        async with self.db.write() as conn:
            await add_store(conn, store_id, f"Аптека {store_id}", _now())
        return Store(self, store_id)

    async def check(self) -> None:
        """The ledger's invariants hold."""
        async with self.db.read() as conn:
            report = await check_invariants(conn)
        assert report.ok, report.problems

    async def card(self, number: str) -> dict[str, Any]:
        page = await self.ok("GET", f"/admin/v1/cards/{number}")
        return dict(page)

    async def journal(self, **params: Any) -> list[dict[str, Any]]:
        answer = await self.ok("GET", "/admin/v1/journal", params={"limit": 500, **params})
        return list(answer["transactions"])

    async def refusals(self, address: str = "127.0.0.1") -> dict[tuple[str, str, str, int], int]:
        """The counted refusals of requests without a session from ``address`` (written first):
        (action, login, code, status) → attempts."""
        await self.app[GUARD_KEY].refusals.flush(self.db)
        table = schema.audit_refusals
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(table).where(table.c.address == address))).all()
        counts: dict[tuple[str, str, str, int], int] = {}
        for row in rows:
            key = (row.action, row.login, row.code, row.status)
            counts[key] = counts.get(key, 0) + row.attempts
        return counts

    async def audit(self) -> list[Any]:
        async with self.db.read() as conn:
            return list(
                (await conn.execute(sa.select(schema.audit).order_by(schema.audit.c.id))).all()
            )


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def office(central_db_url: str, aiohttp_client: ClientFactory) -> Office:
    """The central server over a fresh database (SQLite or PostgreSQL), no expiry task."""
    client = await aiohttp_client(create_app(central_config(central_db_url), run_expiry=False))
    office = Office(client)
    async with office.db.write() as conn:
        await install_test_programs(conn, _now())
    return office
