"""The office API's OpenAPI 3.1 document, generated from its route table and request models."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from central.journal import JournalFilter
from central.selection import CardFilter
from shared.errors import HTTP_STATUS, MESSAGES_RU, ErrorCode

if TYPE_CHECKING:
    from central.office_api import Route

REF = "#/components/schemas/{model}"
#: Every error an office request can get; each operation lists them all (a route that cannot
#: give one of them just never does).
_ERRORS = (
    ErrorCode.VALIDATION_ERROR,
    ErrorCode.UNAUTHORIZED,
    ErrorCode.FORBIDDEN,
    ErrorCode.NOT_FOUND,
    ErrorCode.CARD_NOT_FOUND,
    ErrorCode.RECEIPT_NOT_FOUND,
    ErrorCode.IDEMPOTENCY_CONFLICT,
    ErrorCode.PAYLOAD_TOO_LARGE,
    ErrorCode.SERVICE_BUSY,
)
_QUERY_MODELS: dict[str, type[BaseModel]] = {
    "/admin/v1/cards": CardFilter,
    "/admin/v1/journal": JournalFilter,
    "/admin/v1/journal.csv": JournalFilter,
}


def _query_parameters(path: str) -> list[dict[str, Any]]:
    model = _QUERY_MODELS.get(path)
    extra = {
        "/admin/v1/cards": ["sort", "desc", "limit", "offset"],
        "/admin/v1/journal": ["after", "limit", "count"],
        "/admin/v1/campaigns": ["kind", "limit", "offset"],
        "/admin/v1/campaigns/{campaign_id}/cards": ["spent_only", "after", "limit"],
    }.get(path, [])
    params = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in (list(model.model_fields) if model else []) + extra
    ]
    params += [
        {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for part in path.split("/")
        if part.startswith("{")
    ]
    return params


@cache
def _document(routes: tuple[Route, ...]) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (route.request, "validation") for route in routes if route.request is not None
    ]
    _, schemas = models_json_schema(models, ref_template=REF)
    error_ref = {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}
    by_status: dict[int, list[ErrorCode]] = {}
    for code in _ERRORS:
        by_status.setdefault(HTTP_STATUS[code], []).append(code)
    errors = {
        str(status): {
            "description": "; ".join(f"`{code}` — {MESSAGES_RU[code]}" for code in codes),
            "content": error_ref,
        }
        for status, codes in sorted(by_status.items())
    }
    paths: dict[str, Any] = {}
    for route in routes:
        responses: dict[str, Any] = {
            str(route.status): {"description": "Success (JSON; CSV for the export)."},
            **errors,
        }
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "parameters": _query_parameters(route.path),
            "responses": responses,
            "x-permissions": [str(p) for p in route.permissions],
        }
        if route.path == "/admin/v1/session" and route.method == "POST":
            operation["security"] = []
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": REF.format(model=route.request.__name__)}
                    }
                },
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    components = dict(schemas.get("$defs", {}))
    components["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Pharmacy bonus central server — office API",
            "version": "1",
            "description": "Office operations: sessions, cards, campaigns, zeroings, journal, annulment.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"session": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"session": []}],
        "paths": paths,
    }


def office_openapi(routes: tuple[Route, ...]) -> dict[str, Any]:
    """The OpenAPI document of the office API."""
    return _document(routes)
