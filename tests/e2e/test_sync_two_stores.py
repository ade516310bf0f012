"""One customer at two stores: offline overspending becomes debt, and one phone registered at
both stores while they were offline becomes one client."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from central import schema
from tests.e2e.system import System, invariants, ledger_balances, query
from tests.e2e.till import kop, line

pytestmark = pytest.mark.slow

PHONE = "9165550011"


async def test_offline_overspend_at_two_stores_becomes_debt(system: System) -> None:
    await system.prepare(["s1", "s2"])
    await system.start_agents("s1", "s2")
    s1, s2 = system.till("s1"), system.till("s2")
    card = await s1.register(PHONE)
    await s1.sold(card, "2000")  # +100.00
    await system.central.start()
    await system.settle("s1", "s2")
    assert (await s2.found(phone=PHONE))["balance"]["available"] == 100

    await system.central.stop()
    # Both stores are fresh and offline: each lets the customer spend the whole balance.
    # (Online authorisation across stores would refuse the second; it is not tested here.)
    for till in (s1, s2):
        sold = await till.sold(card, "200", redeem="100", phone=PHONE)
        assert sold["redeemed"] == 100
        assert sold["accrued"] == 5  # 5 % of the 100.00 paid with money

    await system.central.start()
    await system.settle("s1", "s2")

    # Store 1's and store 2's sales: 100 + 5 + 5 − 200 redeemed; the overspend is debt.
    rows = await query(
        system.database_url, sa.select(schema.cards.c.debt_kop).where(schema.cards.c.number == card)
    )
    assert rows == [(9000,)]
    debts = await query(
        system.database_url,
        sa.select(schema.store_ops.c.store_id, schema.store_ops.c.debt_added_kop).where(
            schema.store_ops.c.kind == "sale", schema.store_ops.c.debt_added_kop > 0
        ),
    )
    # The later of the two redemptions found only the earlier one's 5.00 accrual left.
    assert [debt for _, debt in debts] == [9500]
    assert await ledger_balances(system.database_url) == {card: -9000}
    report = await invariants(system.database_url)
    assert report.ok, report.problems
    assert report.debt_total_kop == 9000
    for till in (s1, s2):
        balance = await till.balance(card)
        assert balance["debt"] == 90, (till.name, balance)
        assert balance["available"] == 0
        calculated = await till.ok(
            "POST",
            "/pos/v1/receipts/calculate",
            {"card": card, "lines": [line("200")], "redeem": "1"},
        )
        assert calculated["max_redeem"] == 0
        assert calculated["redeem"] == 0
    # A later accrual pays the debt first (centrally, store 2's own accrual already paid 5.00
    # of it: 9500 → 9000).
    paid = await s2.sold(card, "400")  # +20.00
    assert paid["balance"]["debt"] == 70


async def test_a_phone_registered_at_two_offline_stores_is_merged(system: System) -> None:
    await system.prepare(["s1", "s2"])
    await system.start_agents("s1", "s2")  # the central server is down
    s1, s2 = system.till("s1"), system.till("s2")
    first = await s1.register(PHONE)
    second = await s2.register(PHONE)
    assert first != second
    await s1.sold(first, "2000")  # +100.00
    sold_on_second = await s2.sold(second, "1000")  # +50.00
    await s2.sold(second, "600")  # +30.00

    # Store 1's registration reaches the central server first: its card is the primary.
    await system.agents["s2"].stop()
    await system.central.start()
    await system.wait_acked("s1")
    await system.agents["s2"].start()
    await s2.return_(sold_on_second["receipt_id"])  # −50.00, a return on the merged card
    await system.settle("s1", "s2")

    cards = {
        row.number: row
        for row in await query(
            system.database_url,
            sa.select(schema.cards).where(schema.cards.c.number.in_([first, second])),
        )
    }
    assert cards[first].status == "active"
    assert cards[first].merged_into is None
    assert cards[second].status == "merged"
    assert cards[second].merged_into == first
    # One client: the personal data stays with the primary card.
    clients = await query(system.database_url, sa.select(schema.clients.c.card))
    assert clients == [(first,)]
    # Points earned on the merged card went to the primary.
    assert await ledger_balances(system.database_url) == {first: 10000 + 3000, second: 0}
    accrual_cards = await query(
        system.database_url,
        sa.select(schema.transactions.c.card)
        .where(schema.transactions.c.kind == "accrual")
        .distinct(),
    )
    assert accrual_cards == [(first,)]
    report = await invariants(system.database_url)
    assert report.ok, report.problems

    for till in (s1, s2):
        by_phone = await till.found(phone=PHONE)
        assert by_phone["card"]["number"] == first, till.name
        assert kop(by_phone["balance"]["available"]) == 13000, till.name
        by_number = await till.found(card=second)
        assert by_number["card"]["number"] == first, till.name
    # Registering the phone again at either store returns the primary.
    for till in (s1, s2):
        assert await till.register(PHONE) == first
