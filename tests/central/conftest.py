"""Fixtures of the central server's sync tests: the app in-process over each database, a store
registered with its token, and operations shaped as ``agent/operations.py`` builds them."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from central.api import DB_KEY
from central.app import create_app
from central.db import Database, migrate
from central.invariants import InvariantReport, check_invariants
from central.stores import add_store
from shared.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION, STORE_HEADER
from tests.phonekeys import central_config

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
#: The day of the stores' sales unless a test says otherwise.
SALE_DAY = date(2026, 5, 1)


@dataclass
class StoreOps:
    """Builds a store's journal operations in sequence order, as its agent records them."""

    store_id: str
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    receipts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def op(self, kind: str, card: str, payload: dict[str, Any], *, seq: int | None = None) -> dict:
        number = seq if seq is not None else next(self.seq)
        return {
            "seq": number,
            "op_id": f"{self.store_id}-op-{number}",
            "kind": kind,
            "card": card,
            "created_at": datetime.now(UTC).isoformat(),
            "payload": {"card": card, **payload},
        }

    def register(self, card: str, phone: str) -> dict[str, Any]:
        return self.op(
            "register",
            card,
            {
                "phone": phone,
                "virtual": True,
                "profile": None,
                "consents": {"personal_data": True, "advertising": False},
                "effect": {},
            },
        )

    def sale(
        self,
        card: str,
        *,
        accrued: int = 0,
        redeemed: int = 0,
        day: date = SALE_DAY,
        expires_on: date | None = None,
        never_expires: bool = False,
        receipt_id: str | None = None,
        amount: int = 100_000,
    ) -> dict[str, Any]:
        """A one-line sale accruing and redeeming these kopecks."""
        receipt = receipt_id or f"{self.store_id}-R{next(self.receipts)}"
        lot = f"{receipt}:a" if accrued else None
        return self.op(
            "sale",
            card,
            {
                "receipt_id": receipt,
                "day": day.isoformat(),
                "lines": [
                    {
                        "line_id": "1",
                        "sku": "SKU-1",
                        "qty": "1",
                        "amount": amount,
                        "vital": False,
                        "accrued": accrued,
                        "redeemed": redeemed,
                    }
                ],
                "hold_id": None,
                "cashier": None,
                "settings_version": 1,
                "accrual_lot": lot,
                "accrual_expires_on": None
                if never_expires or not accrued
                else (expires_on or day + timedelta(days=183)).isoformat(),
                "accrual_active_from": None,
                "effect": {
                    "accrued": accrued,
                    "redeemed": redeemed,
                    "delta": accrued - redeemed,
                    "debt_paid": 0,
                },
            },
        )

    def return_(self, card: str, receipt_id: str, qty: str = "1") -> dict[str, Any]:
        return self.op(
            "return",
            card,
            {
                "receipt_id": receipt_id,
                "return_id": f"RET-{receipt_id}-{qty}",
                "accrual_lot": f"{receipt_id}:a",
                "day": SALE_DAY.isoformat(),
                "lines": [{"line_id": "1", "qty": qty}],
                "effect": {},
            },
        )


@dataclass
class Central:
    """The central app in-process, with one registered store."""

    client: TestClient[Any, Any]
    url: str
    store_id: str
    token: str

    @property
    def db(self) -> Database:
        return self.client.app[DB_KEY]

    def headers(self, **changes: str) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.token}",
            STORE_HEADER: self.store_id,
            PROTOCOL_HEADER: str(PROTOCOL_VERSION),
        }
        headers.update(changes)
        return headers

    async def upload(self, *ops: dict[str, Any], **headers: str) -> tuple[int, Any]:
        response = await self.client.post(
            "/sync/v1/upload", json={"ops": list(ops)}, headers=self.headers(**headers)
        )
        return response.status, await response.json()

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        response = await self.client.get(path, params=params, headers=self.headers())
        return response.status, await response.json()

    async def scalar(self, statement: Any) -> Any:
        async with self.db.read() as conn:
            return await conn.scalar(statement)

    async def rows(self, statement: Any) -> list[Any]:
        async with self.db.read() as conn:
            return list((await conn.execute(statement)).all())

    async def execute(self, statement: Any) -> None:
        async with self.db.write() as conn:
            await conn.execute(statement)

    async def invariants(self) -> InvariantReport:
        async with self.db.read() as conn:
            return await check_invariants(conn)


async def register_store(url: str, store_id: str) -> str:
    """Migrate the database and register a store; its token."""
    db = Database(url)
    try:
        await migrate(db.engine)
        async with db.write() as conn:
            return await add_store(conn, store_id, f"Аптека {store_id}", datetime.now(UTC))
    finally:
        await db.close()


@pytest.fixture
async def central(central_db_url: str, aiohttp_client: ClientFactory) -> Central:
    """The central server in-process over a fresh database, with store ``s1``."""
    token = await register_store(central_db_url, "s1")
    client = await aiohttp_client(create_app(central_config(central_db_url), run_expiry=False))
    return Central(client, central_db_url, "s1", token)


@pytest.fixture
def s1() -> StoreOps:
    """Store ``s1``'s journal."""
    return StoreOps("s1")


def count_of(table: sa.Table, *where: Any) -> Any:
    """``SELECT count(*) FROM table WHERE …``."""
    return sa.select(sa.func.count()).select_from(table).where(*where)
