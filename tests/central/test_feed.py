"""What stores download: pages of card states after a (cursor, card) position, and the snapshot."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from central import feed, schema
from central.api import PHONE_HASHER_KEY
from central.db import head_cursor, next_cursor
from shared.protocol import CardState, ChangesResponse, SnapshotHeader
from tests.central.conftest import Central, StoreOps

#: More cards at one cursor than one page holds, as after a campaign to every card.
SAME_CURSOR_CARDS = 2500


async def add_cards_at_one_cursor(central: Central, count: int) -> list[str]:
    numbers = [f"55{index:08d}" for index in range(count)]
    async with central.db.write() as conn:
        cursor = await next_cursor(conn)
        await conn.execute(
            schema.cards.insert(),
            [{"number": n, "cursor": cursor, "created_at": datetime.now(UTC)} for n in numbers],
        )
    return numbers


async def pull(
    central: Central, cursor: int, card: str | None, limit: int
) -> list[ChangesResponse]:
    """Every page from a position to the end of the feed."""
    pages = []
    for _ in range(100):
        params = {"cursor": str(cursor), "limit": str(limit)}
        if card:
            params["card"] = card
        status, body = await central.get("/sync/v1/changes", **params)
        assert status == 200, body
        page = ChangesResponse.model_validate(body)
        pages.append(page)
        cursor, card = page.next_cursor, page.next_card
        if not page.more:
            return pages
    raise AssertionError("the feed did not end")


async def test_pages_within_one_cursor_miss_and_repeat_nothing(
    central: Central, s1: StoreOps
) -> None:
    status, _ = await central.upload(s1.register("1000000001", "9160000001"))
    assert status == 200
    assert await central.scalar(sa.select(schema.stores.c.last_sync_at)) is None
    bulk = await add_cards_at_one_cursor(central, SAME_CURSOR_CARDS)
    status, _ = await central.upload(s1.sale("1000000001", accrued=100))
    assert status == 200

    pages = await pull(central, 0, None, 1000)
    numbers = [card.number for page in pages for card in page.cards]
    assert len(numbers) == len(set(numbers)) == SAME_CURSOR_CARDS + 1
    assert set(numbers) == {*bulk, "1000000001"}
    # Feed order: by cursor, then by number; a page that ends inside a cursor names its card.
    keys = [(card.cursor, card.number) for page in pages for card in page.cards]
    assert keys == sorted(keys)
    assert [len(page.cards) for page in pages] == [1000, 1000, 501]
    assert [page.more for page in pages] == [True, True, False]
    assert pages[0].next_card == bulk[999]
    assert pages[0].next_cursor == pages[0].cards[-1].cursor
    async with central.db.read() as conn:
        head = await head_cursor(conn)
    assert pages[-1].next_cursor == head
    assert pages[-1].next_card is None
    assert pages[0].settings is not None  # from cursor 0 the settings come along
    # The office sees when the store last pulled to the head.
    last_sync_at = await central.scalar(sa.select(schema.stores.c.last_sync_at))
    assert last_sync_at is not None

    # From the end, only what changes next.
    status, _ = await central.upload(s1.sale("1000000001", accrued=50))
    assert status == 200
    later = await pull(central, pages[-1].next_cursor, None, 1000)
    assert [card.number for page in later for card in page.cards] == ["1000000001"]
    assert later[-1].settings is None


async def test_the_snapshot_is_gzip_json_lines_with_a_header(
    central: Central, s1: StoreOps
) -> None:
    status, _ = await central.upload(
        s1.register("1000000001", "9160000001"), s1.sale("1000000001", accrued=100)
    )
    assert status == 200
    bulk = await add_cards_at_one_cursor(central, 5001)  # more than one snapshot chunk
    response = await central.client.get(
        "/sync/v1/snapshot", headers=central.headers(), auto_decompress=False
    )
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Type"] == "application/x-ndjson"
    lines = gzip.decompress(await response.read()).splitlines()
    header = SnapshotHeader.model_validate_json(lines[0])
    async with central.db.read() as conn:
        assert header.cursor == await head_cursor(conn)
    # The key of the phone hashes never travels to stores (docs/security.md).
    assert "phone_key" not in json.loads(lines[0])
    states = [CardState.model_validate_json(line) for line in lines[1:]]
    assert [state.number for state in states] == sorted(["1000000001", *bulk])
    registered = states[0]
    assert registered.phone_last4 == "0001"
    # The slow hash is computed centrally, once, so that a store's bootstrap hashes nothing.
    key = central.client.app[PHONE_HASHER_KEY].key
    assert registered.phone_hash == key.hash("9160000001")
    assert [lot.remaining for lot in registered.lots] == [100]
    # No personal data travels to stores.
    assert "9160000001" not in json.dumps([json.loads(line) for line in lines])


async def test_a_page_is_bounded_by_lots_as_well_as_by_cards(
    central: Central, s1: StoreOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cards whose history is long make a page short: its memory does not grow with history."""
    monkeypatch.setattr(feed, "PAGE_LOTS_MAX", 70)
    lots = {
        "1000000001": 30,
        "1000000002": 30,
        "1000000003": 80,
        "1000000004": 30,
        "1000000005": 30,
    }
    ops = [s1.register(card, f"916000000{card[-1]}") for card in lots]
    ops += [s1.sale(card, accrued=100) for card, count in lots.items() for _ in range(count)]
    status, body = await central.upload(*ops)
    assert status == 200, body

    pages = await pull(central, 0, None, 1000)
    # A page stops before the card that would take it over the budget; a card with more lots
    # than the budget comes alone rather than never.
    assert [[card.number[-1] for card in page.cards] for page in pages] == [
        ["1", "2"],
        ["3"],
        ["4", "5"],
    ]
    assert [sum(len(card.lots) for card in page.cards) for page in pages] == [60, 80, 60]
    assert [page.more for page in pages] == [True, True, False]
    assert pages[0].next_card == "1000000002"
