"""The office API describes itself: the OpenAPI document and docs/office-api.md name every route."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from central.office_api import ROUTES
from central.staff import Permission
from tests.office.conftest import Office

DOC = Path(__file__).resolve().parents[2] / "docs" / "office-api.md"


async def test_openapi_lists_every_route(office: Office) -> None:
    response = await office.client.get("/admin/v1/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.")
    listed = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert listed == {(route.method, route.path) for route in ROUTES}
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert operation["x-permissions"] == [str(p) for p in route.permissions]
        names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert names == set(re.findall(r"{(\w+)}", route.path))
        if route.request is not None:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in document["components"]["schemas"]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_docs_mention_every_route(route: object) -> None:
    text = DOC.read_text(encoding="utf-8")
    method, path = route.method, route.path  # type: ignore[attr-defined]
    assert f"{method} {path}" in text, f"docs/office-api.md does not document {method} {path}"


def test_docs_name_every_permission() -> None:
    text = DOC.read_text(encoding="utf-8").replace("\\|", "|")  # a '|' escaped in a table
    for permission in Permission:
        assert f"`{permission}`" in text
    for smartapteka in ("Скидки|Бонус акции", "Скидки|Обнуление бонусов"):
        assert smartapteka in text
