"""No log line of either service holds a customer's phone number, whatever the flow
(registration, lookups found and not, codes, a sale, the upload and the other store's lookup),
even at DEBUG; and with ``log_json`` every line of both is one JSON object."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.processes import ServerProcess
from tests.e2e.system import System

pytestmark = pytest.mark.slow

#: The customers' numbers, as a cashier might type them; none may reach a log.
PHONE = "9167350284"
OTHER = "9032718465"
UNKNOWN = "9257604913"
ALL_DIGITS = [PHONE, OTHER, UNKNOWN]
#: What separates digits in a written number: spaces, dashes, brackets, a plus.
SEPARATORS = re.compile(r"[\s\-()+.]")


def _leaks(process: ServerProcess) -> list[str]:
    found = []
    for line in process.log_path.read_text(encoding="utf-8").splitlines():
        squeezed = SEPARATORS.sub("", line)
        # The whole number, or its subscriber part (the last four digits alone are shown at tills).
        if any(phone in squeezed or phone[3:] in squeezed for phone in ALL_DIGITS):
            found.append(line)
    return found


def _not_json(process: ServerProcess) -> list[str]:
    bad = []
    for line in process.log_path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append(line)
            continue
        if not {"time", "level", "logger", "message"} <= set(record):
            bad.append(line)
    return bad


async def test_no_phone_reaches_a_log_and_every_line_is_json(tmp_path: Path) -> None:
    system = System(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite3'}")
    system.central.settings.update(log_level="DEBUG", log_json="true")
    try:
        await system.prepare(["s1", "s2"])
        await system.central.start()
        for store_id in ("s1", "s2"):
            system.agent(store_id, log_level="DEBUG", log_json="true")
        await system.start_agents("s1", "s2")
        s1, s2 = system.till("s1"), system.till("s2")

        card = await s1.register("+7 (916) 735-02-84")
        other = await s1.register("8 903 271 84 65")
        assert (await s1.found(phone=PHONE))["card"]["number"] == card
        status, _ = await s1.lookup(phone=UNKNOWN)
        assert status == 404
        status, _ = await s1.lookup(phone="+7 916 735-02")  # too short: refused
        assert status == 422
        status, answer = await s1.request(
            "POST", "/pos/v1/customers", {"phone": OTHER, "consents": {"personal_data": True}}
        )
        assert (status, answer["created"]) == (200, False), answer  # registered already
        await s1.sold(card, "2000")
        await system.settle("s1", "s2")
        await s1.sold(card, "200", redeem="10", phone=PHONE)  # a code to the customer's phone
        assert (await s2.found(phone=PHONE))["card"]["number"] == card
        assert (await s2.found(phone=OTHER))["card"]["number"] == other
        await system.settle("s1", "s2")

        for process in [system.central, *system.agents.values()]:
            assert not _leaks(process), (process.name, _leaks(process))
            assert not _not_json(process), (process.name, _not_json(process)[:5])
    except BaseException:
        print(system.logs())
        raise
    finally:
        await system.close()
