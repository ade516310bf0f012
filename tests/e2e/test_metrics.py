"""What store IT and the chain's IT read at ``GET /metrics`` after a day's real work: a
registration and sales at a till, a sync, an operation the central server rejects, an online
authorisation, a refused office login, the expiry job — and the text is one Prometheus reads
(``promtool check metrics``).

The agent runs in the test process against a real central server process.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from central import schema
from tests.e2e.conftest import LocalAgent, LocalAgentFactory
from tests.e2e.system import System, central_db
from tests.metrics_text import run_promtool, samples, value

pytestmark = pytest.mark.slow

PHONE = "9165556677"


async def scrape(system: System, url: str, **headers: str) -> tuple[int, str]:
    async with system.session.get(url + "/metrics", headers=headers) as response:
        return response.status, await response.text()


async def scraped(system: System, url: str) -> dict[Any, float]:
    status, text = await scrape(system, url)
    assert status == 200, text
    return samples(text)


def agent_url(agent: LocalAgent) -> str:
    return agent.till.base_url


async def block_at_central(url: str, card: str) -> None:
    """The office blocks a card; the store has not heard of it yet."""
    async with central_db(url) as db, db.write() as conn:
        await conn.execute(
            schema.cards.update().where(schema.cards.c.number == card).values(status="blocked")
        )


async def test_metrics_follow_sales_syncs_and_rejections(
    system: System, local_agent: LocalAgentFactory
) -> None:
    started = time.time()
    await system.prepare(["s1"])
    await system.central.start()
    agent = await local_agent("s1")  # one complete round already
    till = agent.till
    central_url = system.central.url

    store = await scraped(system, agent_url(agent))
    assert (value(store, "bonus_agent_sync_rounds_total", result="complete") or 0) >= 1
    assert value(store, "bonus_agent_queue_operations") == 0
    assert value(store, "bonus_agent_redemption_allowed") == 1
    last_sync = value(store, "bonus_agent_last_sync_timestamp_seconds")
    assert last_sync is not None
    assert last_sync >= started - 5

    # A day at the till: a customer registers and buys; nothing is sent yet.
    card = await till.register(PHONE)
    await till.sold(card, "2000")
    status, missing = await till.lookup(card="2" * 13)
    assert status == 404, missing
    store = await scraped(system, agent_url(agent))
    pending = (await till.status())["pending_ops"]
    assert pending >= 2
    assert value(store, "bonus_agent_queue_operations") == pending
    sales = value(
        store,
        "bonus_agent_http_request_duration_seconds_count",
        method="POST",
        route="/pos/v1/receipts",
    )
    assert sales == 1
    assert value(store, "bonus_agent_http_errors_total", code="card_not_found") == 1

    # The sync sends it all: the queue empties, the central server counts what it applied.
    await agent.syncer.round()
    store = await scraped(system, agent_url(agent))
    assert value(store, "bonus_agent_queue_operations") == 0
    assert (value(store, "bonus_agent_sync_age_seconds") or 0) < 60
    chain = await scraped(system, central_url)
    assert value(chain, "bonus_central_ops_applied_total", kind="register") == 1
    assert value(chain, "bonus_central_ops_applied_total", kind="sale") == 1
    assert value(chain, "bonus_central_ops_rejected_total", reason="card_blocked") == 0
    assert value(chain, "bonus_central_stores") == 1
    assert value(chain, "bonus_central_store_last_applied_seq", store_id="s1") == pending
    last_upload = value(chain, "bonus_central_store_last_upload_timestamp_seconds", store_id="s1")
    assert last_upload is not None
    assert last_upload >= started - 5
    central_sync = value(chain, "bonus_central_store_last_sync_timestamp_seconds", store_id="s1")
    assert central_sync is not None
    assert central_sync >= started - 5
    # The central server ran its expiry at start-up.
    expiry = value(chain, "bonus_central_expiry_last_run_timestamp_seconds")
    assert expiry is not None
    assert expiry >= started - 5
    assert value(chain, "bonus_central_expiry_last_lots_expired") == 0

    # An online redemption asks the central server first.
    await till.sold(card, "200", redeem="10", phone=PHONE)
    chain = await scraped(system, central_url)
    assert value(chain, "bonus_central_authorize_duration_seconds_count") == 1
    assert (
        value(chain, "bonus_central_sync_requests_total", route="/sync/v1/authorize", status="200")
        == 1
    )

    await agent.syncer.round()

    # The office blocks the card: the store, not told yet, sells; the central server rejects it.
    await block_at_central(system.database_url, card)
    await till.sold(card, "300")
    await agent.syncer.round()
    store = await scraped(system, agent_url(agent))
    assert value(store, "bonus_agent_ops_rejected_total", reason="card_blocked") == 1
    chain = await scraped(system, central_url)
    assert value(chain, "bonus_central_ops_rejected_total", reason="card_blocked") == 1
    assert value(chain, "bonus_central_ops_applied_total", kind="sale") == 2

    # A wrong office password is counted by route and status, never by login or password.
    async with system.session.post(
        central_url + "/admin/v1/session", json={"login": "nobody", "password": "wrong"}
    ) as response:
        assert response.status == 401
    _, chain_text = await scrape(system, central_url)
    chain = samples(chain_text)
    assert (
        value(
            chain,
            "bonus_central_office_requests_total",
            method="POST",
            route="/admin/v1/session",
            status="401",
        )
        == 1
    )
    _, store_text = await scrape(system, agent_url(agent))
    # No card number, phone or token is ever a label value.
    for text in (store_text, chain_text):
        assert card not in text
        assert PHONE not in text
        assert "2" * 13 not in text
        assert system.tokens["s1"] not in text
        assert "nobody" not in text
    run_promtool("check", "metrics", stdin=store_text)
    run_promtool("check", "metrics", stdin=chain_text)


async def test_the_central_metrics_are_refused_to_anybody_elsewhere(
    system: System, local_agent: LocalAgentFactory
) -> None:
    await system.prepare(["s1"])
    system.central.settings["metrics_token"] = "metrics-secret"
    await system.central.start()
    await local_agent("s1")
    relayed = {"X-Forwarded-For": "203.0.113.7"}  # a client elsewhere, through a proxy here

    status, text = await scrape(system, system.central.url, **relayed)
    assert status == 401
    assert "s1" not in text
    async with system.session.get(
        system.central.url + "/metrics", headers={**relayed, "Authorization": "Bearer wrong"}
    ) as response:
        body = await response.json()
        assert response.status == 401
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["message"].startswith("Нет доступа к метрикам")

    status, text = await scrape(
        system, system.central.url, **relayed, Authorization="Bearer metrics-secret"
    )
    assert status == 200
    assert 'store_id="s1"' in text
    status, _ = await scrape(system, system.central.url)  # this machine needs no token
    assert status == 200
    # The database's figures are the same whichever instance answers: they come from the ledger.
    async with central_db(system.database_url) as db, db.read() as conn:
        seq = await conn.scalar(sa.select(schema.stores.c.last_applied_seq))
    assert f'bonus_central_store_last_applied_seq{{store_id="s1"}} {float(seq or 0)}' in text
