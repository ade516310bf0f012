"""The store's phone key: where it comes from, what a store without it (or with the wrong one)
still does, and the upgrade that takes the old key out of the database."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from agent.app import SYNCER_KEY
from agent.db import MIGRATIONS, Database, _statements
from agent.routes import CTX_KEY
from central.app import create_app as create_central
from central.db import Database as CentralDatabase
from central.db import migrate
from central.stores import add_store
from service.phonekey import CREDENTIAL_NAME, load_phone_key
from shared.phones import PhoneKey
from tests.agent.conftest import PHONE, PHONE10, AgentFactory, assert_error
from tests.phonekeys import central_config, new_phone_key, write_key_file

LEGACY_KEY = "5e" * 32


# --- where the key comes from -------------------------------------------------------------------


def test_the_systemd_credential_takes_the_place_of_the_configured_file(tmp_path: Path) -> None:
    configured = write_key_file(tmp_path / "etc" / "phone-key")
    credential = write_key_file(tmp_path / "credentials" / CREDENTIAL_NAME)
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path / "credentials")}
    found = load_phone_key(tmp_path / "etc" / "phone-key", environ)
    assert found.key == credential != configured
    assert found.path == tmp_path / "credentials" / CREDENTIAL_NAME
    # A unit that passes no such credential: the configured file.
    assert load_phone_key(tmp_path / "etc" / "phone-key", {}).key == configured


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no phone key file"),
        ("", "empty or not installed"),
        # The unit's SetCredential= fallback when the file was not installed.
        ("not-installed", "empty or not installed"),
        ("not json", "not JSON"),
        ('{"format": "bonus-phone-key/1", "key": "abcd", "memory_kib": 8, "time_cost": 1}', "32"),
    ],
)
def test_a_missing_or_damaged_key_is_a_problem_not_a_crash(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "phone-key"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    found = load_phone_key(path, {})
    assert found.key is None
    assert found.problem is not None
    assert problem in found.problem


def test_a_key_file_says_its_key_and_cost_and_refuses_a_damaged_id(tmp_path: Path) -> None:
    key = new_phone_key()
    again = PhoneKey.from_text(key.to_text())
    assert again == key
    assert again.hash(PHONE10) == key.hash(PHONE10)
    damaged = json.loads(key.to_text())
    damaged["memory_kib"] = 16  # another cost is another key id: the file no longer agrees
    path = tmp_path / "phone-key"
    path.write_text(json.dumps(damaged), encoding="utf-8")
    problem = load_phone_key(path, {}).problem
    assert problem is not None
    assert "key_id does not match" in problem


# --- without a key -------------------------------------------------------------------------------


async def test_without_a_key_the_store_serves_cards_by_number_and_says_why_not_by_phone(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    # A card registered while the key was there; then the key file is lost.
    agent = await make_agent()
    card = await agent.new_card()
    await agent.client.close()
    (tmp_path / "phone-key").unlink()
    agent = await make_agent(phone_key_file=tmp_path / "phone-key")
    status, body = await agent.get("/pos/v1/status")
    assert status == 200
    assert not body["phone_lookup_allowed"]
    assert body["phone_lookup_refusal"]["code"] == "phone_lookup_unavailable"
    assert "no phone key file" in body["phone_key_problem"]
    assert body["phone_key_id"] is None
    for path, request in (
        ("/pos/v1/cards/lookup", {"phone": PHONE}),
        ("/pos/v1/customers", {"phone": PHONE, "consents": {"personal_data": True}}),
        ("/pos/v1/verifications", {"card": card, "purpose": "redemption", "phone": PHONE}),
    ):
        status, answer = await agent.post(path, request)
        assert_error(status, answer, "phone_lookup_unavailable", 424)
        assert answer["error"]["details"]["reason"] == "no_phone_key"
    # Everything by card number goes on: the store keeps selling and syncing.
    status, found = await agent.post("/pos/v1/cards/lookup", {"card": card})
    assert status == 200, found
    await agent.credit(card, "1")
    assert await agent.available(card) == 1


# --- the wrong key -------------------------------------------------------------------------------


async def test_a_store_with_another_chains_key_refuses_lookups_by_phone_after_a_sync(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite3'}"
    db = CentralDatabase(url)
    try:
        await migrate(db.engine)
        async with db.write() as conn:
            token = await add_store(conn, "s1", "s1", datetime.now(UTC))
    finally:
        await db.close()
    central = TestServer(create_central(central_config(url), run_expiry=False))
    await central.start_server()
    try:
        # Before its first sync nothing tells the store that its key is not the chain's.
        agent = await make_agent(store_id="s1")
        card = await agent.new_card()
        await agent.client.close()
        agent = await make_agent(
            store_id="s1", central_url=str(central.make_url("")), central_token=token
        )
        await agent.app[SYNCER_KEY].round()
        status, answer = await agent.post("/pos/v1/cards/lookup", {"phone": PHONE})
        assert_error(status, answer, "phone_lookup_unavailable", 424)
        assert answer["error"]["details"]["reason"] == "wrong_phone_key"
        assert "не тот ключ" in answer["error"]["message"]
        status, body = await agent.get("/pos/v1/status")
        assert not body["phone_lookup_allowed"]
        status, found = await agent.post("/pos/v1/cards/lookup", {"card": card})
        assert status == 200, found
    finally:
        await central.close()


# --- cards registered here, and a key installed later ------------------------------------------


async def test_cards_registered_before_the_first_sync_are_hashed_again_with_a_new_key(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = await make_agent()
    card = await agent.new_card()
    await agent.client.close()
    # The installer replaces a wrong key file with the chain's before the store ever synced.
    chain_key = write_key_file(tmp_path / "phone-key")
    agent = await make_agent()
    status, found = await agent.post("/pos/v1/cards/lookup", {"phone": PHONE})
    assert status == 200, found
    assert found["card"]["number"] == card
    row = (
        agent.app[CTX_KEY]
        .db.reader.execute("SELECT phone_hash FROM cards WHERE number = ?", (card,))
        .fetchone()
    )
    assert row[0] == chain_key.hash(PHONE10)


# --- the upgrade ---------------------------------------------------------------------------------


def old_database(path: Path) -> None:
    """A store's database as the previous release left it: the chain's legacy key in meta,
    HMAC hashes in the replica and the verifications, after a snapshot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        for name, sql in MIGRATIONS[:3]:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, datetime('now'))", (name,))
        for name, value in (("phone_key", LEGACY_KEY), ("cursor", 12), ("cursor_card", None)):
            conn.execute("INSERT INTO meta VALUES (?, ?)", (name, json.dumps(value)))
        legacy = hmac.new(bytes.fromhex(LEGACY_KEY), PHONE10.encode(), hashlib.sha256).hexdigest()
        conn.execute(
            "INSERT INTO cards (number, phone_hash, phone_last4, verified) VALUES (?, ?, ?, 1)",
            ("7700000000001", legacy, PHONE10[-4:]),
        )
        conn.execute(
            "INSERT INTO verifications VALUES ('v1', '7700000000001', ?, 'redemption', NULL, "
            "'sms', 'x', '2026-01-01T00:00:00+00:00', '2026-01-01T00:05:00+00:00', 3, NULL, NULL)",
            (legacy,),
        )
    finally:
        conn.close()


