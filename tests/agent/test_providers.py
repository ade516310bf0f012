"""Message providers against local HTTP servers that play each gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from agent.config import ProviderConfig
from agent.providers import (
    DETAIL_CHARS_MAX,
    FileProvider,
    MessageProvider,
    ProviderError,
    SmsProfiCallProvider,
    SmsProfiSmsProvider,
    StreamTelecomProvider,
    make_provider,
    render_text,
)

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

PHONE10 = "9161234567"
CODE = "482915"
PASSWORD = "p@ss w0rd/&секрет+"
TOKEN = "tok-3f9a1c77e2"
REQUEST_ID = "req-0001"
TIMEOUT_S = 0.3


@dataclass
class Gateway:
    """A fake gateway: records every request and answers with the next queued answer."""

    status: int = 200
    body: str = ""
    content_type: str = "text/plain"
    delay_s: float = 0.0
    requests: list[web.Request] = field(default_factory=list)
    raw_queries: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        self.raw_queries.append(request.raw_path.partition("?")[2])
        self.bodies.append(await request.read())
        if self.delay_s:
            # Held until the test ends, so that the server's shutdown does not wait for a sleep.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), self.delay_s)
        return web.Response(status=self.status, text=self.body, content_type=self.content_type)

    def answer_json(self, payload: Any, status: int = 200) -> None:
        self.status = status
        self.body = json.dumps(payload, ensure_ascii=False)
        self.content_type = "application/json"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def gateway(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[Gateway, TestServer]]:
    fake = Gateway()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = await aiohttp_server(app)
    yield fake, server
    fake.released.set()


def stream_config(server: TestServer, **overrides: Any) -> ProviderConfig:
    settings: dict[str, Any] = {
        "kind": "stream_telecom",
        "stream_telecom_url": str(server.make_url("/get/")),
        "stream_telecom_login": "apteka",
        "stream_telecom_password": SecretStr(PASSWORD),
        "stream_telecom_sender": "SmartApt",
        **overrides,
    }
    return ProviderConfig(**settings)


def smsprofi_config(server: TestServer, kind: str, **overrides: Any) -> ProviderConfig:
    settings: dict[str, Any] = {
        "kind": kind,
        "smsprofi_url": str(server.make_url("/json/v1.0")),
        "smsprofi_token": SecretStr(TOKEN),
        "smsprofi_sender": "StandardN",
        **overrides,
    }
    return ProviderConfig(**settings)


# --- file ------------------------------------------------------------------------------------


async def test_file_provider_appends_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "messages.jsonl"
    provider = FileProvider(ProviderConfig(kind="file", file_path=path))

    assert await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID) == CODE
    assert await provider.send_code("9000000000", "1111", "register", "req-2") == "1111"

    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert set(first) == {"time", "channel", "phone", "purpose", "request_id", "text", "code"}
    assert first["channel"] == "sms"
    assert first["phone"] == "7" + PHONE10
    assert first["purpose"] == "redeem"
    assert first["request_id"] == REQUEST_ID
    assert first["text"] == f"Код подтверждения: {CODE}"
    assert first["code"] == CODE
    assert datetime.fromisoformat(first["time"]).utcoffset() is not None
    assert json.loads(lines[1])["phone"] == "79000000000"
    assert provider.last_error is None


async def test_file_provider_is_safe_under_concurrent_sends(tmp_path: Path) -> None:
    path = tmp_path / "messages.jsonl"
    provider = FileProvider(ProviderConfig(kind="file", file_path=path))

    codes = [f"{n:04d}" for n in range(50)]
    await asyncio.gather(
        *(provider.send_code(PHONE10, code, "redeem", f"req-{code}") for code in codes)
    )

    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert sorted(record["code"] for record in records) == codes


async def test_file_provider_reports_an_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    provider = FileProvider(ProviderConfig(kind="file", file_path=blocker / "messages.jsonl"))

    with pytest.raises(ProviderError) as caught:
        await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)
    assert caught.value.reason == "unavailable"
    assert provider.last_error_reason == "unavailable"


# --- Stream Telecom --------------------------------------------------------------------------


async def test_stream_telecom_sends_the_documented_query(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession
) -> None:
    fake, server = gateway
    fake.body = "1234567890\n"
    provider = StreamTelecomProvider(stream_config(server), session)

    assert await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID) == CODE

    [request] = fake.requests
    assert request.method == "GET"
    assert request.path == "/get/"
    assert dict(request.query) == {
        "user": "apteka",
        "pwd": PASSWORD,
        "sadr": "SmartApt",
        "dadr": "79161234567",
        "text": f"Код подтверждения: {CODE}",
    }
    assert len(request.query) == 5
    # The Russian text travels as URL-encoded UTF-8.
    encoded_kod = "%D0%9A%D0%BE%D0%B4"  # "Код"
    assert f"text={encoded_kod}" in fake.raw_queries[0]
    assert fake.raw_queries[0].isascii()
    assert provider.last_error is None


async def test_stream_telecom_uses_the_configured_text(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession
) -> None:
    fake, server = gateway
    fake.body = "a1b2c3"
    cfg = stream_config(server, code_text="Аптека {x}: код {code}, никому не сообщайте")
    provider = StreamTelecomProvider(cfg, session)

    await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)

    assert fake.requests[0].query["text"] == f"Аптека {{x}}: код {CODE}, никому не сообщайте"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(500, "1234567890", id="server-error-with-id"),
        pytest.param(403, "", id="forbidden-empty"),
        pytest.param(200, "", id="empty"),
        pytest.param(200, "   \n", id="blank"),
        pytest.param(200, "ERROR", id="error-word"),
        pytest.param(200, "ERROR_12", id="error-token"),
        pytest.param(200, "Ошибка авторизации 3", id="text-with-spaces"),
        pytest.param(200, "<html><body>502 Bad Gateway</body></html>", id="html"),
    ],
)
async def test_stream_telecom_failures_are_unavailable(
    gateway: tuple[Gateway, TestServer],
    session: aiohttp.ClientSession,
    status: int,
    body: str,
) -> None:
    fake, server = gateway
    fake.status, fake.body = status, body
    provider = StreamTelecomProvider(stream_config(server), session)

    with pytest.raises(ProviderError) as caught:
        await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)

    assert caught.value.reason == "unavailable"
    assert f"HTTP {status}" in caught.value.detail
    if body.strip():
        assert body.strip() in caught.value.detail
    assert provider.last_error == caught.value.detail
    assert provider.last_error_reason == "unavailable"


async def test_stream_telecom_detail_is_truncated(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession
) -> None:
    fake, server = gateway
    fake.status, fake.body = 400, "x " * 5000
    provider = StreamTelecomProvider(stream_config(server), session)

    with pytest.raises(ProviderError) as caught:
        await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)

    assert len(caught.value.detail) < DETAIL_CHARS_MAX + 40


@pytest.mark.parametrize(
    "body", ["Недостаточно средств на счёте", "ERROR: insufficient balance", "Баланс: 0.00 RUR"]
)
async def test_stream_telecom_no_balance(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession, body: str
) -> None:
    fake, server = gateway
    fake.body = body
    provider = StreamTelecomProvider(stream_config(server), session)

    with pytest.raises(ProviderError) as caught:
        await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)

    assert caught.value.reason == "no_balance"
    assert provider.last_error_reason == "no_balance"


async def test_stream_telecom_success_clears_the_last_error(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession
) -> None:
    fake, server = gateway
    provider = StreamTelecomProvider(stream_config(server), session)
    fake.body = "Недостаточно средств"
    with pytest.raises(ProviderError):
        await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)
    assert provider.last_error_reason == "no_balance"

    fake.body = "987654"
    await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)

    assert provider.last_error is None
    assert provider.last_error_reason is None


async def test_stream_telecom_balance(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession
) -> None:
    fake, server = gateway
    fake.body = "100.01 RUR\n"
    provider = StreamTelecomProvider(stream_config(server), session)

    assert await provider.balance() == "100.01 RUR"

    [request] = fake.requests
    assert request.path == "/get/"
    assert dict(request.query) == {"user": "apteka", "pwd": PASSWORD, "balance": "1"}


async def test_stream_telecom_balance_failure(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession
) -> None:
    fake, server = gateway
    fake.status = 503
    provider = StreamTelecomProvider(stream_config(server), session)

    with pytest.raises(ProviderError) as caught:
        await provider.balance()
    assert caught.value.reason == "unavailable"


# --- SMS-profi flash call --------------------------------------------------------------------


async def test_smsprofi_call_sends_the_documented_request(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession
) -> None:
    fake, server = gateway
    fake.answer_json({"success": True, "result": {"id": 77123, "code": "0427"}})
    provider = SmsProfiCallProvider(smsprofi_config(server, "smsprofi_call"), session)

    # The code passed in is ignored: the customer gets the last 4 digits of the calling number.
    assert await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID) == "0427"

    [request] = fake.requests
    assert request.method == "POST"
    assert request.path == "/json/v1.0/callpassword/send"
    assert request.headers["X-Token"] == TOKEN
    assert request.headers["Content-Type"].startswith("application/json")
    assert json.loads(fake.bodies[0]) == {
        "recipient": "79161234567",
        "id": REQUEST_ID,
        "validate": False,
    }
    assert provider.channel == "call"
    assert provider.last_error is None


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        pytest.param(
            {"success": False, "error": {"code": 12, "descr": "Неверный номер получателя"}},
            "rejected",
            id="bad-recipient",
        ),
        pytest.param(
            {"success": False, "error": {"code": 7, "descr": "Недостаточно средств"}},
            "no_balance",
            id="no-funds",
        ),
        pytest.param(
            {"success": False, "error": {"code": 7, "descr": "Нулевой баланс"}},
            "no_balance",
            id="zero-balance",
        ),
        pytest.param(
            {"success": False, "error": {"code": 7, "descr": "Insufficient balance"}},
            "no_balance",
            id="no-balance-english",
        ),
        pytest.param({"success": True, "result": {"id": 1, "code": "12345"}}, "unavailable"),
        pytest.param({"success": True, "result": {"id": 1, "code": 1234}}, "unavailable"),
        pytest.param({"success": True, "result": {"id": 1}}, "unavailable", id="no-code"),
        pytest.param({"success": True}, "unavailable", id="no-result"),
        pytest.param({"ok": 1}, "unavailable", id="unknown-shape"),
        pytest.param([1, 2], "unavailable", id="not-an-object"),
    ],
)
async def test_smsprofi_call_failures(
    gateway: tuple[Gateway, TestServer],
    session: aiohttp.ClientSession,
    answer: Any,
    reason: str,
) -> None:
    fake, server = gateway
    fake.answer_json(answer)
    provider = SmsProfiCallProvider(smsprofi_config(server, "smsprofi_call"), session)

    with pytest.raises(ProviderError) as caught:
        await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)

    assert caught.value.reason == reason
    assert provider.last_error_reason == reason
    assert provider.last_error == caught.value.detail


async def test_smsprofi_call_error_keeps_code_and_descr(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession
) -> None:
    fake, server = gateway
    fake.answer_json(
        {"success": False, "error": {"code": 31, "descr": "Токен недействителен"}}, 401
    )
    provider = SmsProfiCallProvider(smsprofi_config(server, "smsprofi_call"), session)

    with pytest.raises(ProviderError) as caught:
        await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)

    assert caught.value.reason == "rejected"
    assert "HTTP 401" in caught.value.detail
    assert "31" in caught.value.detail
    assert "Токен недействителен" in caught.value.detail


@pytest.mark.parametrize(
    ("status", "body"),
    [(502, "<html>Bad Gateway</html>"), (200, ""), (200, "not json"), (500, "")],
)
async def test_smsprofi_call_non_json_answers_are_unavailable(
    gateway: tuple[Gateway, TestServer],
    session: aiohttp.ClientSession,
    status: int,
    body: str,
) -> None:
    fake, server = gateway
    fake.status, fake.body = status, body
    provider = SmsProfiCallProvider(smsprofi_config(server, "smsprofi_call"), session)

    with pytest.raises(ProviderError) as caught:
        await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)

    assert caught.value.reason == "unavailable"
    assert f"HTTP {status}" in caught.value.detail


async def test_smsprofi_call_uses_the_call_timeout(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession
) -> None:
    # The SMS timeout is short, the call timeout long: a 0.5 s answer must still arrive.
    fake, server = gateway
    fake.delay_s = 0.5
    fake.answer_json({"success": True, "result": {"id": 1, "code": "9999"}})
    cfg = smsprofi_config(server, "smsprofi_call", sms_timeout_s=0.1, call_timeout_s=5)
    provider = SmsProfiCallProvider(cfg, session)

    assert await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID) == "9999"


# --- SMS-profi SMS ---------------------------------------------------------------------------


async def test_smsprofi_sms_sends_the_documented_request(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession
) -> None:
    fake, server = gateway
    fake.answer_json({"success": True, "result": [{"id": 5}]})
    provider = SmsProfiSmsProvider(smsprofi_config(server, "smsprofi_sms"), session)

    assert await provider.send_code(PHONE10, CODE, "register", REQUEST_ID) == CODE

    [request] = fake.requests
    assert request.method == "POST"
    assert request.path == "/json/v1.0/sms/send/text"
    assert request.headers["X-Token"] == TOKEN
    assert json.loads(fake.bodies[0]) == {
        "messages": [
            {
                "recipient": "79161234567",
                "id": REQUEST_ID,
                "source": "StandardN",
                "text": f"Код подтверждения: {CODE}",
            }
        ]
    }


async def test_smsprofi_sms_no_balance(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession
) -> None:
    fake, server = gateway
    fake.answer_json({"success": False, "error": {"code": 3, "descr": "Недостаточно средств"}})
    provider = SmsProfiSmsProvider(smsprofi_config(server, "smsprofi_sms"), session)

    with pytest.raises(ProviderError) as caught:
        await provider.send_code(PHONE10, CODE, "register", REQUEST_ID)
    assert caught.value.reason == "no_balance"


# --- all HTTP gateways -----------------------------------------------------------------------


def http_provider(
    kind: str, server: TestServer, session: aiohttp.ClientSession, **overrides: Any
) -> MessageProvider:
    if kind == "stream_telecom":
        return make_provider(stream_config(server, **overrides), session)
    return make_provider(smsprofi_config(server, kind, **overrides), session)


HTTP_KINDS = ["stream_telecom", "smsprofi_call", "smsprofi_sms"]


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_slow_gateway_times_out(
    gateway: tuple[Gateway, TestServer], session: aiohttp.ClientSession, kind: str
) -> None:
    fake, server = gateway
    fake.delay_s = 30
    provider = http_provider(
        kind, server, session, sms_timeout_s=TIMEOUT_S, call_timeout_s=TIMEOUT_S
    )

    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)
    elapsed = time.monotonic() - started

    assert caught.value.reason == "unavailable"
    assert "timed out" in caught.value.detail
    assert elapsed < TIMEOUT_S + 1
    assert provider.last_error_reason == "unavailable"


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_unreachable_gateway_is_unavailable(
    unused_tcp_port: int, session: aiohttp.ClientSession, kind: str
) -> None:
    port = unused_tcp_port
    cfg = ProviderConfig.model_validate(
        {
            "kind": kind,
            "stream_telecom_url": f"http://127.0.0.1:{port}/get/",
            "smsprofi_url": f"http://127.0.0.1:{port}/json/v1.0",
            "stream_telecom_password": PASSWORD,
            "smsprofi_token": TOKEN,
        }
    )
    provider = make_provider(cfg, session)

    with pytest.raises(ProviderError) as caught:
        await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)

    assert caught.value.reason == "unavailable"
    assert PASSWORD not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("kind", "style"),
    [
        ("stream_telecom", "text"),
        ("smsprofi_sms", "text"),
        ("smsprofi_sms", "json_error"),
        ("smsprofi_call", "text"),
        ("smsprofi_call", "json_error"),
        ("smsprofi_call", "bad_code"),
    ],
)
async def test_secrets_and_codes_never_reach_logs(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    style: str,
) -> None:
    async def echo(request: web.Request) -> web.Response:
        # A careless gateway repeats the whole request, secrets and code first, in its error.
        token = request.headers.get("X-Token", "")
        query = request.raw_path.partition("?")[2]
        body = (await request.read()).decode("utf-8")
        text = f"ERROR {token} {query} code {CODE} {body}"
        if style == "json_error":
            return web.json_response({"success": False, "error": {"code": 1, "descr": text}})
        if style == "bad_code":
            # A code of a shape we do not accept must not be echoed either.
            return web.json_response({"success": True, "result": {"id": 1, "code": CODE}})
        return web.Response(status=400, text=text)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    server = await aiohttp_server(app)
    provider = http_provider(kind, server, session)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ProviderError) as caught:
        await provider.send_code(PHONE10, CODE, "redeem", REQUEST_ID)

    # The fake gateway's own access log is not ours to police.
    ours = "\n".join(
        record.getMessage() for record in caplog.records if record.name != "aiohttp.access"
    )
    assert "provider failed" in ours
    for secret in (PASSWORD, "p@ss+w0rd", "p%40ss", TOKEN, CODE):
        assert secret not in ours
        assert secret not in str(caught.value)
        assert secret not in (provider.last_error or "")


# --- factory and helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "cls", "channel"),
    [
        ("file", FileProvider, "sms"),
        ("stream_telecom", StreamTelecomProvider, "sms"),
        ("smsprofi_call", SmsProfiCallProvider, "call"),
        ("smsprofi_sms", SmsProfiSmsProvider, "sms"),
    ],
)
async def test_make_provider(
    session: aiohttp.ClientSession, kind: str, cls: type[MessageProvider], channel: str
) -> None:
    provider = make_provider(ProviderConfig.model_validate({"kind": kind}), session)

    assert type(provider) is cls
    assert provider.name == kind
    assert provider.channel == channel
    assert provider.last_error is None
    assert provider.last_error_reason is None


@pytest.mark.parametrize(
    "phone10", ["916123456", "89161234567", "916123456x", "９１６１２３４５６７"]
)
async def test_a_bad_phone_is_a_programming_error(tmp_path: Path, phone10: str) -> None:
    provider = FileProvider(ProviderConfig(kind="file", file_path=tmp_path / "m.jsonl"))

    with pytest.raises(ValueError, match="10 digits"):
        await provider.send_code(phone10, CODE, "redeem", REQUEST_ID)


def test_render_text() -> None:
    assert render_text("Код: {code}", "1234") == "Код: 1234"
    assert render_text("{code} — ваш код {code}", "1234") == "1234 — ваш код 1234"
    assert render_text("Ваш код", "1234") == "Ваш код 1234"
    assert render_text("Скидка {50%} код {code}", "1234") == "Скидка {50%} код 1234"


def test_docs_describe_every_provider_setting_and_kind() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "providers.md").read_text(encoding="utf-8")

    for name in ProviderConfig.model_fields:
        assert f"`{name}`" in docs, name
    for kind in ("file", "stream_telecom", "smsprofi_call", "smsprofi_sms"):
        assert f"`{kind}`" in docs, kind
    for code in ("provider_unavailable", "provider_no_balance"):
        assert code in docs, code
