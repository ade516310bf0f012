"""Exactly-once upload at the API: duplicates (by op id, under any sequence number) answer their
original results, the acknowledgement covers exactly the batch, a gap says where to resume, a
reused sequence number is a conflict, and an operation that can never apply is recorded as
rejected without blocking the ones behind it."""

from __future__ import annotations

import asyncio
import itertools

import sqlalchemy as sa

from central import schema
from shared.protocol import PROTOCOL_HEADER
from tests.central.conftest import Central, StoreOps, count_of, register_store


async def test_a_duplicate_batch_returns_the_original_results(
    central: Central, s1: StoreOps
) -> None:
    batch = [s1.register("1000000001", "9160000001"), s1.sale("1000000001", accrued=5000)]
    status, first = await central.upload(*batch)
    assert status == 200, first
    assert first["acked_seq"] == 2
    assert [r["status"] for r in first["results"]] == ["applied", "applied"]
    transactions = await central.scalar(count_of(schema.transactions))

    status, again = await central.upload(*batch)
    assert status == 200, again
    assert again["results"] == first["results"]
    assert again["acked_seq"] == 2
    assert again["checkpoint"] >= first["checkpoint"]
    assert await central.scalar(count_of(schema.transactions)) == transactions
    assert await central.scalar(count_of(schema.store_ops)) == 2
    assert (await central.invariants()).ok


async def test_a_batch_overlapping_applied_operations_applies_only_the_new_ones(
    central: Central, s1: StoreOps
) -> None:
    ops = [
        s1.register("1000000001", "9160000001"),
        s1.sale("1000000001", accrued=5000),
        s1.sale("1000000001", accrued=700),
        s1.sale("1000000001", redeemed=1000),
    ]
    status, first = await central.upload(*ops[:2])
    assert status == 200, first
    status, second = await central.upload(*ops)
    assert status == 200, second
    assert second["acked_seq"] == 4
    assert [r["seq"] for r in second["results"]] == [1, 2, 3, 4]
    assert second["results"][:2] == first["results"]
    accruals = await central.scalar(
        count_of(schema.transactions, schema.transactions.c.kind == "accrual")
    )
    assert accruals == 2
    debt = await central.scalar(sa.select(schema.cards.c.debt_kop))
    assert debt == 0
    assert (await central.invariants()).ok


async def test_a_gap_is_refused_with_where_to_resume(central: Central, s1: StoreOps) -> None:
    status, _ = await central.upload(
        s1.register("1000000001", "9160000001"), s1.sale("1000000001", accrued=100)
    )
    assert status == 200
    s1.seq = itertools.count(5)
    status, body = await central.upload(s1.sale("1000000001", accrued=200))
    assert status == 422, body
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"] == {"reason": "sync_gap", "resume_from": 3}
    assert await central.scalar(count_of(schema.store_ops)) == 2
    last_applied = await central.scalar(sa.select(schema.stores.c.last_applied_seq))
    assert last_applied == 2
    # Resuming where told works.
    s1.seq = itertools.count(3)
    status, body = await central.upload(s1.sale("1000000001", accrued=200))
    assert status == 200, body
    assert body["acked_seq"] == 3


async def test_a_gap_inside_a_batch_is_refused(central: Central, s1: StoreOps) -> None:
    register = s1.register("1000000001", "9160000001")
    s1.seq = itertools.count(3)
    status, body = await central.upload(register, s1.sale("1000000001", accrued=100))
    assert status == 422, body
    assert await central.scalar(count_of(schema.store_ops)) == 0