def all_bytes(db_path: Path) -> bytes:
    return b"".join(
        p.read_bytes() for p in (db_path, db_path.with_name(db_path.name + "-wal")) if p.exists()
    )


async def test_the_upgrade_removes_the_old_key_and_its_hashes_from_every_file(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "agent.sqlite3"
    old_database(db_path)
    legacy_hash = hmac.new(bytes.fromhex(LEGACY_KEY), PHONE10.encode(), hashlib.sha256).hexdigest()
    assert LEGACY_KEY.encode() in all_bytes(db_path)
    db = Database(db_path)
    await db.open()
    try:
        conn = db.reader
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        assert "phone_key" not in meta
        # No cursor: the next round takes a new snapshot, with the new hashes.
        assert "cursor" not in meta
        assert meta["phone_hashes_stale"] == "true"
        assert conn.execute("SELECT phone_hash FROM cards").fetchall() == [(None,)]
        assert conn.execute("SELECT phone_hash FROM verifications").fetchall() == [("",)]
    finally:
        await db.close()
    # Not only gone from the tables: from the files too (nothing left in free pages or the log).
    blob = all_bytes(db_path)
    assert LEGACY_KEY.encode() not in blob
    assert legacy_hash.encode() not in blob


async def test_an_upgraded_store_says_its_cards_are_updating_rather_than_not_found(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    old_database(tmp_path / "agent.sqlite3")
    agent = await make_agent()
    status, answer = await agent.post("/pos/v1/cards/lookup", {"phone": PHONE})
    assert_error(status, answer, "phone_lookup_unavailable", 424)
    assert answer["error"]["details"]["reason"] == "replica_updating"
    status, found = await agent.post("/pos/v1/cards/lookup", {"card": "7700000000001"})
    assert status == 200, found
