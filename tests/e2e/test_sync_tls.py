"""Sync over HTTPS served by the central server itself, checked against the chain's CA
(``central_ca_file``): it works with the right certificate, and with a certificate of another CA
or for another host name the store does not sync and says why."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.conftest import NewDatabase
from tests.e2e.processes import CentralProcess
from tests.e2e.system import System, ledger_balances

pytestmark = pytest.mark.slow

#: Longest wait for a store to report its failed attempt (its first round comes at once).
REPORT_WAIT_S = 30.0


def serve_tls(central: CentralProcess, ca: trustme.CA, work: Path, *hosts: str) -> None:
    """Give the central server a certificate of ``ca`` for ``hosts``; it serves HTTPS."""
    cert = ca.issue_cert(*hosts)
    chain, key = work / "central-chain.pem", work / "central-key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    central.settings.update(tls_cert_file=str(chain), tls_key_file=str(key))
    central.scheme = "https"
    # The test itself asks for readiness by address, whoever signed the certificate.
    central.client_ssl = False


def ca_file(ca: trustme.CA, path: Path) -> Path:
    """The CA certificate as a store's installer puts it (``central_ca_file``)."""
    ca.cert_pem.write_to_path(str(path))
    return path


def sqlite_system(tmp_path: Path) -> System:
    return System(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite3'}")


async def test_tls_sync_with_the_chains_ca(tmp_path: Path) -> None:
    system = sqlite_system(tmp_path)
    ca = trustme.CA()
    try:
        await system.prepare(["s1"])
        serve_tls(system.central, ca, tmp_path, "127.0.0.1", "localhost")
        await system.central.start()
        assert system.central.url.startswith("https://")
        system.agent("s1", central_ca_file=str(ca_file(ca, tmp_path / "chain-ca.pem")))
        await system.start_agents("s1")
        till = system.till("s1")
        card = await till.register("9161112233")
        await till.sold(card, "1000")  # +50.00
        await system.settle("s1")
        assert await ledger_balances(system.database_url) == {card: 5000}
        status = await till.status()
        assert status["online"], status
        assert status["last_central_error"] is None, status
    except BaseException:
        print(system.logs())
        raise
    finally:
        await system.close()


async def _wait_for_error(system: System, store_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + REPORT_WAIT_S
    while True:
        status = await system.till(store_id).status()
        if status["last_central_error"]:
            return status
        assert time.monotonic() < deadline, f"no error reported: {status}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("another_ca", "unable to get local issuer certificate"),
        ("another_host", "mismatch, certificate is not valid for '127.0.0.1'"),
    ],
)
async def test_tls_a_certificate_the_store_cannot_trust_is_refused(
    tmp_path: Path, case: str, expected: str
) -> None:
    system = sqlite_system(tmp_path)
    chain_ca = trustme.CA()
    try:
        await system.prepare(["s1"])
        if case == "another_ca":
            serve_tls(system.central, trustme.CA(), tmp_path, "127.0.0.1")
        else:
            serve_tls(system.central, chain_ca, tmp_path, "bonus.example.ru")
        await system.central.start()
        agent = system.agent("s1", central_ca_file=str(ca_file(chain_ca, tmp_path / "ca.pem")))
        await system.start_agents("s1")
        till = system.till("s1")
        await till.register("9161112244")
        status = await _wait_for_error(system, "s1")

        # Nothing reached the central server, and the store says so, and why.
        assert not status["online"], status
        assert status["last_sync_at"] is None, status
        assert status["pending_ops"] > 0, status
        assert "TLS certificate refused: " in status["last_central_error"], status
        assert expected in status["last_central_error"], status
        assert await ledger_balances(system.database_url) == {}
        shown = await agent.cli("status")
        assert "central server:     unreachable" in shown.stdout, shown.stdout
        assert "TLS certificate refused" in shown.stdout, shown.stdout
        assert "last complete sync: never" in shown.stdout, shown.stdout
        logged = agent.log_path.read_text(encoding="utf-8")
        failed = (
            "sync round failed (attempt 1): central server unreachable: TLS certificate refused:"
        )
        [line] = [line for line in logged.splitlines() if failed in line]
        assert expected in line, logged
        assert "Traceback" not in logged, logged
    except BaseException:
        print(system.logs())
        raise
    finally:
        await system.close()


async def test_tls_workers_serve_https_on_one_port(tmp_path: Path, pg_cluster: NewDatabase) -> None:
    system = System(tmp_path, pg_cluster())
    system.central = CentralProcess(tmp_path / "central", system.database_url, {"workers": "2"})
    ca = trustme.CA()
    try:
        await system.prepare(["s1"])
        serve_tls(system.central, ca, tmp_path, "127.0.0.1")
        # The supervisor reports ready only once its workers answer over HTTPS.
        await system.central.start()
        system.agent("s1", central_ca_file=str(ca_file(ca, tmp_path / "ca.pem")))
        await system.start_agents("s1")
        till = system.till("s1")
        card = await till.register("9161112255")
        await till.sold(card, "2000")  # +100.00
        await system.settle("s1")
        assert await ledger_balances(system.database_url) == {card: 10_000}
        assert await system.central.stop() == 0
    except BaseException:
        print(system.logs())
        raise
    finally:
        await system.close()
