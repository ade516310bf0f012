"""No sync input, however malformed, gets a 5xx or leaves the ledger inconsistent.

The list: the repros of issue 12 (a real sale with one field broken, in protocol 1's terms), every
field of every operation kind of protocol 2 broken in turn in every way JSON allows, malformed
cursors and page parameters, headers, and authorisation bodies.  What the central server cannot
read is refused with ``422 validation_error`` naming the field, and nothing of the batch applies;
what it can read but cannot have happened is rejected with a stable reason.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import pytest

from shared.protocol import PROTOCOL_HEADER, STORE_HEADER
from tests.central.conftest import Central, StoreOps

CARD = "1000000001"
MISSING: Final = object()
#: Every kind of wrong JSON value a field can get.
BAD_VALUES: Final[list[Any]] = [MISSING, None, "abc", "", -1, 1.5, 10**30, [], {}, True]


class Chain:
    """A store with a registered card and its honest sales, sending operations one at a time at
    the next sequence number."""

    def __init__(self, central: Central, ops: StoreOps) -> None:
        self.central = central
        self.ops = ops
        self.last_applied = 0

    async def send(self, op: dict[str, Any], **headers: str) -> tuple[int, Any]:
        op = dict(op, seq=self.last_applied + 1, op_id=f"op-{self.last_applied + 1}")
        status, body = await self.central.upload(op, **headers)
        assert status < 500, body
        if status == 200:
            self.last_applied += 1
        return status, body


@pytest.fixture
async def chain(central: Central, s1: StoreOps) -> Chain:
    store = Chain(central, s1)
    status, body = await store.send(s1.register(CARD, "9160000001"))
    assert status == 200, body
    status, body = await store.send(
        s1.sale(CARD, accrued=5_000, day=date.today(), receipt_id="R-0")
    )
    assert status == 200, body
    return store


def _mutated(op: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(op)
    target: Any = changed["operation"]
    for part in path[:-1]:
        target = target[part]
    if value is MISSING:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


def _fields(operation: dict[str, Any]) -> list[tuple[str | int, ...]]:
    """Every field's path, those of the first line and lot included."""
    paths: list[tuple[str | int, ...]] = []
    for key, value in operation.items():
        paths.append((key,))
        if isinstance(value, list) and value and isinstance(value[0], dict):
            paths += [(key, 0, inner) for inner in value[0]]
        elif isinstance(value, dict):
            paths += [(key, inner) for inner in value]
    return paths


def examples(s1: StoreOps) -> dict[str, dict[str, Any]]:
    """One valid operation of every kind."""
    later = datetime.now(UTC) + timedelta(hours=1)
    return {
        "sale": s1.sale(CARD, accrued=100, redeemed=50, day=date.today(), receipt_id="R-X"),
        "return": s1.return_(CARD, "R-0", reversed_kop=5_000),
        "hold": s1.hold(CARD, "H-X", 100, later),
        "hold_release": s1.release(CARD, "H-X"),
        "register": {
            **s1.register("1000000002", "9160000002"),
            "operation": {
                "kind": "register",
                "card": "1000000002",
                "phone": "9160000002",
                "virtual": True,
                "profile": {"first_name": "Анна", "birth_date": "1990-01-01"},
                "consents": {"personal_data": True, "advertising": False},
            },
        },
        "verify": s1.verify(CARD),
    }


@pytest.mark.parametrize("kind", ["sale", "return", "hold", "hold_release", "register", "verify"])
async def test_every_field_broken_in_every_way_is_a_4xx_or_a_rejection(
    chain: Chain, s1: StoreOps, kind: str
) -> None:
    example = examples(s1)[kind]
    refused = 0
    for path in _fields(example["operation"]):
        for value in BAD_VALUES:
            status, body = await chain.send(_mutated(example, path, value))
            if status == 422:
                refused += 1
                assert body["error"]["code"] == "validation_error", body
                assert body["error"]["details"]["errors"], body
            else:
                assert status == 200, (path, value, body)
    assert refused  # most breakages cannot be read at all
    report = await chain.central.invariants()
    assert report.ok, report.problems


