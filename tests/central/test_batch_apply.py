"""A batch applies exactly as its operations one by one would; concurrent batches keep the change
feed's cursor monotonic and complete; the bulk writes store what SQLAlchemy's statements store."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from central import schema
from central.bulk import insert_rows, one_of, update_rows
from central.db import Database
from central.phones import load_phone_key
from central.sync import upload
from service.phonekey import PhoneHasher
from shared.protocol import UploadRequest
from tests.central.conftest import SALE_DAY, Central, StoreOps, register_store
from tests.conftest import NewDatabase
from tests.phonekeys import TEST_PHONE_HASH

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def other_db_url(central_db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A second fresh database of the same kind as ``central_db_url``."""
    if central_db_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / 'other.sqlite3'}"
    new_database: NewDatabase = request.getfixturevalue("pg_cluster")
    return new_database()


def _hold(store: StoreOps, card: str, hold_id: str, amount: int) -> dict[str, Any]:
    return store.hold(card, hold_id, amount, NOW + timedelta(minutes=10))


def _scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A first batch (state already in the ledger), then one batch with registrations, merges,
    sales, returns, holds and rejections, several on the same cards."""
    s = StoreOps("s1")
    before = [
        s.register("1000000010", "9160000003"),
        s.sale("1000000010", accrued=4000, receipt_id="OLD-1"),
    ]
    batch = [
        s.register("1000000001", "9160000001"),
        s.register("1000000002", "9160000001"),  # the same phone: merged into …01
        s.register("1000000003", "9160000002"),
        s.register("1000000011", "9160000003"),  # the phone of a card already in the ledger
        s.sale("1000000001", accrued=5000, receipt_id="R1"),
        s.sale("1000000002", accrued=3000, receipt_id="R2"),  # applies to the primary
        s.register("1000000001", "9160000009"),  # another phone: rejected
        s.register("1000000001", "9160000001"),  # again, same phone: applied, no change
        s.sale("1000000003", accrued=1000, receipt_id="R3"),
        s.sale("1000000003", redeemed=2500, receipt_id="R4"),  # beyond the balance: debt
        s.return_("1000000003", "R4"),
        s.return_("1000000001", "R1"),
        s.sale("1000000001", accrued=10, receipt_id="R1"),  # a recorded receipt id: rejected
        s.return_("1000000001", "NOPE"),  # an unknown receipt: rejected
        s.sale("1999999999", accrued=10),  # an unknown card: rejected
        s.verify("1000000001"),
        _hold(s, "1000000001", "H1", 500),
        s.release("1000000001", "H1"),
        s.register("1000000004", "9160000002"),  # merged into …03
        s.sale("1000000004", accrued=700, receipt_id="R5"),
        s.return_("1000000010", "OLD-1"),  # a receipt of an earlier batch
        s.sale("1000000011", redeemed=100, receipt_id="R6"),  # on the old primary
        s.sale("1000000002", accrued=5, day=SALE_DAY + timedelta(days=1), receipt_id="R7"),
    ]
    return before, batch


async def _ledger(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every table an upload writes, in a comparable form (the feed cursor left out)."""
    tables: dict[str, tuple[sa.Table, list[Any]]] = {
        "cards": (schema.cards, [schema.cards.c.number]),
        "clients": (schema.clients, [schema.clients.c.card]),
        "lots": (schema.lots, [schema.lots.c.lot_id]),
        "holds": (schema.holds, [schema.holds.c.hold_id]),
        "transactions": (schema.transactions, [schema.transactions.c.id]),
        "store_ops": (schema.store_ops, [schema.store_ops.c.seq]),
        "receipts": (schema.receipts, [schema.receipts.c.receipt_id]),
    }
    out = {}
    async with db.read() as conn:
        for name, (table, order) in tables.items():
            # The phone key (so the hashes) differs between databases: only whether there is one.
            columns = [
                (c != None).label(c.name) if c.name == "phone_hash" else c  # noqa: E711
                for c in table.c
                if c.name != "cursor"
            ]
            rows = (await conn.execute(sa.select(*columns).order_by(*order))).all()
            out[name] = [tuple(row) for row in rows]
    return out


