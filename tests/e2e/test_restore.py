"""Restores with real processes: a store's database restored from a backup (by ``bonus-agent
restore`` or by copying the file), and the central database restored from a backup (a copy of
the SQLite file, or ``pg_dump``/``pg_restore``).  Whatever was sold before, between and after,
the central server ends with every sale exactly once, the tills show its balances, and the
ledger's invariants hold.

A restored store's journal numbers new operations under sequence numbers the central server
already holds for other operations; before the fix the central server acknowledged past the
batch (``acked_seq = last_applied``) and the store took its new sales for synced, or it refused
them as reused numbers (409) forever.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from central import schema
from tests.e2e.system import (
    System,
    backup_central,
    campaign,
    invariants,
    ledger_balances,
    query,
    restore_central,
)
from tests.e2e.till import Till, kop

pytestmark = pytest.mark.slow


class Sales:
    """The sales the cards get at the stores' tills, and what each accrued."""

    def __init__(self, card: str) -> None:
        self.card = card
        #: receipt id → (store, card, accrued kopecks)
        self.receipts: dict[str, tuple[str, str, int]] = {}

    async def sell(self, till: Till, store_id: str, amount: str, card: str | None = None) -> None:
        number = card or self.card
        answer = await till.sold(number, amount)
        self.receipts[str(answer["receipt_id"])] = (store_id, number, kop(answer["accrued"]))

    def accrued_kop(self, card: str | None = None) -> int:
        number = card or self.card
        return sum(accrued for _, on, accrued in self.receipts.values() if on == number)

    def balances(self) -> dict[str, int]:
        return {card: self.accrued_kop(card) for _, card, _ in self.receipts.values()}


async def central_receipts(system: System) -> list[tuple[str, str, int]]:
    """(store, receipt, accrual transactions) of every receipt the central server holds."""
    accruals = (
        sa.select(schema.transactions.c.receipt_id, sa.func.count().label("n"))
        .where(schema.transactions.c.kind == "accrual")
        .group_by(schema.transactions.c.receipt_id)
        .subquery()
    )
    rows = await query(
        system.database_url,
        sa.select(
            schema.receipts.c.store_id,
            schema.receipts.c.receipt_id,
            sa.func.coalesce(accruals.c.n, 0),
        ).select_from(
            schema.receipts.outerjoin(
                accruals, accruals.c.receipt_id == schema.receipts.c.receipt_id
            )
        ),
    )
    return sorted((row[0], row[1], int(row[2])) for row in rows)


async def assert_everything_once(system: System, sales: Sales, *tills: Till) -> None:
    """Every sale at the central server once, each card's balance the sum of its sales, the
    tills showing it, the invariants holding (checked in the test and by ``bonus-central
    check``)."""
    expected = sorted((store, receipt, 1) for receipt, (store, _, _) in sales.receipts.items())
    assert await central_receipts(system) == expected
    ops = await query(
        system.database_url,
        sa.select(schema.store_ops.c.op_id, schema.store_ops.c.status),
    )
    assert {status for _, status in ops} == {"applied"}, ops
    assert await ledger_balances(system.database_url) == sales.balances()
    for till in tills:
        for card, balance_kop in sales.balances().items():
            assert kop((await till.balance(card))["available"]) == balance_kop, till.name
        assert (await till.status())["pending_ops"] == 0
    report = await invariants(system.database_url)
    assert report.ok, report.problems
    await system.check_cli()


@pytest.mark.parametrize("how", ["restore_command", "file_copy"])
async def test_a_store_restored_from_a_backup_loses_and_hides_nothing(
    system: System, tmp_path: Path, how: str
) -> None:
    await system.prepare(["s1"])
    await system.central.start()
    agent = system.agent("s1")
    await system.start_agents("s1")
    till = system.till("s1")
    sales = Sales(await till.register("9161110000"))

    # Before the backup: a sale that syncs, and one recorded while the central server is away,
    # still unsent when the backup is taken (with the agent serving).
    await sales.sell(till, "s1", "1000")
    await system.wait_acked("s1")
    await system.central.stop()
    await sales.sell(till, "s1", "2000")
    backup = tmp_path / "agent-backup.sqlite3"
    done = await agent.cli("backup", str(backup))
    assert done.returncode == 0, done.stderr
    assert "acknowledged by the central server up to seq" in done.stdout
    assert not backup.with_name(backup.name + "-wal").exists()
    await system.central.start()

    # After the backup: sales that sync, then lost with the store's disk.
    await sales.sell(till, "s1", "3000")
    await sales.sell(till, "s1", "4000")
    await system.wait_acked("s1")

    if how == "restore_command":
        refused = await agent.cli("restore", str(backup))
        assert refused.returncode == 1, refused.stdout
        assert "stop it first" in refused.stderr
        await agent.stop()
        done = await agent.cli("restore", str(backup))
        assert done.returncode == 0, done.stderr
        assert (agent.db_path.parent / "agent.sqlite3.before-restore").exists()
        # The central server holds more than the restored journal ever numbered: the greeting
        # shows it, whether the first sale comes before or after the first round.
        started = datetime.now(UTC)
        await agent.start()
        await sales.sell(till, "s1", "500")
        await system.wait_synced("s1", since=started)
        assert "this journal only up to seq" in agent.log_tail(200)
    else:
        await agent.stop()
        for side in ("-wal", "-shm"):
            agent.db_path.with_name(agent.db_path.name + side).unlink(missing_ok=True)
        shutil.copyfile(backup, agent.db_path)
        # More sales before the first round than the lost period had: their numbers reach past
        # the ones the central server holds, and the first upload meets a reused number (409).
        await system.central.stop()
        await agent.start()
        for amount in ("500", "600", "700"):
            await sales.sell(till, "s1", amount)
        started = datetime.now(UTC)
        await system.central.start()
        await system.wait_synced("s1", since=started)
        assert "as another operation" in agent.log_tail(200)
    assert "renumbered" in agent.log_tail(200)

    # After a round: new operations number after everything the central server holds.
    await sales.sell(till, "s1", "800")
    await sales.sell(till, "s1", "900")
    await system.wait_synced("s1", since=datetime.now(UTC))
    await assert_everything_once(system, sales, till)


