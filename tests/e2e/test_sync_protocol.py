"""The sync endpoint's gate: a protocol version outside the range and a wrong token are refused
with clear errors, and an agent refused so says why in its status."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from shared.protocol import PROTOCOL_HEADER, PROTOCOL_MAX, PROTOCOL_MIN, STORE_HEADER
from tests.e2e.proxy import Proxy, serve_proxy
from tests.e2e.system import System

pytestmark = pytest.mark.slow


async def hello(system: System, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(system.central.url + "/sync/v1/hello", headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_protocol_version_and_token_are_checked(system: System) -> None:
    await system.prepare(["s1"])
    await system.central.start()
    good = {
        "Authorization": f"Bearer {system.tokens['s1']}",
        STORE_HEADER: "s1",
        PROTOCOL_HEADER: str(PROTOCOL_MAX),
    }
    status, body = await hello(system, good)
    assert status == 200, body
    assert body["store_id"] == "s1"
    assert (body["protocol_min"], body["protocol_max"]) == (PROTOCOL_MIN, PROTOCOL_MAX)
    assert datetime.fromisoformat(body["server_time"]).tzinfo is not None

    for version in ("99", "0", "", "1.0"):
        status, body = await hello(system, {**good, PROTOCOL_HEADER: version})
        assert status == 426, (version, body)
        assert body["error"]["code"] == "protocol_version"
        assert body["error"]["message"] == "Версия программы не поддерживается сервером"
        details = body["error"]["details"]
        assert (details["protocol_min"], details["protocol_max"]) == (PROTOCOL_MIN, PROTOCOL_MAX)

    wrong: list[dict[str, str]] = [
        {**good, "Authorization": "Bearer not-the-token"},
        {**good, STORE_HEADER: "s2"},
        {**good, "Authorization": system.tokens["s1"]},
        {k: v for k, v in good.items() if k != "Authorization"},
        {k: v for k, v in good.items() if k != STORE_HEADER},
    ]
    for headers in wrong:
        status, body = await hello(system, headers)
        assert status == 401, (headers, body)
        assert body["error"]["code"] == "unauthorized"

    # An agent with a wrong token keeps serving sales, never counts a sync, and says why.
    system.tokens["s1"] = "wrong-token"
    await system.start_agents("s1")
    till = system.till("s1")
    card = await till.register("9168880000")
    await till.sold(card, "100")
    moment = datetime.now(UTC)
    while (datetime.now(UTC) - moment).total_seconds() < 3:  # at least one retry
        status_body = await till.status()
        if status_body.get("last_download_error") or status_body.get("last_upload_error"):
            break
        await asyncio.sleep(0.1)
    assert status_body["online"] is False
    assert status_body["last_sync_at"] is None
    assert status_body["pending_ops"] == 3
    assert status_body["redemption_allowed"] is False
    errors = f"{status_body['last_download_error']} {status_body['last_upload_error']}"
    assert "unauthorized" in errors, status_body


# About the agent alone: one database is enough.
@pytest.mark.parametrize("central_db_url", ["sqlite"], indirect=True)
async def test_an_answer_of_unknown_shape_is_a_sync_error_and_the_agent_keeps_trying(
    system: System,
) -> None:
    """A central server that answers with a field this agent does not know (a newer version):
    the round fails with a clear error in the status, and the sync loop lives on."""
    await system.prepare(["s1"])
    await system.central.start()
    async with serve_proxy(Proxy(system.central.url, hello_extra={"new_field": 1})) as proxy:
        system.agent("s1", central_url=proxy.url)
        await system.start_agents("s1")
        till = system.till("s1")
        status_body = await till.status()
        for _ in range(100):
            if proxy.hellos >= 2 and status_body["last_download_error"]:
                break
            await asyncio.sleep(0.1)
            status_body = await till.status()
        assert proxy.hellos >= 2, "the agent tried again after the first refusal"
        assert "new_field" in status_body["last_download_error"], status_body
        assert status_body["last_sync_at"] is None
        assert system.agents["s1"].running

        proxy.hello_extra = None  # the agent is upgraded, or the server rolled back
        moment = datetime.now(UTC)
        status_body = await till.wait_synced(moment)
        assert status_body["last_download_error"] is None


@pytest.mark.parametrize("central_db_url", ["sqlite"], indirect=True)
async def test_an_acknowledgement_beyond_the_batch_marks_nothing_synced(system: System) -> None:
    """A central server that acknowledges more than the batch held (as one did before: the
    store's last applied number, whatever was sent): the agent marks nothing synced, says why,
    and sends again until an answer matches."""
    await system.prepare(["s1"])
    await system.central.start()
    async with serve_proxy(Proxy(system.central.url, acked_beyond=2)) as proxy:
        system.agent("s1", central_url=proxy.url)
        await system.start_agents("s1")
        till = system.till("s1")
        card = await till.register("9168880001")
        await till.sold(card, "100")
        status_body = await till.status()
        for _ in range(100):
            if proxy.uploads >= 2 and status_body["last_upload_error"]:
                break
            await asyncio.sleep(0.1)
            status_body = await till.status()
        assert "acknowledged seq 5 for a batch of seq 1..3" in status_body["last_upload_error"]
        assert status_body["pending_ops"] == 3
        transactions = await till.ok("GET", f"/pos/v1/cards/{card}/transactions")
        assert not any(item["synced"] for item in transactions["transactions"])

        proxy.acked_beyond = 0
        status_body = await till.wait_synced(datetime.now(UTC))
        assert status_body["last_upload_error"] is None
