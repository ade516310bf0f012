"""The central server's phone hashes: computed at registration (a bounded number a batch),
converted for older cards by a resumable ``phones rehash``, and handed to stores only as the key
file ``phone-key export`` writes."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from central import cli, schema
from central.api import PHONE_HASHER_KEY
from central.db import Database, _alembic_config, migrate, next_cursor
from central.phones import RehashProgress, count_stale, rehash
from central.phones import load_phone_key as central_key
from central.sync import REGISTRATIONS_PER_BATCH_MAX
from service.phonekey import PhoneHasher, load_phone_key
from tests.central.conftest import Central, StoreOps
from tests.phonekeys import TEST_CENTRAL_ENV, TEST_PHONE_HASH


async def test_a_registration_gets_the_slow_hash_and_a_batch_applies_a_bounded_number(
    central: Central, s1: StoreOps
) -> None:
    extra = 20
    ops = [
        s1.register(f"10000{index:05d}", f"916{index:07d}")
        for index in range(REGISTRATIONS_PER_BATCH_MAX + extra)
    ]
    status, first = await central.upload(*ops)
    assert status == 200, first
    # Only the first hundred registrations: each costs a slow hash, and the store must get its
    # answer within its timeout; it sends the rest in its next batch.
    assert first["acked_seq"] == ops[REGISTRATIONS_PER_BATCH_MAX - 1]["seq"]
    assert len(first["results"]) == REGISTRATIONS_PER_BATCH_MAX
    status, second = await central.upload(*ops[REGISTRATIONS_PER_BATCH_MAX:])
    assert status == 200, second
    assert second["acked_seq"] == ops[-1]["seq"]
    key = central.client.app[PHONE_HASHER_KEY].key
    async with central.db.read() as conn:
        rows = (
            await conn.execute(sa.select(schema.cards.c.phone, schema.cards.c.phone_hash))
        ).all()
    assert len(rows) == len(ops)
    assert all(row.phone_hash == key.hash(row.phone) for row in rows)


async def _cards(db: Database, rows: list[dict[str, object]]) -> None:
    async with db.write() as conn:
        cursor = await next_cursor(conn)
        await conn.execute(
            schema.cards.insert(),
            [
                {"verified": True, "cursor": cursor, "created_at": datetime.now(UTC), **row}
                for row in rows
            ],
        )


async def test_rehash_converts_older_cards_resumes_where_it_stopped_and_skips_merged_ones(
    central_db_url: str,
) -> None:
    db = Database(central_db_url)
    try:
        await migrate(db.engine)
        key = await central_key(db, TEST_PHONE_HASH)
        phones = {f"77{index:011d}": f"917{index:07d}" for index in range(25)}
        rows: list[dict[str, object]] = [
            {"number": number, "status": "active", "phone": phone, "phone_hash": None}
            for number, phone in phones.items()
        ]
        rows[0]["phone_hash"] = "ab" * 32  # an old HMAC hash
        rows[1]["phone_hash"] = "0badc0de:" + "00" * 16  # another key's
        rows[2]["phone_hash"] = key.hash(str(rows[2]["phone"]))  # already converted
        merged = {"number": "7799999999999", "status": "merged", "merged_into": "7700000000003"}
        await _cards(db, [*rows, {**merged, "phone": "9170000003", "phone_hash": None}])
        assert await count_stale(db, key) == 24

        hasher = PhoneHasher(key)
        try:

            def stop_after_a_chunk(progress: RehashProgress) -> None:
                raise KeyboardInterrupt  # Ctrl-C after the first chunk was written

            with pytest.raises(KeyboardInterrupt):
                await rehash(db, hasher, chunk_cards=10, report=stop_after_a_chunk)
            assert await count_stale(db, key) == 24 - 10
            done = await rehash(db, hasher, chunk_cards=10)
        finally:
            hasher.close()
        assert done.converted == 24 - 10
        assert await count_stale(db, key) == 0
        async with db.read() as conn:
            result = await conn.execute(
                sa.select(schema.cards.c.number, schema.cards.c.phone_hash, schema.cards.c.cursor)
            )
            rows_after = {row.number: row for row in result}
        found = {number: row.phone_hash for number, row in rows_after.items()}
        # Converted cards moved to a newer cursor of the feed (stores take their new hashes);
        # the one already converted did not move.
        untouched = rows_after[str(rows[2]["number"])].cursor
        assert all(
            row.cursor > untouched
            for number, row in rows_after.items()
            if number not in (rows[2]["number"], merged["number"])
        )
        for number, phone in phones.items():
            assert found[number] == key.hash(phone)
        # A merged card is found by phone through its primary only.
        assert found[merged["number"]] is None
    finally:
        await db.close()


async def test_the_migration_drops_the_old_hashes(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite3'}")
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(
                lambda sync: command.upgrade(_alembic_config(sync), "0003_campaign_journal")
            )
        await _cards(
            db,
            [
                {
                    "number": "7700000000001",
                    "status": "active",
                    "phone": "9170000001",
                    "phone_hash": "ab" * 32,
                },
                {
                    "number": "7700000000002",
                    "status": "active",
                    "phone": "9170000002",
                    "phone_hash": "0badc0de:" + "00" * 16,
                },
            ],
        )
        await migrate(db.engine)
        async with db.read() as conn:
            hashes = (
                (
                    await conn.execute(
                        sa.select(schema.cards.c.phone_hash).order_by(schema.cards.c.number)
                    )
                )
                .scalars()
                .all()
            )
        # The old HMAC hash would give the phone back with the old key, which every store of
        # the old protocol holds: it must never reach a store of the new one.
        assert hashes == [None, "0badc0de:" + "00" * 16]
    finally:
        await db.close()


async def test_phone_key_export_writes_a_private_file_the_agent_reads(
    tmp_path: Path,
    central_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BONUS_CENTRAL_DATABASE_URL", central_db_url)
    for name, value in TEST_CENTRAL_ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "phone-key"
    # A fresh database: the chain's IT migrates it first (nothing else creates the schema).
    assert await asyncio.to_thread(cli.main, ["migrate"]) == 0
    assert await asyncio.to_thread(cli.main, ["phone-key", "export", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found = load_phone_key(path, {})
    assert found.key is not None
    db = Database(central_db_url)
    try:
        assert found.key == await central_key(db, TEST_PHONE_HASH)
    finally:
        await db.close()
    assert found.key.key_id in capsys.readouterr().err
    # An installed key is never overwritten by mistake.
    assert await asyncio.to_thread(cli.main, ["phone-key", "export", str(path)]) == 1
    assert await asyncio.to_thread(cli.main, ["phone-key", "export", str(path), "--force"]) == 0
    assert await asyncio.to_thread(cli.main, ["phones", "rehash", "--check"]) == 0
    assert "cards to hash with phone key" in capsys.readouterr().out