async def test_a_central_server_restored_from_a_backup_gets_everything_again(
    system: System, tmp_path: Path
) -> None:
    await system.prepare(["s1", "s2"])
    await system.central.start()
    await system.start_agents("s1", "s2")
    s1, s2 = system.till("s1"), system.till("s2")
    sales = Sales(await s1.register("9161110000"))
    await sales.sell(s1, "s1", "1000")
    await system.settle("s1", "s2")
    await sales.sell(s2, "s2", "2000")
    await system.settle("s1", "s2")

    await system.central.stop()
    backup = tmp_path / "central-backup"
    await backup_central(system.database_url, backup)
    await system.central.start()

    # After the backup: sales the stores' journals keep, and a campaign only the central
    # server knew, lost with the restore.
    await sales.sell(s1, "s1", "3000")
    await sales.sell(s2, "s2", "4000")
    await campaign(system.database_url, "lost-with-the-restore", 10_000)
    await system.settle("s1", "s2")
    assert kop((await s1.balance(sales.card))["available"]) == sales.accrued_kop() + 10_000

    await system.central.stop()
    await restore_central(system.database_url, backup)
    started = datetime.now(UTC)
    await system.central.start()
    # The stores send again what the central server lost, without a new sale to push them, and
    # load its snapshot again (their feed cursors are past its restored one).
    await system.wait_synced("s1", "s2", since=started)
    assert len(await central_receipts(system)) == 4
    for store_id in ("s1", "s2"):
        log = system.agents[store_id].log_tail(200)
        assert "restored from an older backup" in log, log
        assert "loading its snapshot again" in log, log
    # Once each store has pulled after the other's resend, both tills show the central balance:
    # the four sales, without the lost campaign (the resent sales' changes carry cursors the
    # stores had passed before the restore; only the snapshot brings them).
    await system.wait_synced("s1", "s2", since=datetime.now(UTC))
    for till in (s1, s2):
        assert kop((await till.balance(sales.card))["available"]) == sales.accrued_kop(), till.name

    # After the restore: sales at both stores reach both tills through the feed.
    await sales.sell(s1, "s1", "500")
    await sales.sell(s2, "s2", "600")
    await system.settle("s1", "s2")
    await assert_everything_once(system, sales, s1, s2)


# About the agent alone: one central database is enough.
@pytest.mark.parametrize("central_db_url", ["sqlite"], indirect=True)
async def test_a_store_machine_replaced_by_a_new_one_numbers_after_the_old_one(
    system: System,
) -> None:
    await system.prepare(["s1"])
    await system.central.start()
    agent = system.agent("s1")
    await system.start_agents("s1")
    till = system.till("s1")
    sales = Sales(await till.register("9161110000"))
    await sales.sell(till, "s1", "1000")
    await sales.sell(till, "s1", "2000")
    await system.wait_acked("s1")

    # A new machine: the same store and token, an empty disk; its first customer comes before
    # it could reach the central server.
    await agent.stop()
    shutil.rmtree(agent.data_dir)
    await system.central.stop()
    await agent.start()
    newcomer = await till.register("9162220000")
    await sales.sell(till, "s1", "500", card=newcomer)
    started = datetime.now(UTC)
    await system.central.start()
    await system.wait_synced("s1", since=started)
    assert "renumbered" in agent.log_tail(200)

    # The old card came with the snapshot; new operations number after the old machine's.
    await sales.sell(till, "s1", "800")
    await sales.sell(till, "s1", "900", card=newcomer)
    await system.wait_synced("s1", since=datetime.now(UTC))
    await assert_everything_once(system, sales, till)
