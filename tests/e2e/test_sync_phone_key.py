"""A new store's first sync replaces its local phone key with the chain's: cards registered before
it must still be found by phone, and codes sent before it should still confirm.

The central server runs in-process here (the phone key does not depend on its database).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.app import SYNCER_KEY, create_app
from agent.clock import FakeClock
from agent.config import AgentConfig, ProviderConfig
from central.app import create_app as create_central
from central.config import CentralConfig
from tests.central.conftest import register_store
from tests.e2e.processes import free_port
from tests.e2e.till import Till

PHONE = "9164440000"


@dataclass
class FreshStore:
    """A store agent that has never synced, and its central server, not started yet."""

    till: Till
    agent: TestClient[Any, Any]
    central: TestServer

    async def first_sync(self) -> None:
        await self.central.start_server()
        await self.agent.app[SYNCER_KEY].round()


@pytest.fixture
async def fresh_store(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> AsyncIterator[FreshStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite3'}"
    token = await register_store(url, "s1")
    port = free_port()
    central = TestServer(
        create_central(CentralConfig(database_url=url), run_expiry=False), port=port
    )
    config = AgentConfig(
        store_id="s1",
        data_dir=tmp_path / "s1",
        central_url=f"http://127.0.0.1:{port}",
        central_token=token,
        sync_interval_s=3600,
        provider=ProviderConfig(kind="file", file_path=tmp_path / "messages.jsonl"),
    )
    agent = await aiohttp_client(create_app(config, clock=FakeClock()))
    async with aiohttp.ClientSession() as session:
        till = Till(
            session, str(agent.make_url("")).rstrip("/"), config.provider.file_path, name="s1"
        )
        try:
            yield FreshStore(till, agent, central)
        finally:
            await central.close()


async def test_cards_registered_before_the_first_sync_are_found_by_phone_after_it(
    fresh_store: FreshStore,
) -> None:
    till = fresh_store.till
    answer = await till.ok(
        "POST", "/pos/v1/customers", {"phone": PHONE, "consents": {"personal_data": True}}
    )
    card = answer["card"]["number"]
    await fresh_store.first_sync()
    assert (await till.found(phone=PHONE))["card"]["number"] == card


async def test_a_code_sent_before_the_first_sync_confirms_after_it(
    fresh_store: FreshStore,
) -> None:
    till = fresh_store.till
    answer = await till.ok(
        "POST", "/pos/v1/customers", {"phone": PHONE, "consents": {"personal_data": True}}
    )
    verification = answer["verification"]["verification_id"]
    await fresh_store.first_sync()
    status, body = await till.request(
        "POST",
        f"/pos/v1/verifications/{verification}/confirm",
        {"code": till.code_of(verification)},
    )
    assert status == 200, body