async def _apply(url: str, batches: list[list[dict[str, Any]]]) -> list[Any]:
    await register_store(url, "s1")
    db = Database(url)
    try:
        hasher = PhoneHasher(await load_phone_key(db, TEST_PHONE_HASH))
        results = []
        for ops in batches:
            answer = await upload(
                db, "s1", UploadRequest.model_validate({"ops": ops}).ops, NOW, hasher
            )
            results.extend(answer.results)
        ledger = await _ledger(db)
    finally:
        hasher.close()
        await db.close()
    return [results, ledger]


async def test_a_batch_applies_exactly_as_its_operations_one_by_one(
    central_db_url: str, other_db_url: str
) -> None:
    before, batch = _scenario()
    one_batch = await _apply(central_db_url, [[op] for op in before] + [batch])
    one_by_one = await _apply(other_db_url, [[op] for op in [*before, *batch]])
    results, ledger = one_batch
    statuses = [r.status for r in results]
    assert statuses.count("rejected") == 4, results
    assert sum(r.debt_added_kop for r in results) == 1500 + 100
    assert results == one_by_one[0]
    for table, rows in ledger.items():
        assert rows == one_by_one[1][table], table
    cards = {row[0]: row for row in ledger["cards"]}
    assert cards["1000000002"][2:4] == ("merged", "1000000001")
    assert cards["1000000004"][2:4] == ("merged", "1000000003")
    assert cards["1000000011"][2:4] == ("merged", "1000000010")


async def test_concurrent_uploads_keep_the_feed_monotonic_and_complete(central: Central) -> None:
    """Two stores upload batches at the same time while a third reads the feed: each answer's
    checkpoint grows, and a reader that followed the feed during the uploads ends with exactly
    the card states of a reader starting from 0 afterwards (no change was skipped)."""
    token2 = await register_store(central.url, "s2")
    stores = {"s1": (StoreOps("s1"), {}), "s2": (StoreOps("s2"), {"X-Store-Id": "s2"})}
    stores["s2"][1]["Authorization"] = f"Bearer {token2}"
    checkpoints: dict[str, list[int]] = {"s1": [], "s2": []}

    async def store(store_id: str, base: int) -> None:
        ops, headers = stores[store_id]
        cards = [str(base + n) for n in range(30)]
        batches = [
            [ops.register(card, f"916{base // 10**9}{n:06d}") for n, card in enumerate(cards)]
        ]
        for round_ in range(8):
            batches.append([ops.sale(card, accrued=100 + round_) for card in cards])
        for batch in batches:
            status, body = await central.upload(*batch, **headers)
            assert status == 200, body
            checkpoints[store_id].append(body["checkpoint"])

    seen: dict[str, Any] = {}
    done = asyncio.Event()

    async def follow(position: tuple[int, str | None]) -> tuple[int, str | None]:
        cursor, card = position
        while True:
            params = {"cursor": str(cursor), "limit": "7"}
            if card is not None:
                params["card"] = card
            status, page = await central.get("/sync/v1/changes", **params)
            assert status == 200, page
            for state in page["cards"]:
                seen[state["number"]] = state
            cursor, card = page["next_cursor"], page["next_card"]
            if not page["more"]:
                return cursor, card

    async def reader() -> None:
        position: tuple[int, str | None] = (0, None)
        while not done.is_set():
            position = await follow(position)
            await asyncio.sleep(0.005)
        await follow(position)

    reading = asyncio.create_task(reader())
    await asyncio.gather(store("s1", 1_000_000_000), store("s2", 2_000_000_000))
    done.set()
    await reading
    for values in checkpoints.values():
        assert values == sorted(values), values
        assert len(set(values)) == len(values), values
    assert not set(checkpoints["s1"]) & set(checkpoints["s2"])
    seen_during = dict(seen)
    seen.clear()
    await follow((0, None))
    assert len(seen) == 60
    assert seen_during == seen
    assert (await central.invariants()).ok


