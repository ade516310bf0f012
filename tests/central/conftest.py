"""Fixtures of the central server's sync tests: the app in-process over each database, a store
registered with its token, and operations as an honest agent records them (``tests/honest.py``:
the fixtures' databases hold its test programs)."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from central import schema
from central.api import DB_KEY
from central.app import create_app
from central.db import Database, migrate
from central.invariants import InvariantReport, check_invariants
from central.stores import add_store
from shared.journal import (
    Consents,
    HoldPlaced,
    HoldReleased,
    Operation,
    Registration,
    Return,
    ReturnLine,
    Verification,
)
from shared.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION, STORE_HEADER
from tests.honest import SIX_MONTHS, honest_sale, install_test_programs
from tests.phonekeys import central_config

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
#: The day of the stores' sales unless a test says otherwise.
SALE_DAY = date(2026, 5, 1)


@dataclass
class StoreOps:
    """Builds a store's journal operations in sequence order, as an honest agent records them
    (``tests/honest.py``), in the wire form of the current protocol."""

    store_id: str
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    receipts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def op(self, operation: Operation, *, seq: int | None = None) -> dict[str, Any]:
        number = seq if seq is not None else next(self.seq)
        return {
            "seq": number,
            "op_id": f"{self.store_id}-op-{number}",
            "created_at": datetime.now(UTC).isoformat(),
            "operation": operation.model_dump(mode="json"),
        }

    def register(self, card: str, phone: str) -> dict[str, Any]:
        return self.op(
            Registration(
                card=card,
                phone=phone,
                virtual=True,
                consents=Consents(personal_data=True, advertising=False),
            )
        )

    def sale(
        self,
        card: str,
        *,
        accrued: int = 0,
        redeemed: int = 0,
        day: date = SALE_DAY,
        receipt_id: str | None = None,
        version: int = SIX_MONTHS,
    ) -> dict[str, Any]:
        """A one-line sale that accrues and redeems these kopecks."""
        receipt = receipt_id or f"{self.store_id}-R{next(self.receipts)}"
        return self.op(
            honest_sale(
                card, receipt, day=day, accrued_kop=accrued, redeemed_kop=redeemed, version=version
            )
        )

    def return_(
        self,
        card: str,
        receipt_id: str,
        qty: str = "1",
        *,
        reversed_kop: int = 0,
        refunded_kop: int = 0,
    ) -> dict[str, Any]:
        """A return of ``qty`` of the receipt's one line; the store's figures as given."""
        return self.op(
            Return(
                card=card,
                receipt_id=receipt_id,
                return_id=f"RET-{receipt_id}-{qty}",
                day=SALE_DAY,
                lines=(ReturnLine(line_id="1", qty=Decimal(qty)),),
                accrual_reversed_kop=reversed_kop,
                redemption_refunded_kop=refunded_kop,
            )
        )

    def hold(self, card: str, hold_id: str, amount: int, expires_at: datetime) -> dict[str, Any]:
        return self.op(
            HoldPlaced(card=card, hold_id=hold_id, amount_kop=amount, expires_at=expires_at)
        )

    def release(self, card: str, hold_id: str) -> dict[str, Any]:
        return self.op(HoldReleased(card=card, hold_id=hold_id, state="released"))

    def verify(self, card: str) -> dict[str, Any]:
        return self.op(Verification(card=card))


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
            if (
                await conn.scalar(sa.select(sa.func.count()).select_from(schema.settings_versions))
                == 0
            ):
                await install_test_programs(conn, datetime.now(UTC))
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
