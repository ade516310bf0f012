"""A tiny till: the requests a cash register sends to its store agent, over real HTTP.

It reads confirmation codes from the agent's file provider, as a customer reads an SMS.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

#: The message a cashier sees when a redemption is refused for a stale sync.
STALE_MESSAGE = "Списание бонусов невозможно по техническим причинам"
SYNC_WAIT_S = 40.0


def money(value: Any) -> Decimal:
    """An amount from an answer (a JSON number of roubles) as an exact decimal."""
    return Decimal(str(value))


def kop(value: Any) -> int:
    """An amount from an answer in kopecks."""
    return int(money(value) * 100)


def line(amount: str, line_id: str = "1", *, vital: bool = False) -> dict[str, Any]:
    """One receipt line of one item."""
    return {
        "line_id": line_id,
        "sku": f"SKU-{line_id}",
        "name": f"Товар {line_id}",
        "qty": 1,
        "price": amount,
        "amount": amount,
        "vital": vital,
    }


class Till:
    """One register at one store."""

    _ids = itertools.count(1)

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        messages_path: Path,
        *,
        name: str,
        register_id: str = "till-1",
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.messages_path = messages_path
        self.name = name
        self.register_id = register_id

    def new_id(self, prefix: str) -> str:
        """A receipt or return id unique in the test run."""
        return f"{prefix}-{self.name}-{next(self._ids)}"

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The answer's status and JSON body."""
        async with self.session.request(
            method,
            self.base_url + path,
            json=body,
            headers={"X-Register-Id": self.register_id},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as response:
            return response.status, await response.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """An answer that must succeed."""
        status, answer = await self.request(method, path, body)
        assert 200 <= status < 300, (self.name, path, status, answer)
        return dict(answer)

    async def status(self) -> dict[str, Any]:
        """``GET /pos/v1/status``."""
        return await self.ok("GET", "/pos/v1/status")

    def code_of(self, verification_id: str) -> str:
        """The code the provider sent for a verification."""
        for row in self.messages_path.read_text(encoding="utf-8").splitlines():
            message = json.loads(row)
            if message["request_id"] == verification_id:
                return str(message["code"])
        raise AssertionError(f"no message for {verification_id}")

    async def confirm(self, verification_id: str) -> None:
        """The customer reads out the code."""
        await self.ok(
            "POST",
            f"/pos/v1/verifications/{verification_id}/confirm",
            {"code": self.code_of(verification_id)},
        )

    async def register(self, phone: str) -> str:
        """Register a customer (confirming the code when asked); the card number."""
        answer = await self.ok(
            "POST", "/pos/v1/customers", {"phone": phone, "consents": {"personal_data": True}}
        )
        if answer["verification"] is not None:
            await self.confirm(answer["verification"]["verification_id"])
        return str(answer["card"]["number"])

    async def lookup(self, *, phone: str | None = None, card: str | None = None) -> tuple[int, Any]:
        """Find a card by phone or number."""
        body = {"phone": phone} if phone is not None else {"card": card}
        return await self.request("POST", "/pos/v1/cards/lookup", body)

    async def found(self, *, phone: str | None = None, card: str | None = None) -> dict[str, Any]:
        """A lookup that must find the card."""
        status, answer = await self.lookup(phone=phone, card=card)
        assert status == 200, (self.name, status, answer)
        return dict(answer)

    async def balance(self, card: str) -> dict[str, Any]:
        """The card's balance as the till shows it."""
        return dict((await self.found(card=card))["balance"])

    async def sale(
        self,
        card: str,
        amount: str,
        *,
        redeem: str = "0",
        phone: str | None = None,
        receipt_id: str | None = None,
        vital: bool = False,
    ) -> tuple[int, Any]:
        """Sell one line; a redemption asks the customer for a code when the program wants one."""
        body: dict[str, Any] = {
            "receipt_id": receipt_id or self.new_id("R"),
            "card": card,
            "lines": [line(amount, vital=vital)],
            "redeem": redeem,
        }
        if Decimal(redeem) > 0 and phone is not None:
            calc = await self.ok(
                "POST", "/pos/v1/receipts/calculate", {"card": card, "lines": body["lines"]}
            )
            if calc["verification_required"]:
                body["verification_id"] = await self.redemption_code(card, phone)
        return await self.request("POST", "/pos/v1/receipts", body)

    async def sold(self, card: str, amount: str, **kwargs: Any) -> dict[str, Any]:
        """A sale that must succeed."""
        status, answer = await self.sale(card, amount, **kwargs)
        assert status == 200, (self.name, status, answer)
        return dict(answer)

    async def redemption_code(self, card: str, phone: str) -> str:
        """A confirmed redemption verification."""
        created = await self.ok(
            "POST", "/pos/v1/verifications", {"card": card, "purpose": "redemption", "phone": phone}
        )
        verification_id = str(created["verification_id"])
        await self.confirm(verification_id)
        return verification_id

    async def return_(
        self, receipt_id: str, lines: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Return a receipt (all of it without lines)."""
        body: dict[str, Any] = {"return_id": self.new_id("RET"), "receipt_id": receipt_id}
        if lines is not None:
            body["lines"] = lines
        return await self.ok("POST", "/pos/v1/returns", body)

    async def wait_acked(self, timeout_s: float = SYNC_WAIT_S) -> dict[str, Any]:
        """Wait until the central server has acknowledged every operation of this store."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.status()
            if status["pending_ops"] == 0:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still has operations to upload: {status}")
            await asyncio.sleep(0.1)

    async def wait_synced(self, since: datetime, timeout_s: float = SYNC_WAIT_S) -> dict[str, Any]:
        """Wait until nothing is pending and a complete sync happened after ``since``."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.status()
            last = status["last_sync_at"]
            if (
                status["pending_ops"] == 0
                and last is not None
                and datetime.fromisoformat(last) > since
            ):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not sync since {since}: {status}")
            await asyncio.sleep(0.1)
