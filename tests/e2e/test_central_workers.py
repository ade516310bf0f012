"""Several central server processes on one port and one PostgreSQL database (``workers``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import NewDatabase
from tests.e2e.processes import CentralProcess
from tests.e2e.system import System, invariants, ledger_balances

pytestmark = pytest.mark.slow


def _workers(pid: int) -> list[int]:
    """The worker processes of a supervisor (not multiprocessing's resource tracker)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children.extend(int(c) for c in (task / "children").read_text().split())
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive: it only waits for its parent to read its exit code.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_two_workers_serve_two_stores_and_stop_together(
    tmp_path: Path, pg_cluster: NewDatabase
) -> None:
    chain = System(tmp_path, pg_cluster())
    chain.central = CentralProcess(tmp_path / "central", chain.database_url, {"workers": "2"})
    try:
        await chain.prepare(["s1", "s2"])
        await chain.central.start()
        assert chain.central.pid is not None
        workers = _workers(chain.central.pid)
        assert len(workers) == 2, workers
        await chain.start_agents("s1", "s2")
        s1, s2 = chain.till("s1"), chain.till("s2")
        card = await s1.register("9165550077")
        await chain.settle("s1", "s2")  # store 2 knows the card
        for _ in range(10):
            await s1.sold(card, "200")
            await s2.sold(card, "100")
        await chain.settle("s1", "s2")
        # 10 × (5 % of 200 + 5 % of 100) = 150.00, whichever worker applied which batch.
        assert await ledger_balances(chain.database_url) == {card: 15_000}
        for till in (s1, s2):
            assert (await till.balance(card))["available"] == 150
        report = await invariants(chain.database_url)
        assert report.ok, report.problems
        assert await chain.central.stop() == 0
        assert not [pid for pid in workers if _alive(pid)]
    finally:
        await chain.close()


async def test_workers_need_postgresql(tmp_path: Path) -> None:
    central = CentralProcess(
        tmp_path / "central", f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}", {"workers": "2"}
    )
    answer = await central.cli("serve")
    assert answer.returncode == 2
    assert "workers > 1 needs PostgreSQL" in answer.stderr
