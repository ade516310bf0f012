"""The agent's release travels with its sync requests, optional both ways: the central server
greets agents that name it and agents (before 0.2.0) that do not alike."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agent.config import AgentConfig
from agent.sync import CentralClient
from service.version import package_version
from shared.protocol import AGENT_HEADER
from tests.central.conftest import Central


async def test_hello_with_and_without_the_agents_release(
    central: Central, caplog: pytest.LogCaptureFixture
) -> None:
    answers = []
    with caplog.at_level(logging.DEBUG, logger="central.api"):
        for agent in ("bonus-agent/0.2.0", None):
            headers = central.headers()
            headers[AGENT_HEADER] = agent or "Python/3.11 aiohttp/3.13"
            response = await central.client.get("/sync/v1/hello", headers=headers)
            assert response.status == 200, await response.text()
            answers.append(set((await response.json()).keys()))
    assert answers[0] == answers[1]
    assert "hello from store s1: bonus-agent/0.2.0" in caplog.text


def test_the_agent_names_its_release() -> None:
    config = AgentConfig.model_validate({"central_token": "secret"})
    client = CentralClient(cast(Any, SimpleNamespace(config=config)), cast(Any, None))
    assert client._headers()[AGENT_HEADER] == f"bonus-agent/{package_version()}"
