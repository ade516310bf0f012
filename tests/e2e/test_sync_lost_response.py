"""The central server commits a batch and its answer is lost: the store's retry is a duplicate,
and the ledger holds every operation once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from central import schema
from tests.e2e.proxy import Proxy, serve_proxy
from tests.e2e.system import System, invariants, ledger_balances, query

pytestmark = pytest.mark.slow


async def test_a_lost_upload_answer_is_retried_as_a_duplicate(system: System) -> None:
    await system.prepare(["s1"])
    await system.central.start()
    proxy = Proxy(system.central.url, drop_uploads=1)
    async with serve_proxy(proxy):
        agent = system.agent("s1", central_url=proxy.url)
        started = datetime.now(UTC)
        await system.start_agents("s1")
        s1 = system.till("s1")
        await system.wait_synced("s1", since=started)  # the first round: nothing to upload
        assert proxy.uploads == 0

        card = await s1.register("9161110000")
        receipts = [(await s1.sold(card, amount))["receipt_id"] for amount in ("1000", "2345.67")]
        await s1.return_(receipts[1], [{"line_id": "1", "qty": "0.5"}])
        await system.wait_acked("s1")
        assert proxy.dropped == 1
        assert proxy.uploads >= 2, "the store uploaded again after the lost answer"
        assert "ServerDisconnected" in agent.log_tail() or "disconnected" in agent.log_tail()

        ops = await query(
            system.database_url,
            sa.select(schema.store_ops.c.seq, schema.store_ops.c.op_id, schema.store_ops.c.status),
        )
        seqs = sorted(row.seq for row in ops)
        # register, verify, two sales, one return: each once, all applied.
        assert seqs == [1, 2, 3, 4, 5]
        assert len({row.op_id for row in ops}) == 5
        assert {row.status for row in ops} == {"applied"}
        accruals = await query(
            system.database_url,
            sa.select(schema.transactions.c.receipt_id, sa.func.count())
            .where(schema.transactions.c.kind == "accrual")
            .group_by(schema.transactions.c.receipt_id),
        )
        assert sorted(accruals) == sorted((receipt, 1) for receipt in receipts)
        reversals = await query(
            system.database_url,
            sa.select(sa.func.count())
            .select_from(schema.transactions)
            .where(schema.transactions.c.kind == "accrual_reversal"),
        )
        assert reversals == [(1,)]
        report = await invariants(system.database_url)
        assert report.ok, report.problems
        # 50.00 + 117.28 − 58.64 (half of the second receipt returned).
        assert (await ledger_balances(system.database_url)) == {card: 5000 + 11728 - 5864}
        assert (await s1.balance(card))["available"] == pytest.approx(108.64)
