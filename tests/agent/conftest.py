"""Fixtures for the till API tests: an agent on a fake clock, and helpers that act like a till.

Every helper goes through HTTP, as a till would; the only direct calls into the agent are the
ones that stand for the outside world: ``record_sync`` (what the sync loop calls at a write
checkpoint) and the program settings (what the central server sends with the sync).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.app import create_app
from agent.clock import FakeClock
from agent.config import AgentConfig, ProviderConfig
from agent.routes import CTX_KEY
from tests.phonekeys import write_key_file

REGISTER_ID = "till-1"
#: A phone as a cashier types it, and its normalised 10 digits.
PHONE = "+7 (916) 123-45-67"
PHONE10 = "9161234567"
#: The till API's error shape.
ERROR_KEYS = {"code", "message", "details"}

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def line(
    line_id: str = "1",
    amount: Any = "2000",
    *,
    vital: bool = False,
    qty: Any = 1,
    sku: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A receipt line; the price is the amount (one item) unless given."""
    return {
        "line_id": line_id,
        "sku": sku or f"SKU-{line_id}",
        "name": f"Товар {line_id}",
        "qty": qty,
        "price": extra.pop("price", amount),
        "amount": amount,
        "vital": vital,
        **extra,
    }


def assert_error(status: int, body: Any, code: str, http_status: int | None = None) -> None:
    """An answer in the error shape with this code (and this status, when given)."""
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert 400 <= status < 500, (status, body)
    if http_status is not None:
        assert status == http_status, (status, body)


@dataclass
class Agent:
    """A running agent and a till talking to it."""

    app: web.Application
    client: TestClient[Any, Any]
    clock: FakeClock
    messages_path: Path
    register_id: str = REGISTER_ID
    _receipts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    #: When the last code for (card, purpose) was asked, by the monotonic clock.
    _last_code_s: dict[tuple[str, str], float] = field(default_factory=dict)

    # --- HTTP -----------------------------------------------------------------------------

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"X-Register-Id": self.register_id, **(extra or {})}

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        register_id: str | None = None,
    ) -> tuple[int, Any]:
        """Send a request as the till; the answer's status and JSON body."""
        sent = self.headers(headers)
        if register_id is not None:
            sent["X-Register-Id"] = register_id
        if data is None and body is not None:
            data = json.dumps(body, ensure_ascii=False)
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        response = await self.client.request(method, path, data=data, headers=sent)
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("POST", path, body, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kwargs)

    # --- the outside world ----------------------------------------------------------------

    async def make_fresh(self) -> None:
        """A complete sync just happened (the sync loop's call at a write checkpoint)."""
        await self.app[CTX_KEY].record_sync(self.clock.now())

    def set_settings(self, **changes: Any) -> None:
        """Program settings as the central server would send them with a sync."""
        ctx = self.app[CTX_KEY]
        ctx.settings = ctx.settings.model_copy(update=changes)

    def messages(self) -> list[dict[str, Any]]:
        """Every message the file provider has sent."""
        if not self.messages_path.exists():
            return []
        text = self.messages_path.read_text(encoding="utf-8")
        return [json.loads(row) for row in text.splitlines() if row.strip()]

    def code_of(self, verification_id: str) -> str:
        """The code sent for a verification, as the customer reads it from the SMS."""
        sent = [m for m in self.messages() if m["request_id"] == verification_id]
        assert len(sent) == 1, sent
        return str(sent[0]["code"])

    # --- what a till does -----------------------------------------------------------------

    async def register(
        self, phone: str = PHONE, *, card: str | None = None, confirm: bool = True
    ) -> dict[str, Any]:
        """Register a customer (and confirm the code); the registration's answer."""
        body: dict[str, Any] = {"phone": phone, "consents": {"personal_data": True}}
        if card is not None:
            body["card"] = card
        status, answer = await self.post("/pos/v1/customers", body)
        assert status in (200, 201), answer
        verification = answer["verification"]
        if verification is not None:
            self._last_code_s[(answer["card"]["number"], "registration")] = self.clock.mono_s
            if confirm:
                await self.confirm(verification["verification_id"])
        return dict(answer)

    async def new_card(self, phone: str = PHONE) -> str:
        """A registered, confirmed card's number."""
        answer = await self.register(phone)
        return str(answer["card"]["number"])

    async def confirm(self, verification_id: str, code: str | None = None) -> tuple[int, Any]:
        return await self.post(
            f"/pos/v1/verifications/{verification_id}/confirm",
            {"code": code if code is not None else self.code_of(verification_id)},
        )

    async def ask_code(
        self, card: str, purpose: str = "redemption", phone: str = PHONE, **extra: Any
    ) -> tuple[int, Any]:
        """Ask for a code, without waiting for the resend limit."""
        status, answer = await self.post(
            "/pos/v1/verifications", {"card": card, "purpose": purpose, "phone": phone, **extra}
        )
        if status == 201:
            self._last_code_s[(card, purpose)] = self.clock.mono_s
        return status, answer

    async def redemption_code(self, card: str, phone: str = PHONE) -> str:
        """A confirmed redemption verification's id (waits out the resend limit if needed)."""
        resend_after_s = self.app[CTX_KEY].settings.verification_resend_after_s
        last = self._last_code_s.get((card, "redemption"))
        if last is not None and self.clock.mono_s - last < resend_after_s:
            self.clock.advance(resend_after_s - (self.clock.mono_s - last) + 1)
        status, answer = await self.ask_code(card, "redemption", phone)
        assert status == 201, answer
        verification_id = str(answer["verification_id"])
        status, confirmed = await self.confirm(verification_id)
        assert status == 200, confirmed
        assert confirmed == {"verification_id": verification_id, "confirmed": True}
        return verification_id

    def receipt_id(self) -> str:
        return f"R-{next(self._receipts):05d}"

    async def sale(
        self,
        card: str,
        lines: list[dict[str, Any]] | None = None,
        *,
        redeem: Any = 0,
        receipt_id: str | None = None,
        **extra: Any,
    ) -> tuple[int, Any]:
        body: dict[str, Any] = {
            "receipt_id": receipt_id or self.receipt_id(),
            "card": card,
            "lines": lines if lines is not None else [line()],
            "redeem": redeem,
            **extra,
        }
        return await self.post("/pos/v1/receipts", body)

    async def credit(self, card: str, points: Any) -> None:
        """Credit points by sales without redemption (5 % of a non-vital line)."""
        amount = Decimal(str(points)) * 20
        assert amount == amount.quantize(Decimal("0.01")), "points must be a multiple of 0.05"
        status, answer = await self.sale(card, [line("1", str(amount))])
        assert status == 200, answer
        assert Decimal(str(answer["accrued"])) == Decimal(str(points)), answer

    async def balance(self, card: str) -> dict[str, Any]:
        status, answer = await self.post("/pos/v1/cards/lookup", {"card": card})
        assert status == 200, answer
        return dict(answer["balance"])

    async def available(self, card: str) -> Decimal:
        return Decimal(str((await self.balance(card))["available"]))


