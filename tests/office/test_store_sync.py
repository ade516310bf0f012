"""The stores see campaign points after a sync: an agent in the test process syncs with the
central app on a test server, and its till looks the card up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from agent.app import SYNCER_KEY
from agent.app import create_app as create_agent
from agent.clock import FakeClock
from agent.config import AgentConfig, ProviderConfig
from central.api import DB_KEY
from central.app import create_app as create_central
from central.staff import Permission, add_staff, hash_password
from central.stores import add_store
from tests.office.conftest import PASSWORD
from tests.phonekeys import central_config, export_key_file

TILL = {"X-Register-Id": "till-1"}


async def test_a_store_sees_campaign_points_after_a_sync(
    central_db_url: str,
    tmp_path: Path,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    server = await aiohttp_server(create_central(central_config(central_db_url), run_expiry=False))
    now = datetime.now(UTC)
    async with server.app[DB_KEY].write() as conn:
        token = await add_store(conn, "store-7", "Аптека №7", now)
        await add_staff(
            conn, "marketing", "Маркетолог", hash_password(PASSWORD), {Permission.CAMPAIGNS}, now
        )
    office = await aiohttp_client(server)
    response = await office.post(
        "/admin/v1/session", json={"login": "marketing", "password": PASSWORD}
    )
    assert response.status == 201
    session = {"Authorization": f"Bearer {(await response.json())['token']}"}

    await export_key_file(central_db_url, tmp_path / "phone-key")
    config = AgentConfig(
        store_id="store-7",
        phone_key_file=tmp_path / "phone-key",
        central_url=str(server.make_url("")).rstrip("/"),
        central_token=token,
        sync_interval_s=3600,
        sync_jitter_s=0,
        data_dir=tmp_path / "agent",
        provider=ProviderConfig(kind="file", file_path=tmp_path / "agent" / "messages.jsonl"),
    )
    agent_app = create_agent(config, clock=FakeClock(wall=now))
    till = await aiohttp_client(agent_app)
    syncer = agent_app[SYNCER_KEY]

    response = await till.post(
        "/pos/v1/customers",
        json={"phone": "+7 916 555-44-33", "consents": {"personal_data": True}},
        headers=TILL,
    )
    assert response.status in (200, 201), await response.text()
    card = (await response.json())["card"]["number"]
    await syncer.round()

    expires = (now + timedelta(days=30)).date()
    response = await office.post(
        "/admin/v1/campaigns",
        json={
            "campaign_id": "store-sees",
            "amount": "150.50",
            "expires_on": expires.isoformat(),
            "note": "проверка",
            "selection": {"cards": [card]},
        },
        headers=session,
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["cards"] == 1

    async def lookup() -> dict[str, Any]:
        response = await till.post("/pos/v1/cards/lookup", json={"card": card}, headers=TILL)
        assert response.status == 200, await response.text()
        return dict((await response.json())["balance"])

    assert Decimal(str((await lookup())["available"])) == 0  # not synced yet
    await syncer.round()
    balance = await lookup()
    assert Decimal(str(balance["available"])) == Decimal("150.50")
    assert [(e["date"], Decimal(str(e["amount"]))) for e in balance["expiring"]] == [
        (expires.isoformat(), Decimal("150.50"))
    ]

    # A cancel reaches the store the same way.
    response = await office.post("/admin/v1/campaigns/store-sees/cancel", headers=session)
    assert response.status == 200, await response.text()
    await syncer.round()
    assert Decimal(str((await lookup())["available"])) == 0
