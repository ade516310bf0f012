"""Putting a restored journal right: renumbering its unsent operations with every reference to
their numbers, and checking an upload's answer against the batch sent."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import store
from agent.db import connect, migrate
from agent.sync import Renumbered, SyncError, check_upload_answer
from shared.journal import Verification
from shared.protocol import Op, OpResult, UploadResponse

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def journal(path: Path, operations: int) -> sqlite3.Connection:
    """A migrated database with this many sales, each with its receipt and a hold."""
    conn = connect(path)
    migrate(conn)
    for index in range(1, operations + 1):
        seq = store.append_entry(
            conn,
            op_id=f"op-{index}",
            idem_key=f"R-{index}",
            request_hash="-",
            operation=Verification(card="1000000001"),
            response={},
            created_at=NOW,
        )
        store.insert_receipt(
            conn, store.ReceiptRow(f"R-{index}", "1000000001", seq, [], [], None, {}, 0)
        )
        store.insert_hold(
            conn,
            store.HoldRow(
                f"H-{index}", "1000000001", 100, NOW + timedelta(minutes=5), "active", seq
            ),
        )
    return conn


def test_renumbering_moves_the_unsent_operations_and_what_names_their_numbers(
    tmp_path: Path,
) -> None:
    with closing(journal(tmp_path / "agent.sqlite3", 5)) as conn:
        # Acknowledged up to 2; the central server holds up to 9: 3..5 move to 10..12.
        assert store.renumber_after(conn, 2, 7) == 3
        rows = conn.execute("SELECT seq, op_id FROM journal ORDER BY seq").fetchall()
        assert rows == [(1, "op-1"), (2, "op-2"), (10, "op-3"), (11, "op-4"), (12, "op-5")]
        for table, key in (("receipts", "receipt_id"), ("holds", "hold_id")):
            moved = conn.execute(f"SELECT {key}, seq FROM {table} ORDER BY seq").fetchall()
            assert [seq for _, seq in moved] == [1, 2, 10, 11, 12], table
        assert store.find_receipt(conn, "R-3").seq == 10  # type: ignore[union-attr]
        # The pending queue is the same operations, in the same order.
        assert [e.op_id for e in store.entries_after(conn, 9, 10)] == ["op-3", "op-4", "op-5"]
        assert [h.hold_id for h in store.holds_placed_after(conn, "1000000001", 9)] == [
            "H-3",
            "H-4",
            "H-5",
        ]
        # The next operation numbers after them.
        seq = store.append_entry(
            conn,
            op_id="op-6",
            idem_key="R-6",
            request_hash="-",
            operation=Verification(card="1000000001"),
            response={},
            created_at=NOW,
        )
        assert seq == 13


def test_a_renumbering_maps_the_round_target_with_the_operations() -> None:
    moved = Renumbered(acked_seq=2, last_seq=5, shift=7, count=3)
    assert [moved.target(seq) for seq in (1, 2, 3, 5)] == [1, 2, 10, 12]


def ops(first: int, count: int) -> list[Op]:
    return [
        Op(seq=seq, op_id=f"op-{seq}", created_at=NOW, operation=Verification(card="1"))
        for seq in range(first, first + count)
    ]


def answer(acked_seq: int, results: list[tuple[int, str]]) -> UploadResponse:
    return UploadResponse(
        acked_seq=acked_seq,
        results=[OpResult(seq=seq, op_id=op_id, status="applied") for seq, op_id in results],
        checkpoint=1,
        server_time=NOW,
    )


def test_an_answer_that_matches_the_batch_is_accepted() -> None:
    batch = ops(3, 3)
    check_upload_answer(batch, answer(5, [(3, "op-3"), (4, "op-4"), (5, "op-5")]))


@pytest.mark.parametrize(
    ("acked_seq", "results", "why"),
    [
        (8, [(3, "op-3"), (4, "op-4"), (5, "op-5")], "acknowledged seq 8 for a batch of seq 3..5"),
        (2, [(3, "op-3"), (4, "op-4"), (5, "op-5")], "acknowledged seq 2"),
        (5, [(3, "op-3"), (4, "op-4")], "2 results for 3 operations"),
        (5, [(3, "op-3"), (4, "op-4"), (5, "op-other")], "do not match"),
        (5, [(3, "op-3"), (4, "op-4"), (6, "op-5")], "do not match"),
    ],
)
def test_an_answer_beyond_or_beside_the_batch_is_refused(
    acked_seq: int, results: list[tuple[int, str]], why: str
) -> None:
    with pytest.raises(SyncError, match=why):
        check_upload_answer(ops(3, 3), answer(acked_seq, results))
