"""The chain's phone key never reaches a store's database (docs/security.md): a copy of the
database gives no key and no phone away, yet the store finds its customers by phone after its
snapshot, after registering one before its first sync, and after a restart without network; and a
store upgraded from a database that held the old key loses it and its hashes, then takes new ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from agent.db import MIGRATIONS, _statements
from central import schema
from shared.phones import PhoneKey
from tests.e2e.system import System, add_cards, query

pytestmark = pytest.mark.slow

KNOWN_PHONES = ["9168000001", "9168000002", "9168000003"]
LOCAL_PHONE = "9168000077"
#: How long a store may take to empty its write-ahead log after an acknowledgement.
LOG_TRUNCATE_WAIT_S = 10.0


def database_files(db_path: Path) -> bytes:
    """Every byte of the store's database as a stolen disk has it: the file and its log."""
    found = b""
    for suffix in ("", "-wal", "-shm"):
        path = db_path.with_name(db_path.name + suffix)
        if path.exists():
            found += path.read_bytes()
    return found


def backup_copy(db_path: Path, target: Path) -> sqlite3.Connection:
    """A backup as SQLite makes it (what a support dump or a nightly backup holds)."""
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
    return copy


async def central_phone_hashes(url: str) -> dict[str, str | None]:
    rows = await query(url, sa.select(schema.cards.c.number, schema.cards.c.phone_hash))
    return {row.number: row.phone_hash for row in rows}


async def legacy_key(url: str) -> str:
    rows = await query(url, sa.select(schema.meta.c.value).where(schema.meta.c.key == "phone_key"))
    return str(rows[0].value)


async def wait_for_no_phones(db_path: Path, phones: list[str]) -> bytes:
    """The store's files once no phone is left in them (the log is emptied after an ack)."""
    deadline = asyncio.get_running_loop().time() + LOG_TRUNCATE_WAIT_S
    while True:
        blob = await asyncio.to_thread(database_files, db_path)
        left = [phone for phone in phones if phone.encode() in blob]
        if not left or asyncio.get_running_loop().time() > deadline:
            assert not left, f"phones still in the store's files: {left}"
            return blob
        await asyncio.sleep(0.2)


async def test_a_store_finds_customers_by_phone_and_a_copy_of_its_database_gives_none_away(
    system: System, tmp_path: Path
) -> None:
    await system.prepare(["s1"])
    key = PhoneKey.from_text(system.phone_key_file.read_text(encoding="utf-8"))
    known = dict(zip(KNOWN_PHONES, await add_cards(system.database_url, KNOWN_PHONES), strict=True))
    agent, till = system.agent("s1"), system.till("s1")

    # The central server is not up yet: the store registers a customer before its first sync,
    # and finds her by phone at once.
    await system.start_agents("s1")
    local = await till.register(LOCAL_PHONE)
    assert (await till.found(phone=LOCAL_PHONE))["card"]["number"] == local
    with sqlite3.connect(f"file:{agent.data_dir / 'agent.sqlite3'}?mode=ro", uri=True) as conn:
        (local_hash,) = conn.execute(
            "SELECT phone_hash FROM cards WHERE number = ?", (local,)
        ).fetchone()

    # The first sync: the snapshot brings the chain's cards, the upload the local one.
    started = datetime.now(UTC)
    await system.central.start()
    await till.wait_acked()
    await till.wait_synced(started)
    central = await central_phone_hashes(system.database_url)
    # The store and the central server hash alike: the card registered here keeps its hash.
    assert local_hash == central[local] == key.hash(LOCAL_PHONE)
    for phone, card in known.items():
        assert central[card] == key.hash(phone)
        assert (await till.found(phone=phone))["card"]["number"] == card
    assert (await till.found(phone=LOCAL_PHONE))["card"]["number"] == local
    status = await till.status()
    assert status["phone_lookup_allowed"], status
    assert status["phone_key_id"] == key.key_id

    # A copy of the store's database: no key (the chain's, nor the old protocol's), no phone.
    db_path = agent.data_dir / "agent.sqlite3"
    blob = await wait_for_no_phones(db_path, [*KNOWN_PHONES, LOCAL_PHONE])
    old_key = await legacy_key(system.database_url)
    for secret in (key.secret, key.secret.hex().encode(), old_key.encode()):
        assert secret not in blob
    copy = backup_copy(db_path, tmp_path / "copy.sqlite3")
    try:
        meta = dict(copy.execute("SELECT key, value FROM meta").fetchall())
        assert "phone_key" not in meta
        assert all(key.secret.hex() not in value for value in meta.values())
        hashes = [row[0] for row in copy.execute("SELECT phone_hash FROM cards")]
        # Every hash is the slow one (``PhoneKey.hash``), tagged with the key's id.
        assert len(hashes) == len(known) + 1
        assert all(h is not None and key.made_it(h) for h in hashes), hashes
    finally:
        copy.close()

    # A restart without network: the key comes from its file again, the hashes from the replica.
    await system.central.stop()
    await agent.stop()
    await agent.start()
    for phone, card in [*known.items(), (LOCAL_PHONE, local)]:
        assert (await till.found(phone=phone))["card"]["number"] == card
    assert not (await till.status())["online"]


