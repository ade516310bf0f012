"""docs/pos-api.md is tested: every endpoint and every error code is documented, with the right
HTTP status and the cashier's message, and its examples are valid requests and full answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.routes import ENDPOINTS, Endpoint
from shared.errors import HTTP_STATUS, MESSAGES_RU, ErrorCode

DOC = Path(__file__).resolve().parents[2] / "docs" / "pos-api.md"
#: A row of the error table: | `code` | status | message | when |
ERROR_ROW = re.compile(
    r"^\|\s*`(?P<code>[a-z_]+)`\s*\|\s*(?P<status>\d{3})\s*\|\s*(?P<message>[^|]+?)\s*\|"
)


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def error_rows() -> dict[str, re.Match[str]]:
    return {
        match["code"]: match
        for line in doc_text().splitlines()
        if (match := ERROR_ROW.match(line.strip()))
    }


def section(endpoint: Endpoint) -> str:
    """The text under the heading that names the endpoint, up to the next heading."""
    parts = re.split(r"^(#{2,3} .*)$", doc_text(), flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        if f"`{endpoint.method} {endpoint.path}`" in heading:
            return body
    pytest.fail(f"no heading names `{endpoint.method} {endpoint.path}`")


def json_blocks(text: str) -> list[object]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]


def is_request(block: object) -> bool:
    for endpoint in ENDPOINTS:
        if endpoint.request is None:
            continue
        try:
            endpoint.request.model_validate(block)
        except ValidationError:
            continue
        return True
    return False


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_is_documented(code: ErrorCode) -> None:
    row = error_rows().get(str(code))
    assert row is not None, f"{code} has no row in docs/pos-api.md's error table"
    assert int(row["status"]) == HTTP_STATUS[code], code
    assert row["message"] == MESSAGES_RU[code], code


def test_no_unknown_error_code_is_documented() -> None:
    assert set(error_rows()) - {str(code) for code in ErrorCode} == set()


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
def test_every_endpoint_is_documented(endpoint: Endpoint) -> None:
    assert f"| `{endpoint.method} {endpoint.path}` |" in doc_text()
    text = section(endpoint)
    for code in endpoint.errors:
        assert f"`{code}`" in text, f"{endpoint.path}: the section does not name {code}"


@pytest.mark.parametrize(
    "endpoint", [e for e in ENDPOINTS if e.request is not None], ids=lambda e: e.path
)
def test_request_examples_are_valid(endpoint: Endpoint) -> None:
    assert endpoint.request is not None
    request, *_ = json_blocks(section(endpoint))
    endpoint.request.model_validate(request)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
def test_answer_examples_have_every_field(endpoint: Endpoint) -> None:
    # The first example that is not a request (a heading may name two endpoints of one model).
    answer = next(block for block in json_blocks(section(endpoint)) if not is_request(block))
    assert isinstance(answer, dict)
    assert set(answer) == set(endpoint.response.model_fields), endpoint.path


def test_the_stale_sync_message_is_the_contracts() -> None:
    text = doc_text()
    assert "«Списание бонусов невозможно по техническим" in text
    assert MESSAGES_RU[ErrorCode.REDEMPTION_STALE_SYNC] in text
