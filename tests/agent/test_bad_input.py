"""Bad input is a 4xx in the error shape, never a 5xx, and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.agent.conftest import Agent, assert_error, line

RECEIPTS = "/pos/v1/receipts"
POST_PATHS = [
    "/pos/v1/cards/lookup",
    "/pos/v1/customers",
    "/pos/v1/verifications",
    "/pos/v1/verifications/V-1/confirm",
    "/pos/v1/receipts/calculate",
    "/pos/v1/receipts",
    "/pos/v1/returns",
    "/pos/v1/holds",
]


def sale(card: str, **changes: Any) -> dict[str, Any]:
    return {"receipt_id": "R-BAD", "card": card, "lines": [line()], "redeem": 0, **changes}


async def assert_untouched(agent: Agent, card: str) -> None:
    """Nothing was recorded: the receipt id is still free and the balance is what it was."""
    assert await agent.available(card) == 100
    status, body = await agent.post("/pos/v1/returns", {"return_id": "X", "receipt_id": "R-BAD"})
    assert_error(status, body, "receipt_not_found", 404)


# --- bodies that are not a JSON object ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"card": ',
        b"{'card': '1'}",
        b"[]",
        b'[{"card": "5555"}]',
        b'"card"',
        b"42",
        b"null",
        b"true",
        b"\xff\xfe{}",
        b'{"card": "5555"} trailing',
        b'{"redeem": NaN}',
        b'{"redeem": Infinity}',
        b'{"redeem": -Infinity}',
        b'{"redeem": ' + b"1" * 5000 + b"}",
        b"[" * 50_000 + b"]" * 50_000,  # deeper than the parser's recursion limit
        b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    ],
    ids=lambda raw: repr(raw[:24]),
)
@pytest.mark.parametrize("path", [RECEIPTS, "/pos/v1/cards/lookup"])
async def test_bodies_that_are_not_an_object(agent: Agent, path: str, raw: bytes) -> None:
    response = await agent.client.post(
        path, data=raw, headers={**agent.headers(), "Content-Type": "application/json"}
    )
    assert_error(response.status, await response.json(), "validation_error", 422)


# --- wrong values in a sale -----------------------------------------------------------------------


def with_line(card: str, **changes: Any) -> dict[str, Any]:
    return sale(card, lines=[{**line(), **changes}])


BAD_SALES = {
    "qty text": lambda c: with_line(c, qty="abc"),
    "qty NaN text": lambda c: with_line(c, qty="NaN"),
    "qty Infinity text": lambda c: with_line(c, qty="Infinity"),
    "qty negative": lambda c: with_line(c, qty=-1),
    "qty zero": lambda c: with_line(c, qty=0),
    "qty four decimals": lambda c: with_line(c, qty="1.0001"),
    "qty too large": lambda c: with_line(c, qty="1e9"),
    "qty bool": lambda c: with_line(c, qty=True),
    "vital maybe": lambda c: with_line(c, vital="maybe"),
    "vital list": lambda c: with_line(c, vital=[]),
    "card number": lambda c: sale(123),
    "card null": lambda c: sale(None),
    "card missing": lambda c: {k: v for k, v in sale(c).items() if k != "card"},
    "amount three decimals text": lambda c: with_line(c, amount="1.001"),
    "amount three decimals number": lambda c: with_line(c, amount=1.001),
    "amount half kopeck": lambda c: with_line(c, amount="0.005"),
    "amount exponent text": lambda c: with_line(c, amount="1e3"),
    "amount exponent capital": lambda c: with_line(c, amount="1E3"),
    "amount NaN text": lambda c: with_line(c, amount="NaN"),
    "amount Infinity text": lambda c: with_line(c, amount="Infinity"),
    "amount negative": lambda c: with_line(c, amount=-5),
    "amount negative text": lambda c: with_line(c, amount="-5"),
    "amount bool": lambda c: with_line(c, amount=True),
    "amount comma": lambda c: with_line(c, amount="1,50"),
    "amount too large": lambda c: with_line(c, amount="10000000000000"),
    "amount object": lambda c: with_line(c, amount={"value": 1}),
    "price three decimals": lambda c: with_line(c, price="0.001"),
    "redeem negative": lambda c: sale(c, redeem="-1"),
    "redeem three decimals": lambda c: sale(c, redeem="0.001"),
    "redeem list": lambda c: sale(c, redeem=[1]),
    "unknown field in the body": lambda c: sale(c, discount=5),
    "unknown field in a line": lambda c: with_line(c, discount=5),
    "duplicate line ids": lambda c: sale(c, lines=[line("1"), line("1")]),
    "no lines": lambda c: sale(c, lines=[]),
    "lines not a list": lambda c: sale(c, lines={"1": line()}),
    "501 lines": lambda c: sale(c, lines=[line(str(i), "1") for i in range(501)]),
    "receipt id with spaces": lambda c: sale(c, receipt_id="R 1"),
    "receipt id too long": lambda c: sale(c, receipt_id="R" * 65),
    "receipt id empty": lambda c: sale(c, receipt_id=""),
    "line id missing": lambda c: sale(
        c, lines=[{k: v for k, v in line().items() if k != "line_id"}]
    ),
    "sku empty": lambda c: with_line(c, sku=""),
    "name too long": lambda c: with_line(c, name="Ж" * 257),
    "name lone surrogate": lambda c: with_line(c, name="\ud800"),
}


@pytest.mark.parametrize("make", BAD_SALES.values(), ids=BAD_SALES.keys())
async def test_a_bad_sale_is_refused_and_changes_nothing(
    agent: Agent, funded_card: str, make: Any
) -> None:
    body = make(funded_card)
    # ensure_ascii keeps a lone surrogate as its \ud800 escape, as a till's JSON library would.
    status, answer = await agent.post(RECEIPTS, data=json.dumps(body))
    assert_error(status, answer, "validation_error", 422)
    assert answer["error"]["details"]
    await assert_untouched(agent, funded_card)


async def test_500_lines_are_accepted(agent: Agent, funded_card: str) -> None:
    status, body = await agent.sale(funded_card, [line(str(i), "1") for i in range(500)])
    assert status == 200, body
    assert len(body["lines"]) == 500


async def test_an_exponent_json_number_is_an_exact_amount(agent: Agent, card: str) -> None:
    # 1e3 is a JSON number equal to exactly 1000: unlike the text "1e3" it is not ambiguous.
    status, body = await agent.post(RECEIPTS, data=json.dumps(sale(card)).replace('"2000"', "2e3"))
    assert status == 200, body
    assert body["accrued"] == 100


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/pos/v1/cards/lookup", {"phone": 79161234567}),
        ("/pos/v1/cards/lookup", {"card": ["5555"]}),
        ("/pos/v1/customers", {"phone": "+79161234567", "consents": {"personal_data": "да"}}),
        ("/pos/v1/customers", {"phone": "+79161234567", "consents": True}),
        ("/pos/v1/verifications", {"card": "5555", "purpose": "sale"}),
        ("/pos/v1/verifications/V-1/confirm", {"code": 1234}),
        ("/pos/v1/returns", {"return_id": "X", "receipt_id": "R", "lines": [{"line_id": "1"}]}),
        (
            "/pos/v1/returns",
            {"return_id": "X", "receipt_id": "R", "lines": [{"line_id": "1", "qty": -1}]},
        ),
        ("/pos/v1/holds", {"hold_id": "H", "card": "5555", "amount": "NaN", "ttl_s": 600}),
        ("/pos/v1/holds", {"hold_id": "H", "card": "5555", "amount": 1, "ttl_s": "long"}),
        ("/pos/v1/holds", {"hold_id": "H", "card": "5555", "amount": 1, "ttl_s": 600.5}),
    ],
)
async def test_wrong_types_on_other_endpoints(agent: Agent, path: str, body: Any) -> None:
    status, answer = await agent.post(path, body)
    assert_error(status, answer, "validation_error", 422)


# --- size, paths and methods ----------------------------------------------------------------------


async def test_a_body_above_the_limit_is_refused(agent: Agent, funded_card: str) -> None:
    body = sale(funded_card, cashier="x" * (256 * 1024))
    status, answer = await agent.post(RECEIPTS, body)
    assert_error(status, answer, "payload_too_large", 413)
    await assert_untouched(agent, funded_card)


async def test_a_body_just_below_the_limit_is_read(agent: Agent, funded_card: str) -> None:
    body = json.dumps(sale(funded_card, cashier="x"))
    padded = body[:-1] + " " * (256 * 1024 - len(body)) + "}"
    assert len(padded) == 256 * 1024
    status, answer = await agent.post(RECEIPTS, data=padded)
    assert status == 200, answer


@pytest.mark.parametrize("path", ["/pos/v1/nope", "/pos/v2/receipts", "/nope", "/"])
async def test_an_unknown_path(agent: Agent, path: str) -> None:
    status, body = await agent.get(path)
    assert_error(status, body, "not_found", 404)
    status, body = await agent.post(path, {})
    assert_error(status, body, "not_found", 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", RECEIPTS),
        ("PUT", RECEIPTS),
        ("DELETE", "/pos/v1/cards/lookup"),
        ("POST", "/pos/v1/status"),
        ("PATCH", "/pos/v1/holds/H-1"),
        ("GET", "/pos/v1/holds/H-1"),
    ],
)
async def test_a_wrong_method(agent: Agent, method: str, path: str) -> None:
    response = await agent.client.request(method, path, headers=agent.headers())
    assert_error(response.status, await response.json(), "method_not_allowed", 405)


async def test_a_wrong_method_names_the_allowed_ones(agent: Agent) -> None:
    response = await agent.client.get(RECEIPTS, headers=agent.headers())
    assert response.status == 405
    assert response.headers.get("Allow") == "POST"


@pytest.mark.parametrize(
    "path", ["/pos/v1/holds/" + "H" * 300, "/pos/v1/cards/%00%ff/transactions", "/pos/v1/holds/%20"]
)
async def test_odd_path_parameters(agent: Agent, path: str) -> None:
    for method in ("GET", "DELETE"):
        response = await agent.client.request(method, path, headers=agent.headers())
        assert 400 <= response.status < 500
        body = await response.json()
        assert set(body["error"]) == {"code", "message", "details"}


# --- random bodies --------------------------------------------------------------------------------

FIELD_NAMES = [
    "phone", "card", "profile", "consents", "personal_data", "advertising", "purpose",
    "receipt_id", "code", "lines", "line_id", "sku", "name", "qty", "price", "amount", "vital",
    "category", "redeem", "verification_id", "hold_id", "cashier", "return_id", "ttl_s",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**15), max_value=10**15)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str)
    | st.text(max_size=12)
    | st.sampled_from(["5555", "9161234567", "+7 916 123-45-67", "1.001", "1e3", "-1", ""])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=20,
)
bodies = st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=8) | json_values


@pytest.mark.parametrize("path", POST_PATHS)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
async def test_random_bodies_never_fail_the_server(agent: Agent, path: str, body: Any) -> None:
    status, answer = await agent.post(path, data=json.dumps(body))
    assert status < 500, (body, answer)
    if status >= 400:
        assert set(answer) == {"error"}, answer
        assert set(answer["error"]) == {"code", "message", "details"}, answer
