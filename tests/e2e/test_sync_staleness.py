"""Redemption needs a fresh complete sync: an outage longer than the limit stops redemption (and
nothing else), and neither a moved wall clock nor a reboot makes stale data fresh.

The agent runs in the test process on a fake clock, against a real central server process.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.e2e.conftest import LocalAgent, LocalAgentFactory
from tests.e2e.system import System, invariants, ledger_balances
from tests.e2e.till import STALE_MESSAGE, kop

pytestmark = pytest.mark.slow

PHONE = "9163334455"


async def assert_refused_as_stale(agent: LocalAgent, card: str) -> None:
    """A redemption is refused with the cashier's message; the lookup says so too."""
    status, refused = await agent.till.sale(card, "200", redeem="10")
    assert status == 409, refused
    assert refused["error"]["code"] == "redemption_stale_sync"
    assert refused["error"]["message"] == STALE_MESSAGE
    found = await agent.till.found(card=card)
    assert found["redemption_allowed"] is False
    assert found["redemption_refusal"]["message"] == STALE_MESSAGE


async def test_an_outage_beyond_the_limit_stops_redemption_only(
    system: System, local_agent: LocalAgentFactory
) -> None:
    await system.prepare(["s1"])
    # The office lowers the limit to its minimum; the store learns it with the next sync.
    done = await system.central.cli("settings", "set", "sync_staleness_max_s=60")
    assert done.returncode == 0, done.stderr
    await system.central.start()
    agent = await local_agent("s1")
    till = agent.till
    card = await till.register(PHONE)
    first = await till.sold(card, "2000")  # +100.00
    await agent.syncer.round()
    status = await till.status()
    assert status["settings_version"] == 2
    assert status["redemption_allowed"]
    assert status["pending_ops"] == 0

    await system.central.stop()
    agent.clock.advance(59)
    # Within the limit the store redeems offline (the code goes by the store's own provider).
    assert (await till.sold(card, "200", redeem="10", phone=PHONE))["redeemed"] == 10

    agent.clock.advance(2)
    await assert_refused_as_stale(agent, card)  # after a quick round that could not reach it
    status = await till.status()
    assert status["online"] is False
    assert status["redemption_allowed"] is False
    assert status["redemption_refusal"]["code"] == "redemption_stale_sync"
    assert status["sync_age_s"] == pytest.approx(61, abs=0.5)
    agent.clock.advance(3600)
    await assert_refused_as_stale(agent, card)
    # Sales, accruals and returns go on.
    later = await till.sold(card, "1000")  # +50.00
    assert later["accrued"] == 50
    returned = await till.return_(first["receipt_id"], [{"line_id": "1", "qty": "0.5"}])
    assert returned["accrual_reversed"] == 50
    assert (await till.status())["pending_ops"] == 3

    await system.central.start()
    await agent.syncer.round()
    status = await till.status()
    assert status["redemption_allowed"], status
    assert status["pending_ops"] == 0
    assert status["sync_age_s"] == 0
    assert (await till.sold(card, "200", redeem="20", phone=PHONE))["redeemed"] == 20
    await agent.syncer.round()

    balance = await till.balance(card)
    # 100 − 10 + 9.50 + 50 − 50 − 20 + 9 = 88.50
    assert balance["available"] == pytest.approx(88.5)
    assert await ledger_balances(system.database_url) == {card: kop(balance["available"])}
    report = await invariants(system.database_url)
    assert report.ok, report.problems


async def test_moving_the_clock_or_rebooting_does_not_make_stale_data_fresh(
    system: System, local_agent: LocalAgentFactory
) -> None:
    await system.prepare(["s1"])
    await system.central.start()
    # One round at start, then none for an hour: only the test's rounds count.
    agent = await local_agent("s1", sync_interval_s=3600)
    clock, ctx, till = agent.clock, agent.ctx, agent.till
    card = await till.register(PHONE)
    await till.sold(card, "2000")
    await agent.syncer.round()
    synced_wall = clock.now()
    await system.central.stop()  # no round can refresh anything from here on

    # Fresh data stays fresh, and its age does not move, whichever way the wall clock jumps.
    for jump in (timedelta(hours=5), timedelta(hours=-5), timedelta(days=-3)):
        clock.set_wall(synced_wall + jump)
        assert ctx.sync_age_s() == 0
        assert (await till.status())["redemption_allowed"]

    clock.set_wall(synced_wall)
    clock.advance(3601)
    await assert_refused_as_stale(agent, card)
    for jump in (timedelta(hours=-1), timedelta(hours=-5), timedelta(hours=3), timedelta(days=2)):
        clock.set_wall(synced_wall + timedelta(seconds=3601) + jump)
        status = await till.status()
        assert status["sync_age_s"] == pytest.approx(3601), jump
        assert status["redemption_allowed"] is False, jump
        await assert_refused_as_stale(agent, card)

    # Hours pass (the agent keeps recording the wall clock's high-water mark), the machine
    # reboots, and its clock comes back set to ten minutes after the last sync: still stale.
    clock.set_wall(synced_wall)
    clock.advance(5 * 3600)
    await ctx.record_high_water()
    clock.reboot("boot-2")
    clock.set_wall(synced_wall + timedelta(minutes=10))
    status = await till.status()
    assert status["sync_age_s"] is None
    assert status["redemption_allowed"] is False
    await assert_refused_as_stale(agent, card)

    # A complete sync is the only thing that makes it fresh again.
    await system.central.start()
    await agent.syncer.round()
    status = await till.status()
    assert status["redemption_allowed"], status
    assert status["sync_age_s"] == 0
