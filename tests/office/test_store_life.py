"""Stores over their life, as the chain's IT and a store see them: disabled and enabled again,
closed for good once drained, a token rotated with an overlap; through the office API and the
store's real sync endpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from central import schema
from central.staff import Permission
from shared.errors import MESSAGES_RU, ErrorCode
from shared.journal import Consents, Profile, Registration
from shared.protocol import (
    JOURNAL_HEAD_HEADER,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    STORE_HEADER,
    STORE_STATE_HEADER,
    Op,
)
from tests.metrics_text import samples, value
from tests.office.conftest import Office, assert_error


async def _new_store(office: Office, store_id: str = "store-9") -> str:
    answer = await office.ok("POST", "/admin/v1/stores", {"store_id": store_id, "name": "Аптека"})
    return str(answer["token"])


async def _sync(
    office: Office,
    method: str,
    path: str,
    token: str,
    *,
    store_id: str = "store-9",
    head: int | None = None,
    body: Any = None,
) -> tuple[int, Any, str | None]:
    """A store's sync request: status, JSON body and the store-state header."""
    headers = {
        "Authorization": f"Bearer {token}",
        STORE_HEADER: store_id,
        PROTOCOL_HEADER: str(PROTOCOL_VERSION),
    }
    if head is not None:
        headers[JOURNAL_HEAD_HEADER] = str(head)
    response = await office.client.request(method, path, headers=headers, json=body)
    return response.status, await response.json(), response.headers.get(STORE_STATE_HEADER)


def _registrations(count: int) -> list[dict[str, Any]]:
    """A store's first operations, as its agent uploads them."""
    return [
        Op(
            seq=seq,
            op_id=f"store-9-op-{seq}",
            created_at=datetime.now(UTC),
            operation=Registration(
                card=f"70000{seq:08d}",
                phone=f"91600000{seq:02d}",
                virtual=False,
                profile=Profile(first_name="Анна", last_name="Петрова"),
                consents=Consents(personal_data=True, advertising=False),
            ),
        ).model_dump(mode="json")
        for seq in range(1, count + 1)
    ]


async def _listed(office: Office, store_id: str = "store-9") -> dict[str, Any]:
    answer = await office.ok("GET", "/admin/v1/stores")
    (row,) = [row for row in answer["stores"] if row["store_id"] == store_id]
    return dict(row)


AUTHORIZE = {"authorization_id": "auth-1", "card": "2000000000028", "amount": 100}


async def test_a_disabled_store_is_refused_with_a_reason_and_enabled_again(office: Office) -> None:
    await office.user()
    token = await _new_store(office)
    status, _, state = await _sync(office, "GET", "/sync/v1/hello", token, head=0)
    assert (status, state) == (200, "active")

    changed = await office.ok(
        "POST", "/admin/v1/stores/store-9/disable", {"reason": "аптека на ремонте"}
    )
    assert (changed["state"], changed["was"]) == ("disabled", "active")
    for method, path, body in (
        ("GET", "/sync/v1/hello", None),
        ("POST", "/sync/v1/upload", {"ops": []}),
        ("GET", "/sync/v1/changes?cursor=0", None),
        ("POST", "/sync/v1/authorize", AUTHORIZE),
    ):
        status, answer, _ = await _sync(office, method, path, token, body=body)
        assert_error(status, answer, "store_disabled", 403)
        assert answer["error"]["message"] == MESSAGES_RU[ErrorCode.STORE_DISABLED]
    row = await _listed(office)
    assert (row["state"], row["state_reason"]) == ("disabled", "аптека на ремонте")

    await office.ok("POST", "/admin/v1/stores/store-9/enable", {})
    status, _, state = await _sync(office, "GET", "/sync/v1/hello", token)
    assert (status, state) == (200, "active")
    assert (await _listed(office))["state"] == "active"


