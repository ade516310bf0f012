"""Phone keys for tests: the cheap cost every fixture uses, and key files.

The production cost (``shared.phones.PRODUCTION_PHONE_HASH``) is about 20 ms a hash: a suite that
registers thousands of customers would spend minutes on it. Fixtures use this cost instead; the
central server's setting travels to agents in the exported key file, as in production.
``bench/phone_hash.py`` measures the production cost.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Final

from central.config import CentralConfig
from central.db import Database, migrate
from central.phones import load_phone_key
from shared.phones import PHONE_KEY_BYTES, PhoneHashParams, PhoneKey

#: argon2's least memory, one pass: microseconds.
TEST_PHONE_HASH: Final = PhoneHashParams(memory_kib=8, time_cost=1)
#: The same as ``BONUS_CENTRAL_*`` settings, for central server processes.
TEST_CENTRAL_ENV: Final = {
    "BONUS_CENTRAL_PHONE_HASH_MEMORY_KIB": str(TEST_PHONE_HASH.memory_kib),
    "BONUS_CENTRAL_PHONE_HASH_TIME_COST": str(TEST_PHONE_HASH.time_cost),
}


def central_config(database_url: str, **overrides: Any) -> CentralConfig:
    """A central configuration with the tests' phone hash cost."""
    return CentralConfig(
        database_url=database_url,
        phone_hash_memory_kib=TEST_PHONE_HASH.memory_kib,
        phone_hash_time_cost=TEST_PHONE_HASH.time_cost,
        **overrides,
    )


def new_phone_key() -> PhoneKey:
    """A key of no chain (for agents that never sync)."""
    return PhoneKey(secrets.token_bytes(PHONE_KEY_BYTES), TEST_PHONE_HASH)


def write_key_file(path: Path, key: PhoneKey | None = None) -> PhoneKey:
    """Write a key file (a new key unless given) as ``bonus-central phone-key export`` does."""
    key = key or new_phone_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key.to_text(), encoding="utf-8")
    path.chmod(0o600)
    return key


async def central_phone_key(database_url: str) -> PhoneKey:
    """The chain's key in a central database (migrated here if it is new), at the tests' cost."""
    db = Database(database_url)
    try:
        await migrate(db.engine)
        return await load_phone_key(db, TEST_PHONE_HASH)
    finally:
        await db.close()


async def export_key_file(database_url: str, path: Path) -> PhoneKey:
    """The chain's key file, as a store's installer gets it."""
    return write_key_file(path, await central_phone_key(database_url))
