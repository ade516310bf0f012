"""Stores keep selling while the central server is down; once it is up, the ledger agrees with
their journals to the kopeck."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from central import schema
from tests.e2e.system import System, invariants, ledger_balances, query
from tests.e2e.till import STALE_MESSAGE, kop

pytestmark = pytest.mark.slow


def local_total(balance: dict[str, Any]) -> int:
    """What a till's balance says the card holds in kopecks: unexpired remainders − debt."""
    expiring = sum(kop(item["amount"]) for item in balance["expiring"])
    return kop(balance["non_expiring"]) + expiring + kop(balance["pending"]) - kop(balance["debt"])


async def test_sales_during_an_outage_reach_the_ledger_exactly(system: System) -> None:
    await system.prepare(["s1", "s2"])
    system.agent("s1", sync_batch_ops_max="3")  # store 1 uploads in several batches
    await system.start_agents("s1", "s2")  # the central server is down
    s1, s2 = system.till("s1"), system.till("s2")

    a = await s1.register("9160000001")
    b = await s1.register("9160000002")
    c = await s2.register("9160000003")
    await s1.sold(a, "2000")  # +100.00
    await s1.sold(a, "999.99", vital=True)  # +9.99 (1 % of ЖНВЛП)
    sale_b = await s1.sold(b, "500")  # +25.00, returned below
    await s2.sold(c, "3000")  # +150.00
    sale_c = await s2.sold(c, "1234.56")  # +61.72, half returned below
    await s1.return_(sale_b["receipt_id"])
    await s2.return_(sale_c["receipt_id"], [{"line_id": "1", "qty": "0.5"}])

    # Never synced: no redemption, with the cashier's message; sales go on.
    status, refused = await s1.sale(a, "200", redeem="10")
    assert status == 409, refused
    assert refused["error"]["code"] == "redemption_stale_sync"
    assert refused["error"]["message"] == STALE_MESSAGE
    assert (await s1.status())["pending_ops"] > 0

    expected = {card: local_total(await till.balance(card)) for card, till in [(a, s1), (b, s1)]}
    expected[c] = local_total(await s2.balance(c))
    assert expected == {a: 10999, b: 0, c: 15000 + 6172 - 3086}

    await system.central.start()
    await system.settle("s1", "s2")

    central = await ledger_balances(system.database_url)
    assert central == expected
    # Each store's replica now shows every card as the ledger does, its own and the other's.
    for till in (s1, s2):
        for card, total in expected.items():
            assert local_total(await till.balance(card)) == total, (till.name, card)
    batches = await query(
        system.database_url,
        sa.select(schema.store_ops.c.store_id, sa.func.count(), sa.func.max(schema.store_ops.c.seq))
        .group_by(schema.store_ops.c.store_id)
        .order_by(schema.store_ops.c.store_id),
    )
    # Every operation once, in sequence: s1 registered 2 (+2 confirmations), sold 3, returned 1.
    assert [tuple(row) for row in batches] == [("s1", 8, 8), ("s2", 5, 5)]
    report = await invariants(system.database_url)
    assert report.ok, report.problems
    assert report.remainders_total_kop - report.debt_total_kop == sum(expected.values())
    await system.check_cli()
    # The stores may redeem again: their sync is fresh.
    for till in (s1, s2):
        status_body = await till.status()
        assert status_body["redemption_allowed"], status_body
        assert status_body["online"], status_body