async def test_a_reused_sequence_number_is_an_idempotency_conflict(
    central: Central, s1: StoreOps
) -> None:
    status, _ = await central.upload(
        s1.register("1000000001", "9160000001"), s1.sale("1000000001", accrued=100)
    )
    assert status == 200
    other = s1.sale("1000000001", accrued=999, receipt_id="ANOTHER")
    other["seq"] = 2
    other["op_id"] = "another-op"
    status, body = await central.upload(other)
    assert status == 409, body
    assert body["error"]["code"] == "idempotency_conflict"
    assert body["error"]["details"]["seq"] == 2
    # The store learns where the central server stands, to renumber after it.
    assert body["error"]["details"]["last_applied_seq"] == 2
    assert await central.scalar(count_of(schema.store_ops)) == 2
    assert (
        await central.scalar(count_of(schema.receipts, schema.receipts.c.receipt_id == "ANOTHER"))
        == 0
    )


async def test_operations_that_can_never_apply_are_rejected_and_the_rest_apply(
    central: Central, s1: StoreOps
) -> None:
    status, body = await central.upload(
        s1.register("1000000001", "9160000001"),
        s1.register("1000000002", "9160000002"),
    )
    assert status == 200, body
    await central.execute(
        schema.cards.update().where(schema.cards.c.number == "1000000002").values(status="blocked")
    )
    batch = [
        s1.sale("7777777777", accrued=100),  # a card the central server never heard of
        s1.sale("1000000001", accrued=5000, receipt_id="GOOD-1"),
        s1.sale("1000000002", accrued=300),  # blocked centrally
        s1.return_("1000000001", "NO-SUCH-RECEIPT"),
        s1.sale("1000000001", accrued=200, receipt_id="GOOD-2"),
        s1.return_("1000000001", "GOOD-1", reversed_kop=5000),
    ]
    status, result = await central.upload(*batch)
    assert status == 200, result
    assert result["acked_seq"] == 8
    outcome = {r["seq"]: (r["status"], r["reason"]) for r in result["results"]}
    assert outcome[3] == ("rejected", "card_unknown")
    assert outcome[4] == ("applied", None)
    assert outcome[5] == ("rejected", "card_blocked")
    assert outcome[6] == ("rejected", "receipt_unknown")
    assert outcome[7] == ("applied", None)
    assert outcome[8] == ("applied", None)
    # Rejections are recorded with their reasons, and a retry answers them the same.
    rejected = await central.rows(
        sa.select(schema.store_ops.c.seq, schema.store_ops.c.reason).where(
            schema.store_ops.c.status == "rejected"
        )
    )
    assert sorted(seq for seq, _ in rejected) == [3, 5, 6]
    status, again = await central.upload(*batch)
    assert again["results"] == result["results"]
    # Only the applied operations touched the ledger: GOOD-1 returned, GOOD-2 kept.
    lots = dict(
        await central.rows(
            sa.select(schema.lots.c.card, sa.func.sum(schema.lots.c.remaining_kop)).group_by(
                schema.lots.c.card
            )
        )
    )
    assert lots == {"1000000001": 200}
    assert await central.scalar(count_of(schema.cards, schema.cards.c.number == "7777777777")) == 0
    assert (await central.invariants()).ok


async def test_a_protocol_1_operation_whose_payload_names_another_card_is_refused(
    central: Central,
) -> None:
    # Protocol 1 named the card twice (the operation and its payload); version 2 once.
    register = {
        "seq": 1,
        "op_id": "s1-op-1",
        "kind": "register",
        "card": "1000000001",
        "created_at": "2026-05-01T10:00:00+03:00",
        "payload": {
            "card": "1000000009",
            "phone": "9160000001",
            "virtual": True,
            "profile": None,
            "consents": {"personal_data": True, "advertising": False},
            "effect": {},
        },
    }
    status, body = await central.upload(register, **{PROTOCOL_HEADER: "1"})
    assert status == 422, body
    assert body["error"]["details"]["reason"] == "payload card differs"


async def test_the_checkpoint_covers_the_batch(central: Central, s1: StoreOps) -> None:
    status, body = await central.upload(
        s1.register("1000000001", "9160000001"), s1.sale("1000000001", accrued=100)
    )
    assert status == 200, body
    status, page = await central.get("/sync/v1/changes", cursor="0")
    assert status == 200, page
    assert page["next_cursor"] >= body["checkpoint"]
    state = {card["number"]: card for card in page["cards"]}["1000000001"]
    assert state["cursor"] <= body["checkpoint"]
    assert [lot["remaining"] for lot in state["lots"]] == [100]