V1_SALE: Final[dict[str, Any]] = {
    "kind": "sale",
    "card": CARD,
    "created_at": "2026-12-01T10:00:00+03:00",
    "payload": {
        "card": CARD,
        "receipt_id": "R-V1",
        "day": "2026-12-01",
        "lines": [
            {
                "line_id": "1",
                "sku": "SKU-1",
                "qty": "1",
                "amount": 10_000,
                "vital": False,
                "accrued": 500,
                "redeemed": 0,
            }
        ],
        "hold_id": None,
        "authorization_id": None,
        "cashier": None,
        "settings_version": 1,
        "accrual_lot": "x:a",
        "accrual_expires_on": "2027-06-01",
        "accrual_active_from": None,
        "effect": {"accrued": 500, "redeemed": 0, "delta": 500, "debt_paid": 0},
    },
}
V1_HOLD: Final[dict[str, Any]] = {
    "kind": "hold",
    "card": CARD,
    "created_at": "2026-12-01T10:00:00+03:00",
    "payload": {
        "card": CARD,
        "hold_id": "H-1",
        "amount": 100,
        "expires_at": "2026-12-01T11:00:00+03:00",
        "effect": {"held": 100},
    },
}
V1_RELEASE: Final[dict[str, Any]] = {
    "kind": "hold_release",
    "card": CARD,
    "created_at": "2026-12-01T10:00:00+03:00",
    "payload": {"card": CARD, "hold_id": "H-1", "state": "released", "effect": {}},
}
V1_REGISTER: Final[dict[str, Any]] = {
    "kind": "register",
    "card": "1000000003",
    "created_at": "2026-12-01T10:00:00+03:00",
    "payload": {
        "card": "1000000003",
        "phone": "9160000003",
        "virtual": True,
        "profile": {"birth_date": "1990-01-01"},
        "consents": {"personal_data": True, "advertising": False},
        "effect": {},
    },
}


