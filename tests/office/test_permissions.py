"""Sessions, permissions and the audit: who may do what, and every mutating request recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from central import office_api
from central.office_api import ROUTES
from central.staff import SESSION_TTL, Permission
from tests.office.conftest import PASSWORD, Office, assert_error

CARD = "7500000000011"
#: A concrete request for every route: the path with its parameters filled in, and a body.
REQUESTS: dict[tuple[str, str], tuple[str, Any]] = {
    ("POST", "/admin/v1/session"): ("/admin/v1/session", {"login": "x", "password": "y"}),
    ("DELETE", "/admin/v1/session"): ("/admin/v1/session", None),
    ("GET", "/admin/v1/me"): ("/admin/v1/me", None),
    ("GET", "/admin/v1/cards"): ("/admin/v1/cards", None),
    ("GET", "/admin/v1/cards/{number}"): (f"/admin/v1/cards/{CARD}", None),
    ("POST", "/admin/v1/campaigns"): (
        "/admin/v1/campaigns",
        {"campaign_id": "perm", "amount": 1, "note": "n", "selection": {"cards": [CARD]}},
    ),
    ("GET", "/admin/v1/campaigns"): ("/admin/v1/campaigns", None),
    ("POST", "/admin/v1/campaigns/{campaign_id}/cancel"): (
        "/admin/v1/campaigns/perm/cancel",
        None,
    ),
    ("GET", "/admin/v1/campaigns/{campaign_id}/cards"): ("/admin/v1/campaigns/perm/cards", None),
    ("POST", "/admin/v1/zeroings"): (
        "/admin/v1/zeroings",
        {
            "zeroing_id": "perm-z",
            "before_date": "2025-01-01",
            "note": "n",
            "selection": {"cards": [CARD]},
        },
    ),
    ("POST", "/admin/v1/zeroings/{zeroing_id}/cancel"): ("/admin/v1/zeroings/perm-z/cancel", None),
    ("GET", "/admin/v1/journal"): ("/admin/v1/journal", None),
    ("GET", "/admin/v1/journal.csv"): ("/admin/v1/journal.csv", None),
    ("POST", "/admin/v1/receipts/{store_id}/{receipt_id}/annul"): (
        "/admin/v1/receipts/store-1/R-1/annul",
        {"note": "ошибка"},
    ),
    ("GET", "/admin/v1/stores"): ("/admin/v1/stores", None),
    ("POST", "/admin/v1/stores"): ("/admin/v1/stores", {"store_id": "store-2", "name": "Вторая"}),
    ("POST", "/admin/v1/stores/{store_id}/disable"): ("/admin/v1/stores/store-1/disable", {}),
    ("POST", "/admin/v1/stores/{store_id}/enable"): ("/admin/v1/stores/store-1/enable", {}),
    ("POST", "/admin/v1/stores/{store_id}/close"): ("/admin/v1/stores/store-1/close", {}),
    ("POST", "/admin/v1/stores/{store_id}/rotate-token"): (
        "/admin/v1/stores/store-1/rotate-token",
        {},
    ),
    ("GET", "/admin/v1/settings"): ("/admin/v1/settings", None),
    ("PATCH", "/admin/v1/settings"): ("/admin/v1/settings", {"changes": {}}),
}
GUARDED = [route for route in ROUTES if route.permissions]


def test_every_route_has_a_request_here() -> None:
    assert set(REQUESTS) == {(route.method, route.path) for route in ROUTES}


async def _raw(office: Office, method: str, path: str, body: Any, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False)
        headers["Content-Type"] = "application/json"
    return await office.client.request(method, path, data=data, headers=headers)


async def _status(office: Office, method: str, path: str, body: Any, token: str | None) -> int:
    response = await _raw(office, method, path, body, token)
    await response.read()
    return int(response.status)


async def test_every_operation_needs_its_permission(office: Office) -> None:
    store = await office.store()
    await store.register(CARD, "9600000001")
    await store.sale(CARD, "R-1", day=datetime(2024, 5, 1).date(), accrued_kop=100)
    await office.user("none", set())
    for permission in Permission:
        await office.user(f"only-{permission}", {permission})
        await office.user(f"all-but-{permission}", set(Permission) - {permission})

    for route in GUARDED:
        path, body = REQUESTS[(route.method, route.path)]
        needed = set(route.permissions)
        # Without any permission, and with every permission but the ones that would do.
        refused = ["none"]
        if len(needed) == 1:
            refused.append(f"all-but-{route.permissions[0]}")
        for login in refused:
            status, answer = await office.call(route.method, path, body, as_user=login)
            assert_error(status, answer, "forbidden", 403)
            assert set(answer["error"]["details"]["needed"]) == {str(p) for p in needed}
        # Each permission that is enough, alone.
        for permission in needed:
            status = await _status(
                office, route.method, path, body, office.tokens[f"only-{permission}"]
            )
            assert status not in (401, 403), (route.path, permission, status)
            assert status < 500, (route.path, permission, status)

    # The SmartApteka split: «Бонус акции» does not give «Обнуление бонусов» and back.
    zeroing = REQUESTS[("POST", "/admin/v1/zeroings")][1]
    status, answer = await office.call(
        "POST", "/admin/v1/zeroings", {**zeroing, "zeroing_id": "z2"}, as_user="only-campaigns"
    )
    assert_error(status, answer, "forbidden", 403)
    status, answer = await office.call(
        "POST", "/admin/v1/campaigns/perm/cancel", as_user="only-zeroing"
    )
    assert_error(status, answer, "forbidden", 403)
    # Anybody logged in sees who they are.
    me = await office.ok("GET", "/admin/v1/me", as_user="only-annulment")
    assert me == {
        "login": "only-annulment",
        "name": "Сотрудник only-annulment",
        "permissions": ["annulment"],
    }
    assert (await office.ok("GET", "/admin/v1/me", as_user="none"))["permissions"] == []


async def test_sessions(office: Office, monkeypatch: pytest.MonkeyPatch) -> None:
    token = await office.user("admin")
    # No session, a wrong scheme, an unknown token: 401 on every route but the login.
    for route in ROUTES:
        if (route.method, route.path) == ("POST", "/admin/v1/session"):
            continue
        path, body = REQUESTS[(route.method, route.path)]
        for bad in (None, "not-a-token"):
            response = await _raw(office, route.method, path, body, bad)
            assert_error(response.status, await response.json(), "unauthorized", 401)
    response = await office.client.get("/admin/v1/me", headers={"Authorization": f"Basic {token}"})
    assert_error(response.status, await response.json(), "unauthorized", 401)

    # A wrong password and an unknown login look the same.
    for login, password in (("admin", "wrong password"), ("nobody", PASSWORD), ("admin", "")):
        status, answer = await office.log_in(login, password)
        if password:
            assert_error(status, answer, "unauthorized", 401)
        else:
            assert_error(status, answer, "validation_error", 422)

    # A session expires after its time.
    status, answer = await office.log_in("admin")
    assert status == 201
    expires_at = datetime.fromisoformat(answer["expires_at"])
    assert timedelta(0) < expires_at - datetime.now(UTC) <= SESSION_TTL
    assert (await office.ok("GET", "/admin/v1/me", token=token))["login"] == "admin"
    later = datetime.now(UTC) + SESSION_TTL + timedelta(minutes=1)
    monkeypatch.setattr(office_api, "now", lambda: later)
    status, answer = await office.call("GET", "/admin/v1/me", token=token)
    assert_error(status, answer, "unauthorized", 401)
    monkeypatch.undo()
    assert (await office.ok("GET", "/admin/v1/me", token=token))["login"] == "admin"

    # Logging out ends only that session.
    other = (await office.log_in("admin"))[1]["token"]
    assert await office.ok("DELETE", "/admin/v1/session", token=token) == {"logged_out": True}
    status, answer = await office.call("GET", "/admin/v1/me", token=token)
    assert_error(status, answer, "unauthorized", 401)
    assert (await office.ok("GET", "/admin/v1/me", token=other))["login"] == "admin"

    # The OpenAPI document is public.
    response = await office.client.get("/admin/v1/openapi.json")
    assert response.status == 200


async def test_every_mutating_request_is_audited(office: Office) -> None:
    store = await office.store()
    await store.register(CARD, "9600000002")
    await office.add_staff("admin", set(Permission))
    await office.user("reader", {Permission.JOURNAL})
    campaign = REQUESTS[("POST", "/admin/v1/campaigns")][1]

    status, _ = await office.log_in("admin", "wrong password")
    assert status == 401
    status, answer = await office.log_in("admin")
    assert status == 201
    admin = answer["token"]
    sent: list[tuple[str | None, str, int]] = [
        ("admin", "POST /admin/v1/session", 401),
        ("admin", "POST /admin/v1/session", 201),
    ]

    async def send(method: str, path: str, body: Any, token: str | None, action: str) -> int:
        status = await _status(office, method, path, body, token)
        login = {admin: "admin", office.tokens["reader"]: "reader"}.get(token or "")
        sent.append((login, f"{method} {action}", status))
        return status

    assert (
        await send(
            "POST", "/admin/v1/campaigns", campaign, office.tokens["reader"], "/admin/v1/campaigns"
        )
        == 403
    )
    assert await send("POST", "/admin/v1/campaigns", campaign, None, "/admin/v1/campaigns") == 401
    assert (
        await send(
            "POST",
            "/admin/v1/campaigns",
            {**campaign, "amount": "1.001"},
            admin,
            "/admin/v1/campaigns",
        )
        == 422
    )
    assert await send("POST", "/admin/v1/campaigns", campaign, admin, "/admin/v1/campaigns") == 201
    assert (
        await send(
            "POST", "/admin/v1/campaigns", {**campaign, "note": "x"}, admin, "/admin/v1/campaigns"
        )
        == 409
    )
    assert (
        await send(
            "POST",
            "/admin/v1/campaigns/perm/cancel",
            None,
            admin,
            "/admin/v1/campaigns/{campaign_id}/cancel",
        )
        == 200
    )
    assert (
        await send(
            "POST",
            "/admin/v1/zeroings/none/cancel",
            None,
            admin,
            "/admin/v1/zeroings/{zeroing_id}/cancel",
        )
        == 404
    )
    assert (
        await send(
            "POST",
            "/admin/v1/receipts/store-1/R-9/annul",
            {},
            admin,
            "/admin/v1/receipts/{store_id}/{receipt_id}/annul",
        )
        == 404
    )
    assert (
        await send(
            "POST",
            "/admin/v1/stores",
            {"store_id": "store-2", "name": "Вторая"},
            admin,
            "/admin/v1/stores",
        )
        == 201
    )
    assert (
        await send(
            "PATCH",
            "/admin/v1/settings",
            {"changes": {"accrual_rate_other_pct": 4}},
            admin,
            "/admin/v1/settings",
        )
        == 200
    )
    assert (
        await send(
            "PATCH",
            "/admin/v1/settings",
            {"changes": {"no_such_setting": 1}},
            admin,
            "/admin/v1/settings",
        )
        == 422
    )
    assert (
        await send("PATCH", "/admin/v1/settings", b"{not json", admin, "/admin/v1/settings") == 422
    )
    # Requests to no route at all, with a long path, are refused and audited too.
    long_path = "/admin/v1/" + "x" * 300
    assert await send("POST", long_path, {}, None, long_path) == 401
    assert await send("POST", long_path, {}, admin, long_path) == 404
    assert await send("PUT", "/admin/v1/campaigns", campaign, admin, "/admin/v1/campaigns") == 405
    assert await send("DELETE", "/admin/v1/session", None, admin, "/admin/v1/session") == 200
    # Reading is not audited.
    assert await _status(office, "GET", "/admin/v1/journal", None, office.tokens["reader"]) == 200
    assert await _status(office, "GET", "/admin/v1/journal", None, None) == 401

    rows = await office.audit()
    # The reader's own login came first.
    assert [(r.login, r.action, r.status) for r in rows[:1]] == [
        ("reader", "POST /admin/v1/session", 201)
    ]
    got = [(r.login, r.action, r.status) for r in rows[1:]]
    # Refusals of nobody (no session: a wrong password, no token) are counted apart.
    anonymous = {
        (None, "POST /admin/v1/campaigns", 401),
        ("admin", "POST /admin/v1/session", 401),
        (None, f"POST {long_path}", 401),
    }
    expected = [
        (login, action[:64], status)
        for login, action, status in sent
        if (login, action, status) not in anonymous
    ]
    assert got == expected
    assert await office.refusals() == {
        ("POST /admin/v1/session", "admin", "unauthorized", 401): 1,
        ("POST /admin/v1/campaigns", "", "unauthorized", 401): 1,
        (f"POST {long_path}"[:64], "", "unauthorized", 401): 1,
    }
    for row in rows:
        assert row.at is not None
        text = json.dumps([row.params, row.result], ensure_ascii=False)
        # Never a password.
        assert PASSWORD not in text
        assert "wrong password" not in text
        assert "token" not in row.result  # never a session's or a store's token
    by_status = {(r.action, r.status): r for r in rows}
    created = by_status[("POST /admin/v1/campaigns", 201)]
    assert created.params["campaign_id"] == "perm"
    assert created.params["amount"] == 100
    assert created.result["total_kop"] == 100
    assert created.target == "/admin/v1/campaigns"
    refused = by_status[("POST /admin/v1/campaigns", 403)]
    assert refused.result["error"]["code"] == "forbidden"
    cancel = by_status[("POST /admin/v1/campaigns/{campaign_id}/cancel", 200)]
    assert cancel.target == "/admin/v1/campaigns/perm/cancel"
    assert by_status[("POST /admin/v1/stores", 201)].result == {"store_id": "store-2"}
    assert ("POST /admin/v1/session", 401) not in by_status