async def test_the_version_and_the_token_are_checked(central: Central, s1: StoreOps) -> None:
    op = s1.register("1000000001", "9160000001")
    status, body = await central.upload(op, **{"X-Bonus-Protocol": "99"})
    assert status == 426, body
    assert body["error"]["code"] == "protocol_version"
    assert body["error"]["details"]["protocol_min"] == 1
    assert body["error"]["details"]["protocol_max"] == 2
    status, body = await central.upload(op, Authorization="Bearer wrong")
    assert status == 401, body
    assert body["error"]["code"] == "unauthorized"
    assert await central.scalar(count_of(schema.store_ops)) == 0


async def test_one_phone_registered_by_two_stores_at_once_has_one_primary(
    central: Central, s1: StoreOps
) -> None:
    """Two stores upload a registration of the same phone at the same moment (a race between
    two write transactions on PostgreSQL): exactly one card stays the primary."""
    token2 = await register_store_on(central, "s2")
    s2 = StoreOps("s2")
    phone = "9161231212"
    batches = []
    for store, card in ((s1, "1000000001"), (s2, "2000000001")):
        # Many operations after the registration keep each transaction open a while.
        ops = [store.register(card, phone)]
        ops += [store.sale(card, accrued=100) for _ in range(150)]
        batches.append(ops)
    results = await asyncio.gather(
        central.upload(*batches[0]),
        central.upload(*batches[1], **{"X-Store-Id": "s2", "Authorization": f"Bearer {token2}"}),
    )
    for status, body in results:
        assert status == 200, body
    cards = await central.rows(
        sa.select(schema.cards.c.number, schema.cards.c.status, schema.cards.c.merged_into).where(
            schema.cards.c.phone == phone
        )
    )
    active = [row for row in cards if row.status == "active"]
    assert len(active) == 1, cards
    merged = [row for row in cards if row.status == "merged"]
    assert [row.merged_into for row in merged] == [active[0].number]
    balances = dict(
        await central.rows(
            sa.select(schema.lots.c.card, sa.func.sum(schema.lots.c.remaining_kop)).group_by(
                schema.lots.c.card
            )
        )
    )
    assert balances == {active[0].number: 300 * 100}
    assert (await central.invariants()).ok


async def register_store_on(central: Central, store_id: str) -> str:
    """Another store on the same central database; its token."""
    return await register_store(central.url, store_id)


async def test_a_second_sale_under_a_recorded_receipt_id_is_rejected_not_stuck(
    central: Central, s1: StoreOps
) -> None:
    status, body = await central.upload(
        s1.register("1000000001", "9160000001"),
        s1.sale("1000000001", accrued=100, receipt_id="R-1"),
    )
    assert status == 200, body
    status, body = await central.upload(
        s1.sale("1000000001", accrued=500, receipt_id="R-1"), s1.sale("1000000001", accrued=7)
    )
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == ["rejected", "applied"]
    assert body["results"][0]["reason"] == "receipt_reused"
    assert (await central.invariants()).ok


async def test_the_acknowledgement_never_goes_beyond_the_batch(
    central: Central, s1: StoreOps
) -> None:
    """A store restored from a backup sends seq 1 again while the central server holds 1..3: the
    answer acknowledges 1, not 3, or the store would take its own new 2 and 3 for synced."""
    ops = [
        s1.register("1000000001", "9160000001"),
        s1.sale("1000000001", accrued=100),
        s1.sale("1000000001", accrued=200),
    ]
    status, body = await central.upload(*ops)
    assert status == 200, body
    assert body["acked_seq"] == 3
    status, body = await central.upload(ops[0])
    assert status == 200, body
    assert body["acked_seq"] == 1
    assert [(r["seq"], r["status"]) for r in body["results"]] == [(1, "applied")]
    status, body = await central.upload(*ops[:2])
    assert status == 200, body
    assert body["acked_seq"] == 2
    assert await central.scalar(sa.select(schema.stores.c.last_applied_seq)) == 3


