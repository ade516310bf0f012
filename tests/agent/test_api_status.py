"""The status endpoint, authentication of tills, and the OpenAPI document."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agent.routes import COMMON_ERRORS, ENDPOINTS
from shared.errors import HTTP_STATUS
from tests.agent.conftest import Agent, AgentFactory, assert_error, line

STATUS = "/pos/v1/status"
OPENAPI = "/pos/v1/openapi.json"
STALE_MESSAGE = "Списание бонусов невозможно по техническим причинам"


# --- status -------------------------------------------------------------------------------------


async def test_status_of_a_store_that_never_synced(agent: Agent) -> None:
    status, body = await agent.get(STATUS)
    assert status == 200, body
    assert body["store_id"] == "store-1"
    assert body["online"] is False
    assert body["last_sync_at"] is None
    assert body["sync_age_s"] is None
    assert body["redemption_allowed"] is False
    assert body["redemption_refusal"] == {"code": "redemption_stale_sync", "message": STALE_MESSAGE}
    assert body["pending_ops"] == 0
    assert body["settings_version"] == 1
    assert body["provider"] == "file"
    assert body["provider_error"] is None
    assert body["cards"] == 0
    assert isinstance(body["version"], str)


async def test_status_after_a_sync_and_operations(agent: Agent, card: str) -> None:
    await agent.sale(card)
    synced_at = agent.clock.now()
    await agent.make_fresh()
    agent.clock.advance(125.5)
    status, body = await agent.get(STATUS)
    assert status == 200, body
    assert body["last_sync_at"] == synced_at.isoformat().replace("+00:00", "Z")
    assert body["sync_age_s"] == 125.5
    assert body["redemption_allowed"] is True
    assert body["redemption_refusal"] is None
    # register, verify (the confirmed code) and the sale: none acknowledged by the central server.
    assert body["pending_ops"] == 3
    assert body["cards"] == 1
    agent.clock.advance(3600)
    status, body = await agent.get(STATUS)
    assert body["redemption_allowed"] is False
    assert body["redemption_refusal"]["code"] == "redemption_stale_sync"


async def test_status_and_openapi_need_no_till_credentials(make_agent: AgentFactory) -> None:
    agent = await make_agent(till_tokens={"till-1": "secret"})
    for path in (STATUS, OPENAPI):
        response = await agent.client.get(path)
        assert response.status == 200, path


# --- authentication -----------------------------------------------------------------------------


async def test_a_request_without_a_register_id_is_refused(agent: Agent) -> None:
    response = await agent.client.post("/pos/v1/cards/lookup", json={"card": "5555"})
    assert response.status == 401
    assert_error(response.status, await response.json(), "unauthorized", 401)
    status, body = await agent.post("/pos/v1/cards/lookup", {"card": "5555"}, register_id="  ")
    assert_error(status, body, "unauthorized", 401)
    status, body = await agent.post("/pos/v1/cards/lookup", {"card": "5555"}, register_id="x" * 65)
    assert_error(status, body, "unauthorized", 401)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic secret"},
        {"Authorization": "secret"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer secret-and-more"},
    ],
)
async def test_a_wrong_or_missing_till_token_is_refused(
    make_agent: AgentFactory, headers: dict[str, str]
) -> None:
    agent = await make_agent(till_tokens={"till-1": "secret"})
    status, body = await agent.post("/pos/v1/cards/lookup", {"card": "5555"}, headers=headers)
    assert_error(status, body, "unauthorized", 401)


async def test_the_right_till_token_is_accepted(make_agent: AgentFactory) -> None:
    agent = await make_agent(till_tokens={"till-1": "secret", "till-2": "other"})
    auth = {"Authorization": "Bearer secret"}
    status, body = await agent.post(
        "/pos/v1/customers",
        {"phone": "+7 916 123 45 67", "consents": {"personal_data": True}},
        headers=auth,
    )
    assert status == 201, body
    status, body = await agent.post(
        "/pos/v1/cards/lookup", {"card": body["card"]["number"]}, headers=auth
    )
    assert status == 200, body
    # Another till's token does not open this till's register id.
    status, body = await agent.post(
        "/pos/v1/cards/lookup",
        {"card": "5555"},
        headers={"Authorization": "Bearer other"},
    )
    assert_error(status, body, "unauthorized", 401)
    # A register id the store does not know.
    status, body = await agent.post(
        "/pos/v1/cards/lookup", {"card": "5555"}, headers=auth, register_id="till-9"
    )
    assert_error(status, body, "unauthorized", 401)


async def test_authentication_comes_before_the_body_is_read(agent: Agent) -> None:
    response = await agent.client.post("/pos/v1/receipts", data=b"{not json")
    assert_error(response.status, await response.json(), "unauthorized", 401)


# --- OpenAPI ------------------------------------------------------------------------------------


@pytest.fixture
async def openapi(agent: Agent) -> dict[str, Any]:
    status, body = await agent.get(OPENAPI)
    assert status == 200
    assert isinstance(body, dict)
    return body


def refs(node: Any) -> list[str]:
    """Every ``$ref`` anywhere in a JSON document."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