def old_store_database(db_path: Path, legacy_key_hex: str, cards: dict[str, str]) -> None:
    """A store's database as the previous release left it: migrations up to 0003, the chain's
    legacy key in meta, and HMAC hashes of its cards' phones, after a snapshot."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        for name, sql in MIGRATIONS[:3]:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, datetime('now'))", (name,))
        legacy = bytes.fromhex(legacy_key_hex)
        meta = {"phone_key": legacy_key_hex, "cursor": 1, "cursor_card": None}
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [(name, json.dumps(value)) for name, value in meta.items()],
        )
        conn.executemany(
            "INSERT INTO cards (number, phone_hash, phone_last4, verified) VALUES (?, ?, ?, 1)",
            [
                (number, hmac.new(legacy, phone.encode(), hashlib.sha256).hexdigest(), phone[-4:])
                for number, phone in cards.items()
            ],
        )
    finally:
        conn.close()


async def test_an_upgraded_store_drops_the_old_key_and_takes_new_hashes(system: System) -> None:
    await system.prepare(["s1"])
    key = PhoneKey.from_text(system.phone_key_file.read_text(encoding="utf-8"))
    known = dict(zip(KNOWN_PHONES, await add_cards(system.database_url, KNOWN_PHONES), strict=True))
    old_key = await legacy_key(system.database_url)
    agent, till = system.agent("s1"), system.till("s1")
    db_path = agent.data_dir / "agent.sqlite3"
    old_store_database(db_path, old_key, {card: phone for phone, card in known.items()})
    assert old_key.encode() in database_files(db_path)

    # Upgraded and started offline: the old key and its hashes are gone from every file, and a
    # lookup by phone says the cards are being updated rather than "not found" (a cashier would
    # register a known customer again).
    await system.start_agents("s1")
    assert old_key.encode() not in await asyncio.to_thread(database_files, db_path)
    status, body = await till.lookup(phone=KNOWN_PHONES[0])
    assert status == 424, body
    assert body["error"]["code"] == "phone_lookup_unavailable"
    assert body["error"]["details"]["reason"] == "replica_updating"
    assert not (await till.status())["phone_lookup_allowed"]
    assert (await till.found(card=known[KNOWN_PHONES[0]]))["card"]["number"] == known[
        KNOWN_PHONES[0]
    ]

    # Once the central server answers, a new snapshot brings the new hashes.
    started = datetime.now(UTC)
    await system.central.start()
    await till.wait_synced(started)
    for phone, card in known.items():
        assert (await till.found(phone=phone))["card"]["number"] == card
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        hashes = [row[0] for row in conn.execute("SELECT phone_hash FROM cards")]
        assert conn.execute("SELECT count(*) FROM meta WHERE key = 'phone_key'").fetchone() == (0,)
    assert all(key.made_it(h) for h in hashes), hashes
    assert (await till.status())["phone_lookup_allowed"]
