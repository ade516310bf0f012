"""The central server's ``GET /metrics``: nobody elsewhere reads the stores' ids and sync state
without the token, and an expiry run or a duplicate upload shows as the chain's IT expects."""

from __future__ import annotations

from datetime import UTC, date, datetime

from central.expiry import expire
from tests.central.conftest import Central, StoreOps
from tests.metrics_text import samples, value

ELSEWHERE = {"X-Forwarded-For": "198.51.100.4"}


async def test_without_a_token_only_this_machine_reads_the_metrics(central: Central) -> None:
    response = await central.client.get("/metrics", headers=ELSEWHERE)
    body = await response.json()
    assert response.status == 403
    assert body["error"]["code"] == "forbidden"
    assert body["error"]["message"].startswith("Метрики доступны только с этого же сервера")
    assert body["error"]["details"] == {"reason": "metrics_loopback_only"}
    assert "s1" not in await response.text()
    response = await central.client.get(
        "/metrics", headers={**ELSEWHERE, "Authorization": "Bearer guess"}
    )
    assert response.status == 401
    response = await central.client.get("/metrics")
    assert response.status == 200
    assert 'store_id="s1"' in await response.text()


async def test_a_batch_sent_again_is_counted_once(central: Central, s1: StoreOps) -> None:
    batch = [s1.register("2000000000019", "9161112233"), s1.sale("2000000000019", accrued=5000)]
    status, _ = await central.upload(*batch)
    assert status == 200
    status, _ = await central.upload(*batch)  # the answer was lost: the store sends it again
    assert status == 200
    response = await central.client.get("/metrics")
    found = samples(await response.text())
    assert value(found, "bonus_central_ops_applied_total", kind="register") == 1
    assert value(found, "bonus_central_ops_applied_total", kind="sale") == 1
    assert value(found, "bonus_central_store_last_applied_seq", store_id="s1") == 2
    assert (
        value(found, "bonus_central_sync_requests_total", route="/sync/v1/upload", status="200")
        == 2
    )
    assert value(found, "bonus_central_expiry_last_run_timestamp_seconds") is None

    # A year on, the sale's points expire.
    await expire(central.db, date(2027, 6, 1), datetime.now(UTC))
    response = await central.client.get("/metrics")
    found = samples(await response.text())
    assert value(found, "bonus_central_expiry_last_lots_expired") == 1
    assert value(found, "bonus_central_expiry_last_cards") == 1
    assert value(found, "bonus_central_expiry_last_run_timestamp_seconds") is not None
