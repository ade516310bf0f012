"""Fixtures of the end-to-end tests: a chain of real processes over each central database, and
an agent run inside the test on a fake clock, for what only a fake clock can show."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.app import SYNCER_KEY, create_app
from agent.clock import FakeClock
from agent.config import AgentConfig, ProviderConfig
from agent.context import AgentContext
from agent.routes import CTX_KEY
from agent.sync import Syncer
from tests.e2e.system import System
from tests.e2e.till import Till

_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture
async def system(
    request: pytest.FixtureRequest, tmp_path: Path, central_db_url: str
) -> AsyncIterator[System]:
    """A central server and store agents (none started yet) over a fresh central database."""
    chain = System(tmp_path, central_db_url)
    try:
        yield chain
    finally:
        if request.node.stash.get(_FAILED, True):
            print(chain.logs())
        await chain.close()


@dataclass
class LocalAgent:
    """A store agent inside the test process, on a fake clock, syncing with a real central
    server process."""

    app: web.Application
    clock: FakeClock
    till: Till

    @property
    def ctx(self) -> AgentContext:
        return self.app[CTX_KEY]

    @property
    def syncer(self) -> Syncer:
        return self.app[SYNCER_KEY]


LocalAgentFactory = Callable[..., Awaitable[LocalAgent]]


@pytest.fixture
async def local_agent(
    system: System, tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> LocalAgentFactory:
    """Start an in-process agent for a store of ``system`` (configuration overrides allowed),
    synced once when the central server runs."""

    async def start(store_id: str, **overrides: Any) -> LocalAgent:
        work = tmp_path / f"local-{store_id}"
        settings: dict[str, Any] = {
            "store_id": store_id,
            "data_dir": work,
            "central_url": system.central.url,
            "central_token": system.tokens[store_id],
            "central_timeout_s": 5,
            "sync_interval_s": 5,
            "sync_jitter_s": 0,
            "sync_backoff_max_s": 2,
            "phone_key_file": system.phone_key_file,
            "provider": ProviderConfig(kind="file", file_path=work / "messages.jsonl"),
            **overrides,
        }
        config = AgentConfig.model_validate(settings)
        clock = FakeClock(wall=datetime.now(UTC))
        client = await aiohttp_client(create_app(config, clock=clock))
        base_url = str(client.make_url("")).rstrip("/")
        till = Till(system.session, base_url, config.provider.file_path, name=f"local-{store_id}")
        agent = LocalAgent(client.app, clock, till)
        if system.central.running:
            await agent.syncer.round()
        return agent

    return start
