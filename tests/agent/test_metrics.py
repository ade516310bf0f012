"""The agent's ``GET /metrics``: what store IT reads there after a till's requests, that no card
number becomes a label, the message provider running out of funds, and who may read it."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.app import create_app
from agent.clock import FakeClock
from agent.config import ProviderConfig
from agent.http import SESSION_KEY
from agent.providers import make_provider
from agent.routes import VERIFY_KEY
from tests.agent.conftest import (
    Agent,
    AgentFactory,
    ClientFactory,
    assert_error,
    line,
    make_config,
)
from tests.metrics_text import run_promtool, samples, value

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
#: What Stream Telecom answers an account without money.
NO_FUNDS = "ERROR: Недостаточно средств на балансе"


async def scrape(agent: Agent, **headers: str) -> tuple[int, str]:
    response = await agent.client.get("/metrics", headers=headers)
    return response.status, await response.text()


async def scraped(agent: Agent) -> dict[Any, float]:
    status, text = await scrape(agent)
    assert status == 200, text
    return samples(text)


async def test_requests_are_counted_by_route_never_by_card_number(
    agent: Agent, funded_card: str
) -> None:
    status, _ = await agent.get(f"/pos/v1/cards/{funded_card}/transactions")
    assert status == 200
    status, body = await agent.get("/pos/v1/cards/2000000000019/transactions")
    assert_error(status, body, "card_not_found")
    status, body = await agent.get(f"/pos/v1/no-such-place/{funded_card}")
    assert_error(status, body, "not_found")

    status, text = await scrape(agent)
    assert status == 200
    found = samples(text)
    route = "/pos/v1/cards/{card}/transactions"
    count = "bonus_agent_http_request_duration_seconds_count"
    assert value(found, count, method="GET", route=route) == 2
    assert value(found, count, method="GET", route="unmatched") == 1
    assert value(found, "bonus_agent_http_errors_total", code="card_not_found") == 1
    assert value(found, "bonus_agent_http_errors_total", code="not_found") == 1
    assert value(found, "bonus_agent_http_errors_total", code="insufficient_balance") == 0
    assert funded_card not in text
    assert "2000000000019" not in text
    run_promtool("check", "metrics", stdin=text)


async def test_the_queue_and_the_sync_age_as_store_it_reads_them(agent: Agent, card: str) -> None:
    found = await scraped(agent)
    # Never synced: the age is unknown, which counts as stale.
    assert value(found, "bonus_agent_sync_age_seconds") == math.inf
    assert value(found, "bonus_agent_last_sync_timestamp_seconds") is None
    assert value(found, "bonus_agent_redemption_allowed") == 0
    queued = value(found, "bonus_agent_queue_operations")
    assert queued is not None
    assert queued > 0  # the registration waits for the central server

    status, _ = await agent.sale(card, [line("1", "1000")])
    assert status == 200
    await agent.make_fresh()
    agent.clock.advance(90)
    found = await scraped(agent)
    assert value(found, "bonus_agent_queue_operations") == queued + 1
    age = value(found, "bonus_agent_sync_age_seconds")
    assert age is not None
    assert 89 <= age <= 91
    assert value(found, "bonus_agent_last_sync_timestamp_seconds") is not None
    assert value(found, "bonus_agent_redemption_allowed") == 1
    assert value(found, "bonus_agent_journal_writer_queue_depth") == 0


async def test_a_provider_out_of_funds_shows_until_a_code_goes_out(
    agent: Agent, card: str, aiohttp_server: ServerFactory
) -> None:
    answer = {"text": NO_FUNDS}

    async def gateway(request: web.Request) -> web.Response:
        return web.Response(text=answer["text"])

    app = web.Application()
    app.router.add_get("/get/", gateway)
    server = await aiohttp_server(app)
    config = ProviderConfig(
        kind="stream_telecom",
        stream_telecom_url=str(server.make_url("/get/")),
        stream_telecom_login="apteka",
        stream_telecom_sender="Apteka",
    )
    # What a reload of [provider] does.
    agent.app[VERIFY_KEY].provider = make_provider(config, agent.app[SESSION_KEY])

    status, body = await agent.ask_code(card)
    assert_error(status, body, "provider_no_balance", 424)
    found = await scraped(agent)
    assert value(found, "bonus_agent_provider_no_balance", provider="stream_telecom") == 1
    failures = "bonus_agent_provider_failures_total"
    assert value(found, failures, provider="stream_telecom", reason="no_balance") == 1
    assert value(found, "bonus_agent_http_errors_total", code="provider_no_balance") == 1

    answer["text"] = "1234567890"  # money paid in: the gateway sends again
    agent.clock.advance(3600)
    status, body = await agent.ask_code(card)
    assert status == 201, body
    found = await scraped(agent)
    assert value(found, "bonus_agent_provider_no_balance", provider="stream_telecom") == 0
    assert value(found, failures, provider="stream_telecom", reason="no_balance") == 1


async def test_two_agents_in_one_process_count_apart(
    agent: Agent, card: str, tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    other = await aiohttp_client(create_app(make_config(tmp_path / "other"), clock=FakeClock()))
    status, _ = await agent.sale(card, [line("1", "500")])
    assert status == 200
    route = {"method": "POST", "route": "/pos/v1/receipts"}
    count = "bonus_agent_http_request_duration_seconds_count"
    assert value(await scraped(agent), count, **route) == 1
    response = await other.get("/metrics")
    assert value(samples(await response.text()), count, **route) is None


async def test_a_metrics_token_keeps_others_out(make_agent: AgentFactory) -> None:
    agent = await make_agent(metrics_token="scrape-secret")
    elsewhere = {"X-Forwarded-For": "192.0.2.10"}
    status, text = await scrape(agent, **elsewhere)
    assert status == 401
    assert '"code":"unauthorized"' in text
    assert "Нет доступа к метрикам" in text
    status, text = await scrape(agent, **elsewhere, Authorization="Bearer scrape-secret")
    assert status == 200
    assert "bonus_agent_queue_operations" in text
    status, _ = await scrape(agent)  # this machine needs none
    assert status == 200


async def test_without_a_token_the_listener_decides(agent: Agent) -> None:
    status, _ = await scrape(agent, **{"X-Forwarded-For": "192.0.2.10"})
    assert status == 200
