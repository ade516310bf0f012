"""The snapshot's fast path writes exactly the card states the pages of changes send."""

from __future__ import annotations

import contextlib
import gzip
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from central import feed, schema, snapshot
from central.db import next_cursor
from shared.protocol import CardState, SnapshotHeader
from tests.central.conftest import Central

TODAY = date(2026, 5, 1)


async def seed_varied_cards(central: Central) -> list[str]:
    """Cards of every shape a state can take: statuses, barcodes, holds, lots kept and not."""
    now = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
    cards = []
    lots = []
    holds = []
    for index in range(23):
        number = f"30000000{index:02d}"
        cards.append(
            {
                "number": number,
                "barcode": f"B{index}" if index % 4 == 0 else None,
                "status": ("active", "blocked", "merged")[index % 3],
                "merged_into": "3000000000" if index % 3 == 2 else None,
                "phone": f"91600000{index:02d}" if index % 5 else None,
                "phone_hash": f"{index:064x}" if index % 5 else None,
                "verified": index % 2 == 0,
                "debt_kop": index * 7 if index % 6 == 0 else 0,
                "last_purchase_on": TODAY - timedelta(days=index) if index % 2 else None,
                "created_at": now,
            }
        )
        for k in range(index % 4):  # 0 to 3 lots
            lots.append(
                {
                    # Lot ids out of insertion order: the states list them by id.
                    "lot_id": f"{number}:lot-{3 - k}",
                    "card": number,
                    "amount_kop": 1000 + k,
                    "remaining_kop": (0, 500, 1000 + k)[k % 3],
                    "created_on": TODAY - timedelta(days=30 * k),
                    "expires_on": None if index % 7 == 0 else TODAY + timedelta(days=90 - k),
                    "active_from": TODAY + timedelta(days=3) if k == 2 else None,
                    "source": ("purchase", "campaign", "adjustment")[k % 3],
                    "source_ref": None if k == 1 else f'чек "№{index}"\\{k}\t',
                }
            )
        # Spent long ago, or spent and expired: not in the state.
        lots.append(
            {
                "lot_id": f"{number}:old",
                "card": number,
                "amount_kop": 100,
                "remaining_kop": 0,
                "created_on": TODAY - timedelta(days=500),
                "expires_on": None,
                "active_from": None,
                "source": "purchase",
                "source_ref": None,
            }
        )
        if index % 5 == 1:
            for state in ("active", "released"):
                holds.append(
                    {
                        "hold_id": f"{number}:{state}",
                        "card": number,
                        "store_id": "s1",
                        "amount_kop": 300,
                        "expires_at": now + timedelta(minutes=2),
                        "state": state,
                    }
                )
    async with central.db.write() as conn:
        cursor = await next_cursor(conn)
        await conn.execute(schema.cards.insert(), [{**card, "cursor": cursor} for card in cards])
        await conn.execute(schema.lots.insert(), lots)
        await conn.execute(schema.holds.insert(), holds)
    return [card["number"] for card in cards]


async def test_the_lines_are_the_states_of_the_pages_of_changes(central: Central) -> None:
    numbers = await seed_varied_cards(central)
    async with central.db.read() as conn:
        rows = list(
            (await conn.execute(sa.select(schema.cards).order_by(schema.cards.c.number))).all()
        )
        expected = [
            state.model_dump_json().encode() for state in await feed.card_states(conn, rows, TODAY)
        ]
        for size in (5, 23, 1000):  # chunks ending inside the cards, on the last, after it
            async with contextlib.aclosing(snapshot.card_lines(conn, TODAY, size)) as chunks:
                lines = b"".join([chunk async for chunk in chunks]).splitlines()
            assert lines == expected, size
    states = [CardState.model_validate_json(line) for line in lines]
    assert [state.number for state in states] == numbers
    assert {len(state.lots) for state in states} == {0, 1, 2, 3}
    assert sum(len(state.holds) for state in states) == 5
    assert any(state.lots and state.lots[0].expires_on is None for state in states)


async def test_a_client_that_stops_reading_leaves_the_connection_usable(
    central: Central,
) -> None:
    await seed_varied_cards(central)
    async with central.db.read() as conn:
        async with contextlib.aclosing(snapshot.card_lines(conn, TODAY, 5)) as chunks:
            async for _ in chunks:
                break  # the next chunk is being read: closing must wait for it
        assert await conn.scalar(sa.select(sa.func.count()).select_from(schema.cards)) == 23


async def test_the_served_snapshot_has_the_header_then_every_state(central: Central) -> None:
    await seed_varied_cards(central)
    response = await central.client.get(
        "/sync/v1/snapshot", headers=central.headers(), auto_decompress=False
    )
    assert response.status == 200
    lines = gzip.decompress(await response.read()).splitlines()
    header = SnapshotHeader.model_validate_json(lines[0])
    assert header.cards == 23
    assert len(lines) == 24
    for line in lines[1:]:
        CardState.model_validate_json(line)