def _v1(op: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(op)
    target: Any = changed["payload"]
    for part in path[:-1]:
        target = target[part]
    if value is MISSING:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


#: Issue 12's list: a real protocol-1 operation with one field broken; every one was a 500.
ISSUE_REPROS: Final[list[tuple[str, dict[str, Any]]]] = [
    ("day missing", _v1(V1_SALE, ("day",), MISSING)),
    ("day null", _v1(V1_SALE, ("day",), None)),
    ("day text", _v1(V1_SALE, ("day",), "abc")),
    ("day -1", _v1(V1_SALE, ("day",), -1)),
    ("day a list", _v1(V1_SALE, ("day",), [])),
    ("effect missing", _v1(V1_SALE, ("effect",), MISSING)),
    ("effect not an object", _v1(V1_SALE, ("effect",), "abc")),
    ("accrued text", _v1(V1_SALE, ("effect", "accrued"), "abc")),
    ("accrued 10**30", _v1(V1_SALE, ("effect", "accrued"), 10**30)),
    ("accrued 1.5", _v1(V1_SALE, ("effect", "accrued"), 1.5)),
    ("line accrued 1.5", _v1(V1_SALE, ("lines", 0, "accrued"), 1.5)),
    ("no receipt id", _v1(V1_SALE, ("receipt_id",), MISSING)),
    ("a negative line amount", _v1(V1_SALE, ("lines", 0, "amount"), -10_000)),
    ("a negative accrual", _v1(V1_SALE, ("effect", "accrued"), -500)),
    ("a negative hold", _v1(V1_HOLD, ("amount",), -100_000)),
    ("a hold without expires_at", _v1(V1_HOLD, ("expires_at",), MISSING)),
    ("a release without hold_id", _v1(V1_RELEASE, ("hold_id",), MISSING)),
    ("a birth date 'x'", _v1(V1_REGISTER, ("profile", "birth_date"), "x")),
]


@pytest.mark.parametrize(("case", "op"), ISSUE_REPROS, ids=[case for case, _ in ISSUE_REPROS])
async def test_the_issues_malformed_protocol_1_operations_are_refused(
    chain: Chain, case: str, op: dict[str, Any]
) -> None:
    status, body = await chain.send(op, **{PROTOCOL_HEADER: "1"})
    assert status == 422, (case, body)
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"]["seq"] == chain.last_applied + 1
    report = await chain.central.invariants()
    assert report.ok, report.problems


async def test_the_unbroken_protocol_1_operations_apply(chain: Chain) -> None:
    for op in (V1_SALE, V1_HOLD, V1_RELEASE, V1_REGISTER):
        status, body = await chain.send(op, **{PROTOCOL_HEADER: "1"})
        assert status == 200, body
        assert body["results"][0]["status"] == "applied", body


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "99999999999999999999999"},
        {"cursor": "-1"},
        {"cursor": "1.5"},
        {"cursor": ""},
        {"cursor": "abc"},
        {"cursor": "１"},  # a full-width digit
        {"cursor": "0", "limit": "99999999999999999999999"},
        {"cursor": "0", "limit": "-5"},
        {"cursor": "0", "card": "x" * 1000},
    ],
)
async def test_a_malformed_page_request_is_a_422(central: Central, params: dict[str, str]) -> None:
    status, body = await central.get("/sync/v1/changes", **params)
    assert status == 422, body
    assert body["error"]["code"] == "validation_error"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({PROTOCOL_HEADER: ""}, 426, "protocol_version"),
        ({PROTOCOL_HEADER: "abc"}, 426, "protocol_version"),
        ({PROTOCOL_HEADER: "２"}, 426, "protocol_version"),
        ({PROTOCOL_HEADER: "2.0"}, 426, "protocol_version"),
        ({PROTOCOL_HEADER: "0"}, 426, "protocol_version"),
        ({PROTOCOL_HEADER: "9" * 40}, 426, "protocol_version"),
        ({STORE_HEADER: ""}, 401, "unauthorized"),
        ({STORE_HEADER: "s" * 5000}, 401, "unauthorized"),
        ({"Authorization": "Bearer"}, 401, "unauthorized"),
        ({"Authorization": "Basic abc"}, 401, "unauthorized"),
        ({"Authorization": "Bearer " + "x" * 5000}, 401, "unauthorized"),
    ],
)
async def test_malformed_headers_are_refused(
    central: Central, headers: dict[str, str], status: int, code: str
) -> None:
    for method, path in (("GET", "/sync/v1/hello"), ("POST", "/sync/v1/upload")):
        response = await central.client.request(
            method, path, json={"ops": []}, headers=central.headers(**headers)
        )
        body = await response.json()
        assert (response.status, body["error"]["code"]) == (status, code), (path, body)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"authorization_id": "a", "card": CARD},
        {"authorization_id": "a", "card": CARD, "amount": "abc"},
        {"authorization_id": "a", "card": CARD, "amount": 1.5},
        {"authorization_id": "a", "card": CARD, "amount": 0},
        {"authorization_id": "a", "card": CARD, "amount": 10**30},
        {"authorization_id": "a", "card": CARD, "amount": 100, "pending_delta": 10**30},
        {"authorization_id": "a", "card": CARD, "amount": 100, "pending_held": -1},
        {"authorization_id": "a", "card": CARD, "amount": 100, "releases": "x"},
        {"authorization_id": "a", "card": CARD, "amount": 100, "releases": [""]},
        {"authorization_id": "", "card": CARD, "amount": 100},
        {"authorization_id": "a", "card": "", "amount": 100},
        {"authorization_id": "a", "card": CARD, "amount": 100, "surprise": 1},
        [],
        "text",
    ],
)
async def test_a_malformed_authorisation_is_a_422(central: Central, body: Any) -> None:
    response = await central.client.post("/sync/v1/authorize", json=body, headers=central.headers())
    answer = await response.json()
    assert response.status == 422, answer
    assert answer["error"]["code"] == "validation_error"


@pytest.mark.parametrize(
    "body", [{}, {"ops": []}, {"ops": "x"}, {"ops": [{}]}, {"ops": [1]}, [], "x", {"ops": None}]
)
async def test_a_malformed_batch_is_a_422(central: Central, body: Any) -> None:
    response = await central.client.post("/sync/v1/upload", json=body, headers=central.headers())
    answer = await response.json()
    assert response.status == 422, answer
