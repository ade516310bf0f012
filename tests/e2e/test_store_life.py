"""A store over its life, with real processes: the chain's IT disables it (its till is told why
and redeems nothing, its sales wait at the store), enables it again (they sync), then closes it
(it uploads everything, records nothing new, and is closed for good)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.e2e.system import System
from tests.e2e.till import Till

pytestmark = pytest.mark.slow

PHONE = "9165550077"
WAIT_S = 30.0


async def _state_is(till: Till, state: str) -> dict[str, Any]:
    """Wait until the store's status shows ``state`` (the agent learns it at its next round)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        status = await till.status()
        if status["store_state"] == state:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the store never became {state}: {status}")
        await asyncio.sleep(0.2)


async def _central_says(system: System, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        done = await system.central.cli("store", "list")
        assert done.returncode == 0, done.stderr
        (row,) = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        if row["state"] == state:
            return dict(row)
        if time.monotonic() > deadline:
            raise AssertionError(f"the central server never made the store {state}: {row}")
        await asyncio.sleep(0.2)


async def test_a_store_disabled_enabled_and_closed(system: System) -> None:
    await system.prepare(["s1"])
    await system.central.start()
    await system.start_agents("s1")
    till = system.till("s1")
    card = await till.register(PHONE)
    await till.sold(card, "2000")  # +100.00
    await system.settle("s1")

    done = await system.central.cli("store", "disable", "s1", "--reason", "ремонт")
    assert done.returncode == 0, done.stderr
    status = await _state_is(till, "disabled")
    assert status["redemption_allowed"] is False
    assert status["redemption_refusal"]["code"] == "store_disabled"
    status_code, refused = await till.sale(card, "500", redeem="10", phone=PHONE)
    assert (status_code, refused["error"]["code"]) == (403, "store_disabled")
    assert "отключена" in refused["error"]["message"]
    kept = await till.sold(card, "1000")  # without redemption: recorded, waits at the store
    assert kept["accrued"] == 50

    done = await system.central.cli("store", "enable", "s1")
    assert done.returncode == 0, done.stderr
    await _state_is(till, "active")
    await system.settle("s1")  # the sale made while disabled reaches the ledger
    assert (await till.balance(card))["available"] == 150
    assert (await till.status())["redemption_allowed"] is True

    done = await system.central.cli("store", "close", "s1")
    assert done.returncode == 0, done.stderr
    await _state_is(till, "closing")
    status_code, refused = await till.sale(card, "500")
    assert (status_code, refused["error"]["code"]) == (403, "store_closed")
    assert (await till.found(card=card))["card"]["number"] == card  # lookups still answer
    row = await _central_says(system, "closed")
    assert row["backlog"] == 0
    await _state_is(till, "closed")
    await system.check_cli()
