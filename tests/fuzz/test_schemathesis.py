"""API fuzzing with schemathesis against running servers: the till API of a store agent
(``/pos/v1/openapi.json``) and the office API of the central server (``/admin/v1/openapi.json``).

The central server (on SQLite and on PostgreSQL) and the agent run as real processes on
loopback; the schemathesis CLI runs as a third process against them and must exit 0: no 5xx,
every status code, content type, header and body as the document declares, requests that break
the document refused, required headers and the office's authentication enforced, ``Allow`` on
every 405.  Afterwards the store uploads whatever the fuzzer recorded, and the ledger's
invariants must still hold (``bonus-central check``).

The chain is seeded first (customers, sales, a return, all synced), and schemathesis draws half
of the card numbers, phones and receipt ids it sends from what was seeded, so that generated
requests also reach the business rules instead of stopping at "card not found".

``BONUS_FUZZ_EXAMPLES`` sets the test cases per operation and phase (20 by default: about a
minute per API and database); ``BONUS_FUZZ_SEED`` replays a run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from central.staff import Permission
from tests.e2e.system import System, campaign

EXAMPLES = int(os.environ.get("BONUS_FUZZ_EXAMPLES", "20"))
SEED = int(os.environ.get("BONUS_FUZZ_SEED", str(random.randrange(2**32))))
#: Longest schemathesis run; about 1.5 s per example at most on a slow machine.
RUN_TIMEOUT_S = 120 + 15 * EXAMPLES
STORE = "s1"
CUSTOMERS = 6
LOGIN = "fuzz"
PASSWORD = "fuzz-password-1"
CAMPAIGN = "fuzz-campaign"

#: Everything schemathesis can check that the documents promise.  Left out:
#: ``positive_data_acceptance`` (a request valid by the document must succeed) — the documents
#: cannot say that a card number needs its Luhn digit, that a phone must be a mobile number or
#: that a lookup takes exactly one of phone and card, so schema-valid requests are rightly
#: refused with a 422; the checks that follow links between operations (``use_after_free``,
#: ``ensure_resource_availability``), which the documents do not declare; and
#: ``object_level_authorization``, which needs a second identity.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT_S + 120)]


def schemathesis_exe() -> str:
    """The schemathesis CLI of this environment (the ``test`` extra installs it)."""
    beside = Path(sys.executable).parent / "schemathesis"
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    assert found, "schemathesis is not installed: pip install -e '.[test]'"
    return found


@dataclass(frozen=True)
class Seeded:
    """What the chain holds before fuzzing."""

    cards: list[str]
    phones: list[str]
    receipts: list[str]
    verifications: list[str]
    holds: list[str]
    campaigns: list[str]


@dataclass
class Chain:
    """A central server and one store agent, running and seeded."""

    system: System
    seeded: Seeded
    work_dir: Path


@pytest.fixture
async def chain(tmp_path: Path, central_db_url: str) -> AsyncIterator[Chain]:
    system = System(tmp_path, central_db_url)
    try:
        await system.prepare([STORE])
        await system.central.start()
        started = datetime.now(UTC)
        await system.start_agents(STORE)
        # The first round adopts the chain's phone key; registrations come after it.
        await system.wait_synced(STORE, since=started)
        till = system.till(STORE)
        cards, phones, receipts = [], [], []
        for index in range(CUSTOMERS):
            phone = f"916{index:07d}"
            cards.append(await till.register(phone))
            phones.append(phone)
            sale = await till.sold(cards[-1], f"{1000 + 37 * index}.50")
            receipts.append(str(sale["receipt_id"]))
        await till.return_(receipts[0], [{"line_id": "1", "qty": "0.5"}])
        await campaign(system.database_url, CAMPAIGN, 100_00)
        await system.settle(STORE)
        # A confirmed redemption code with a hold under it, and a code never confirmed.
        confirmed = await till.redemption_code(cards[1], phones[1])
        hold = await till.ok(
            "POST",
            "/pos/v1/holds",
            {
                "hold_id": "fuzz-hold",
                "card": cards[1],
                "amount": "10",
                "ttl_s": 3600,
                "verification_id": confirmed,
            },
        )
        pending = await till.ok(
            "POST", "/pos/v1/verifications", {"card": cards[2], "purpose": "redemption"}
        )
        seeded = Seeded(
            cards,
            phones,
            receipts,
            verifications=[confirmed, str(pending["verification_id"])],
            holds=[str(hold["hold_id"])],
            campaigns=[CAMPAIGN],
        )
        yield Chain(system, seeded, tmp_path)
    finally:
        # Shown by pytest only when the test fails (or with -s).
        print(system.logs())
        await system.close()


def write_config(path: Path, dictionaries: dict[str, list[str]], bindings: dict[str, str]) -> Path:
    """A schemathesis.toml drawing these parameters from these dictionaries half of the time."""
    lines = []
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for parameter, name in bindings.items():
        lines.append(f'"{parameter}" = {{ dictionary = "{name}", probability = 0.5 }}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def run_schemathesis(
    work_dir: Path, config: Path, schema_url: str, *options: str
) -> subprocess.CompletedProcess[str]:
    """``schemathesis run`` against a running server; prints what it found and its summary."""
    argv = [
        schemathesis_exe(),
        "--config-file",
        str(config),
        "run",
        schema_url,
        "--max-examples",
        str(EXAMPLES),
        "--checks",
        ",".join(CHECKS),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-color",
        *options,
    ]
    print(f"fuzzing {schema_url}: {EXAMPLES} examples per operation, seed {SEED}")
    done = await asyncio.to_thread(
        subprocess.run,
        argv,
        cwd=work_dir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    print(done.stdout[done.stdout.find("=====") :] if done.returncode == 0 else done.stdout)
    print(done.stderr)
    return done


async def test_the_till_api_keeps_its_contract(chain: Chain) -> None:
    system, seeded = chain.system, chain.seeded
    config = write_config(
        chain.work_dir / "till-fuzz.toml",
        {
            "cards": seeded.cards,
            "phones": seeded.phones,
            "receipts": seeded.receipts,
            "verifications": seeded.verifications,
            "holds": seeded.holds,
        },
        {
            "path.card": "cards",
            "body.card": "cards",
            "body.phone": "phones",
            "body.receipt_id": "receipts",
            "path.verification_id": "verifications",
            "body.verification_id": "verifications",
            "path.hold_id": "holds",
            "body.hold_id": "holds",
        },
    )
    agent = system.agents[STORE]
    done = await run_schemathesis(
        chain.work_dir,
        config,
        agent.url + "/pos/v1/openapi.json",
        "--header",
        "X-Register-Id: till-1",
    )
    assert done.returncode == 0, f"schemathesis found problems (seed {SEED}), see above"
    assert agent.running, agent.log_tail()
    # Whatever the fuzzer recorded reaches the central ledger and keeps it consistent.
    await system.wait_acked(STORE)
    await system.check_cli()


async def staff_account(system: System) -> str:
    """An office account with every permission, logged in: its session token."""
    central = system.central
    argv = [sys.executable, "-m", "central.cli", "staff", "add", LOGIN, "--name", "Fuzz"]
    argv += ["--permissions", ",".join(p.value for p in Permission), "--password-stdin"]
    done = await asyncio.to_thread(
        subprocess.run,
        argv,
        cwd=central.work_dir,
        env=central.env(),
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    async with system.session.post(
        central.url + "/admin/v1/session", json={"login": LOGIN, "password": PASSWORD}
    ) as response:
        assert response.status == 201, await response.text()
        return str((await response.json())["token"])


async def test_the_office_api_keeps_its_contract(chain: Chain) -> None:
    system, seeded = chain.system, chain.seeded
    token = await staff_account(system)
    config = write_config(
        chain.work_dir / "office-fuzz.toml",
        {
            "cards": seeded.cards,
            "receipts": seeded.receipts,
            "stores": [STORE],
            "campaigns": seeded.campaigns,
        },
        {
            "path.campaign_id": "campaigns",
            "path.number": "cards",
            "query.query": "cards",
            "body.selection.cards[*]": "cards",
            "path.store_id": "stores",
            "path.receipt_id": "receipts",
        },
    )
    done = await run_schemathesis(
        chain.work_dir,
        config,
        system.central.url + "/admin/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        # Logging out would end the session every other request of the run uses.
        "--exclude-operation-id",
        "logout",
    )
    assert done.returncode == 0, f"schemathesis found problems (seed {SEED}), see above"
    assert system.central.running, system.central.log_tail()
    await system.wait_acked(STORE)
    await system.check_cli()