async def test_bulk_writes_store_what_sqlalchemy_stores(central_db_url: str) -> None:
    await register_store(central_db_url, "s1")
    db = Database(central_db_url)
    moment = datetime(2026, 5, 1, 9, 30, 15, 123456, tzinfo=UTC)

    def card(number: str) -> dict[str, Any]:
        return {
            "number": number,
            "status": "active",
            "merged_into": None,
            "phone": "9160000001",
            "phone_hash": "ab" * 32,
            "virtual": True,
            "created_store": "s1",
            "created_at": moment,
            "cursor": 0,
        }

    def receipt(receipt_id: str) -> dict[str, Any]:
        return {
            "store_id": "s1",
            "receipt_id": receipt_id,
            "card": "1",
            "day": date(2026, 5, 1),
            "lines": [{"line_id": "1", "qty": "1.5", "name": "Аспирин \"Байер\" \\ 'x'"}],
            "allocations": [["lot", 100]],
            "accrual_lot": None,
            "accrued_kop": 0,
            "redeemed_kop": 100,
            "returned": {},
            "refunded_kop": 0,
            "annulled": False,
        }

    try:
        async with db.write() as conn:
            await conn.execute(schema.cards.insert(), [card("1"), card("3")])
            await insert_rows(conn, schema.cards, [card("2"), card("4")])
            await conn.execute(schema.receipts.insert(), [receipt("A")])
            await insert_rows(conn, schema.receipts, [receipt("B")])
            await conn.execute(
                schema.cards.update()
                .where(schema.cards.c.number == "3")
                .values(debt_kop=5, last_purchase_on=date(2026, 5, 2), cursor=7)
            )
            await update_rows(
                conn,
                schema.cards,
                ["number"],
                [{"number": "4", "debt_kop": 5, "last_purchase_on": date(2026, 5, 2)}],
                constants={"cursor": 7},
            )
            for receipt_id in ("A", "B"):
                await update_rows(
                    conn,
                    schema.receipts,
                    ["store_id", "receipt_id"],
                    [
                        {
                            "store_id": "s1",
                            "receipt_id": receipt_id,
                            "returned": {"1": "0.5"},
                            "refunded_kop": 50,
                        }
                    ],
                )
        async with db.read() as conn:
            cards = (await conn.execute(sa.select(schema.cards).order_by("number"))).all()
            receipts = (await conn.execute(sa.select(schema.receipts).order_by("receipt_id"))).all()
            raw = (await conn.exec_driver_sql("SELECT created_at FROM cards ORDER BY number")).all()
    finally:
        await db.close()
    # 1 and 3 were written by SQLAlchemy's statements, 2 and 4 by the bulk writes.
    assert cards[0][1:] == cards[1][1:]
    assert cards[2][1:] == cards[3][1:]
    assert cards[2].created_at.replace(tzinfo=UTC) == moment
    assert cards[3].cursor == 7
    assert cards[3].debt_kop == 5
    assert len({row[0] for row in raw}) == 1, raw  # the very same stored form
    assert receipts[0][2:] == receipts[1][2:]
    assert receipts[1].returned == {"1": "0.5"}
    assert receipts[1].lines == receipt("B")["lines"]


async def test_one_of_sends_one_statement_whatever_the_number_of_values(
    central_db_url: str,
) -> None:
    """``one_of`` with 1, 7 or 1,500 values: the right rows, and the same SQL text each time.

    With a parameter per value every length is its own statement, and on SQLite each connection
    kept its last 128 of them, a few hundred KiB each: the central server's memory grew for an
    hour in the soak.
    """
    await register_store(central_db_url, "s1")
    db = Database(central_db_url)
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    try:
        numbers = [f"77{index:08d}" for index in range(1500)]
        async with db.write() as conn:
            await conn.execute(
                schema.cards.insert(),
                [{"number": n, "cursor": 0, "created_at": NOW} for n in numbers],
            )
        sa.event.listen(db.read_engine.sync_engine, "before_cursor_execute", record)
        found = []
        async with db.read() as conn:
            for wanted in (numbers[:1], numbers[3:10], [*numbers, "7799999999"]):
                query = sa.select(schema.cards.c.number).where(
                    one_of(schema.cards.c.number, wanted, conn.dialect)
                )
                found.append(sorted((await conn.scalars(query)).all()))
        assert found == [numbers[:1], numbers[3:10], numbers]
        selects = [text for text in sent if "cards.number" in text]
        assert len(selects) == 3
        assert len(set(selects)) == 1, selects[0][:300]
    finally:
        sa.event.remove(db.read_engine.sync_engine, "before_cursor_execute", record)
        await db.close()