async def test_openapi_lists_every_endpoint(openapi: dict[str, Any]) -> None:
    assert openapi["openapi"].startswith("3.1")
    listed = {(method.upper(), path) for path, ops in openapi["paths"].items() for method in ops}
    expected = {(endpoint.method, endpoint.path) for endpoint in ENDPOINTS}
    assert expected <= listed
    # The paths the till's contract fixes.
    for method, path in [
        ("GET", "/pos/v1/status"),
        ("POST", "/pos/v1/cards/lookup"),
        ("POST", "/pos/v1/customers"),
        ("POST", "/pos/v1/verifications"),
        ("POST", "/pos/v1/verifications/{verification_id}/confirm"),
        ("POST", "/pos/v1/receipts/calculate"),
        ("POST", "/pos/v1/receipts"),
        ("POST", "/pos/v1/returns"),
        ("POST", "/pos/v1/holds"),
        ("DELETE", "/pos/v1/holds/{hold_id}"),
        ("GET", "/pos/v1/cards/{card}/transactions"),
    ]:
        assert (method, path) in listed


async def test_openapi_lists_every_declared_error_code(openapi: dict[str, Any]) -> None:
    for endpoint in ENDPOINTS:
        responses = openapi["paths"][endpoint.path][endpoint.method.lower()]["responses"]
        assert str(endpoint.status) in responses
        for code in (*COMMON_ERRORS, *endpoint.errors):
            response = responses.get(str(HTTP_STATUS[code]))
            assert response is not None, (endpoint.path, code)
            assert re.search(rf"`{code}`", response["description"]), (endpoint.path, code)
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}


async def test_openapi_has_every_request_and_response_schema(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for endpoint in ENDPOINTS:
        operation = openapi["paths"][endpoint.path][endpoint.method.lower()]
        assert endpoint.response.__name__ in schemas
        if endpoint.request is not None:
            name = endpoint.request.__name__
            assert name in schemas, name
            content = operation["requestBody"]["content"]["application/json"]
            assert content["schema"] == {"$ref": f"#/components/schemas/{name}"}
            # The request's own fields are all described.
            assert set(endpoint.request.model_fields) == set(schemas[name]["properties"])
    assert "LineIn" in schemas
    assert "ErrorResponse" in schemas
    for ref in refs(openapi):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


async def test_openapi_describes_amounts_as_exact_decimals(openapi: dict[str, Any]) -> None:
    amount = openapi["components"]["schemas"]["LineIn"]["properties"]["amount"]
    pattern = next(item["pattern"] for item in amount["anyOf"] if item["type"] == "string")
    assert re.fullmatch(pattern, "12.30")
    assert not re.fullmatch(pattern, "1.001")
    assert not re.fullmatch(pattern, "1e3")


async def test_openapi_matches_the_router(agent: Agent, openapi: dict[str, Any]) -> None:
    routed = {
        (route.method, route.resource.canonical)
        for route in agent.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    listed = {(method.upper(), path) for path, ops in openapi["paths"].items() for method in ops}
    # /metrics is Prometheus's text for store IT (docs/agent-config.md), not the till API.
    assert listed == routed - {("GET", OPENAPI), ("GET", "/metrics")}


async def test_the_answers_match_their_documented_shape(agent: Agent, funded_card: str) -> None:
    """The success answers carry the fields their schema names as required."""
    _, openapi_doc = await agent.get(OPENAPI)
    schemas = openapi_doc["components"]["schemas"]
    _, body = await agent.post(
        "/pos/v1/receipts/calculate", {"card": funded_card, "lines": [line()]}
    )
    assert set(schemas["CalculateResponse"]["required"]) <= set(body)
    _, body = await agent.sale(funded_card)
    assert set(schemas["SaleResponse"]["required"]) <= set(body)
    _, body = await agent.get(STATUS)
    assert set(schemas["StatusResponse"]["required"]) <= set(body)