async def test_a_closing_store_drains_then_is_closed_for_good(office: Office) -> None:
    await office.user()
    token = await _new_store(office)
    await office.ok("POST", "/admin/v1/stores/store-9/close", {"reason": "аптека закрывается"})
    # Told at its next greeting; it still holds 3 operations the central server lacks.
    status, _, state = await _sync(office, "GET", "/sync/v1/hello", token, head=3)
    assert (status, state) == (200, "closing")
    status, answer, _ = await _sync(office, "POST", "/sync/v1/authorize", token, body=AUTHORIZE)
    assert_error(status, answer, "store_closed", 403)
    status, _, state = await _sync(office, "GET", "/sync/v1/hello", token, head=3)
    assert (status, state) == (200, "closing")
    row = await _listed(office)
    assert (row["state"], row["backlog"]) == ("closing", 3)
    scraped = samples(await (await office.client.get("/metrics")).text())
    assert value(scraped, "bonus_central_store_backlog_operations", store_id="store-9") == 3
    assert value(scraped, "bonus_central_store_state", store_id="store-9", state="closing") == 1
    assert value(scraped, "bonus_central_store_state", store_id="store-9", state="active") == 0
    # Uploads go on while it drains.
    status, answer, state = await _sync(
        office, "POST", "/sync/v1/upload", token, body={"ops": _registrations(3)}
    )
    assert (status, state, answer["acked_seq"]) == (200, "closing", 3)
    status, _, state = await _sync(office, "GET", "/sync/v1/hello", token, head=3)
    assert (status, state) == (200, "closed")
    status, answer, _ = await _sync(office, "GET", "/sync/v1/hello", token, head=3)
    assert_error(status, answer, "store_closed", 403)
    row = await _listed(office)
    assert (row["state"], row["backlog"]) == ("closed", 0)
    # Closed is for good: no way back, no new token.
    status, answer = await office.call("POST", "/admin/v1/stores/store-9/enable", {})
    assert_error(status, answer, "idempotency_conflict", 409)
    status, answer = await office.call("POST", "/admin/v1/stores/store-9/rotate-token", {})
    assert_error(status, answer, "not_found", 404)


async def test_a_store_told_before_it_reported_its_journal_is_not_closed(office: Office) -> None:
    # The greeting that tells a store it is closing cannot close it: the store may record
    # operations until it learns so.
    await office.user()
    token = await _new_store(office)
    await office.ok("POST", "/admin/v1/stores/store-9/close", {})
    _, _, state = await _sync(office, "GET", "/sync/v1/hello", token, head=0)
    assert state == "closing"
    _, _, state = await _sync(office, "GET", "/sync/v1/hello", token)  # an older agent: no head
    assert state == "closing"
    _, _, state = await _sync(office, "GET", "/sync/v1/hello", token, head=0)
    assert state == "closed"


async def test_a_rotated_token_overlaps_until_the_store_uses_the_new_one(office: Office) -> None:
    await office.user()
    old = await _new_store(office)
    rotated = await office.ok(
        "POST", "/admin/v1/stores/store-9/rotate-token", {"overlap_hours": 24}
    )
    new = rotated["token"]
    assert rotated["old_token_until"] is not None
    assert (await _listed(office))["token_overlap_until"] is not None
    status, _, _ = await _sync(office, "GET", "/sync/v1/hello", old)
    assert status == 200  # the store has not got its new token yet: it keeps syncing
    status, _, _ = await _sync(office, "GET", "/sync/v1/hello", new)
    assert status == 200
    status, answer, _ = await _sync(office, "GET", "/sync/v1/hello", old)
    assert_error(status, answer, "unauthorized", 401)
    assert (await _listed(office))["token_overlap_until"] is None


async def test_a_rotated_token_overlap_ends_at_its_time_or_at_once(office: Office) -> None:
    await office.user()
    old = await _new_store(office)
    await office.ok("POST", "/admin/v1/stores/store-9/rotate-token", {"overlap_hours": 1})
    async with office.db.write() as conn:
        await conn.execute(
            schema.stores.update()
            .where(schema.stores.c.store_id == "store-9")
            .values(previous_token_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    status, answer, _ = await _sync(office, "GET", "/sync/v1/hello", old)
    assert_error(status, answer, "unauthorized", 401)
    rotated = await office.ok("POST", "/admin/v1/stores/store-9/rotate-token", {"overlap_hours": 0})
    assert rotated["old_token_until"] is None
    async with office.db.read() as conn:
        previous = await conn.scalar(
            sa.select(schema.stores.c.previous_token_hash).where(
                schema.stores.c.store_id == "store-9"
            )
        )
    assert previous is None
    for wrong in (10_000, -1, False, "24"):
        status, answer = await office.call(
            "POST", "/admin/v1/stores/store-9/rotate-token", {"overlap_hours": wrong}
        )
        assert_error(status, answer, "validation_error", 422)


async def test_store_changes_need_the_stores_permission_and_are_audited(office: Office) -> None:
    await office.user()
    await _new_store(office)
    await office.user("cashier-office", {Permission.JOURNAL})
    status, answer = await office.call(
        "POST", "/admin/v1/stores/store-9/disable", {}, as_user="cashier-office"
    )
    assert_error(status, answer, "forbidden", 403)
    await office.ok("POST", "/admin/v1/stores/store-9/disable", {"reason": "x"}, as_user="admin")
    again = await office.ok("POST", "/admin/v1/stores/store-9/disable", {}, as_user="admin")
    assert (again["state"], again["was"]) == ("disabled", "disabled")  # idempotent
    status, answer = await office.call(
        "POST", "/admin/v1/stores/nowhere/disable", {}, as_user="admin"
    )
    assert_error(status, answer, "idempotency_conflict", 409)
    actions = [row.action for row in await office.audit()]
    assert actions.count("POST /admin/v1/stores/{store_id}/disable") >= 2