async def test_an_operation_applied_under_another_number_is_a_duplicate(
    central: Central, s1: StoreOps
) -> None:
    """A restored store renumbers its unsent operations after what the central server holds;
    one of them the central server had already applied under its old number: it answers that
    operation's original result and applies it only once."""
    register, sale = s1.register("1000000001", "9160000001"), s1.sale("1000000001", accrued=5000)
    status, first = await central.upload(register, sale)
    assert status == 200, first
    renumbered = {**sale, "seq": 3}
    new_sale = {**s1.sale("1000000001", accrued=700), "seq": 4}
    status, body = await central.upload(renumbered, new_sale)
    assert status == 200, body
    assert body["acked_seq"] == 4
    original = first["results"][1]
    assert body["results"][0] == {**original, "seq": 3}
    assert body["results"][1]["status"] == "applied"
    assert body["results"][1]["op_id"] == new_sale["op_id"]
    # The retry of that batch (its answer lost) is a duplicate through and through.
    status, again = await central.upload(renumbered, new_sale)
    assert status == 200, again
    assert again["results"] == body["results"]
    accruals = await central.rows(
        sa.select(schema.transactions.c.receipt_id, sa.func.count())
        .where(schema.transactions.c.kind == "accrual")
        .group_by(schema.transactions.c.receipt_id)
    )
    assert sorted(accruals) == [("s1-R1", 1), ("s1-R2", 1)]
    # One record per operation, under the number it was first applied with.
    recorded = await central.rows(
        sa.select(schema.store_ops.c.seq, schema.store_ops.c.op_id).order_by(schema.store_ops.c.seq)
    )
    assert recorded == [(1, register["op_id"]), (2, sale["op_id"]), (4, new_sale["op_id"])]
    assert await central.scalar(sa.select(schema.stores.c.last_applied_seq)) == 4
    lots = await central.scalar(sa.select(sa.func.sum(schema.lots.c.remaining_kop)))
    assert lots == 5700
    assert (await central.invariants()).ok


async def test_a_batch_of_duplicates_under_new_numbers_moves_the_store_on(
    central: Central, s1: StoreOps
) -> None:
    register, sale = s1.register("1000000001", "9160000001"), s1.sale("1000000001", accrued=100)
    status, _ = await central.upload(register, sale)
    assert status == 200
    status, body = await central.upload({**register, "seq": 3}, {**sale, "seq": 4})
    assert status == 200, body
    assert body["acked_seq"] == 4
    # The next batch starts after the duplicates' numbers, not at a gap.
    status, body = await central.upload({**s1.sale("1000000001", accrued=50), "seq": 5})
    assert status == 200, body
    assert body["acked_seq"] == 5
    assert await central.scalar(count_of(schema.store_ops)) == 3
    assert (await central.invariants()).ok


async def test_an_operation_id_of_another_store_is_a_conflict(
    central: Central, s1: StoreOps
) -> None:
    op = s1.register("1000000001", "9160000001")
    status, _ = await central.upload(op)
    assert status == 200
    token2 = await register_store_on(central, "s2")
    copied = {**StoreOps("s2").register("2000000001", "9160000002"), "op_id": op["op_id"]}
    status, body = await central.upload(
        copied, **{"X-Store-Id": "s2", "Authorization": f"Bearer {token2}"}
    )
    assert status == 409, body
    assert body["error"]["code"] == "idempotency_conflict"
    assert await central.scalar(count_of(schema.store_ops)) == 1


async def test_an_operation_id_twice_in_a_batch_is_refused(central: Central, s1: StoreOps) -> None:
    register = s1.register("1000000001", "9160000001")
    sale = {**s1.sale("1000000001", accrued=100), "op_id": register["op_id"]}
    status, body = await central.upload(register, sale)
    assert status == 422, body
    assert await central.scalar(count_of(schema.store_ops)) == 0