def make_config(tmp_path: Path, **overrides: Any) -> AgentConfig:
    """The tests' configuration: a database, a phone key file (a key of no chain, unless given)
    and a file provider in the test's directory."""
    if "phone_key_file" not in overrides:
        overrides["phone_key_file"] = tmp_path / "phone-key"
        if not overrides["phone_key_file"].exists():
            write_key_file(overrides["phone_key_file"])
    return AgentConfig(
        data_dir=tmp_path,
        provider=ProviderConfig(kind="file", file_path=tmp_path / "messages.jsonl"),
        **overrides,
    )


AgentFactory = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def make_agent(tmp_path: Path, aiohttp_client: ClientFactory) -> AgentFactory:
    """Start an agent with extra configuration (till tokens, limits)."""

    async def start(clock: FakeClock | None = None, **overrides: Any) -> Agent:
        config = make_config(tmp_path, **overrides)
        clock = clock or FakeClock()
        app = create_app(config, clock=clock)
        client = await aiohttp_client(app)
        return Agent(app, client, clock, config.provider.file_path)

    return start


@pytest.fixture
async def agent(make_agent: AgentFactory) -> Agent:
    """An agent with the default configuration on a fake clock, never synced."""
    return await make_agent()


@pytest.fixture
async def card(agent: Agent) -> str:
    """A registered and confirmed card with no points."""
    return await agent.new_card()


@pytest.fixture
async def funded_card(agent: Agent, card: str) -> str:
    """A card with 100 points, on an agent that has just synced."""
    await agent.credit(card, 100)
    await agent.make_fresh()
    return card
