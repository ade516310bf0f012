"""The till API's OpenAPI 3.1 document, generated from the endpoint table and its models."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from agent.models import ErrorResponse
from shared.errors import HTTP_STATUS, MESSAGES_RU, ErrorCode

if TYPE_CHECKING:
    from agent.routes import Endpoint

REF = "#/components/schemas/{model}"


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "maxLength": 64},
        }
        for name in names
    ]


def _error_responses(codes: Iterable[ErrorCode]) -> dict[str, Any]:
    by_status: dict[int, list[ErrorCode]] = {}
    for code in codes:
        by_status.setdefault(HTTP_STATUS[code], []).append(code)
    responses = {}
    for status, status_codes in sorted(by_status.items()):
        listed = "; ".join(f"`{code}` — {MESSAGES_RU[code]}" for code in status_codes)
        responses[str(status)] = {
            "description": listed,
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}
            },
        }
    return responses


@cache
def _document(endpoints: tuple[Endpoint, ...], version: str) -> dict[str, Any]:
    from agent.routes import COMMON_ERRORS

    models: list[tuple[type[BaseModel], Any]] = [(ErrorResponse, "serialization")]
    for endpoint in endpoints:
        models.append((endpoint.response, "serialization"))
        if endpoint.request is not None:
            models.append((endpoint.request, "validation"))
    _, schemas = models_json_schema(models, ref_template=REF)
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": endpoint.handler.__name__.strip("_"),
            "parameters": [
                {
                    "name": "X-Register-Id",
                    "in": "header",
                    "required": endpoint.path != "/pos/v1/status",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                    "description": "The till's id.",
                },
                *_path_parameters(endpoint.path),
            ],
            "responses": {
                str(endpoint.status): {
                    "description": "Success.",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": REF.format(model=endpoint.response.__name__)}
                        }
                    },
                },
                **_error_responses((*COMMON_ERRORS, *endpoint.errors)),
            },
        }
        if endpoint.status == 201:
            # A repeated registration or request answers 200 with the same shape.
            operation["responses"]["200"] = operation["responses"]["201"]
        if endpoint.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": REF.format(model=endpoint.request.__name__)}
                    }
                },
            }
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Pharmacy bonus store agent — till API",
            "version": version,
            "description": (
                "The contract between a till (POS) and the store agent. Amounts are roubles with "
                "at most 2 fractional digits; every error has the shape "
                '{"error": {"code", "message", "details"}}.'
            ),
        },
        "servers": [{"url": "http://127.0.0.1:8765"}],
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"tillToken": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"tillToken": []}],
        "paths": paths,
    }


def openapi_document(endpoints: tuple[Endpoint, ...], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these endpoints."""
    return _document(endpoints, version)
