"""The ledger's invariants, checked by tests and by ``bonus-central check``.

- for every card, the sum of its transactions = its lot remainders − its debt;
- no lot below zero or above its amount (also a table constraint);
- every store operation applied once (one ``store_ops`` row per op id, transactions of one
  operation never repeated);
- the chain's total is conserved: all transactions = all remainders − all debt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema


@dataclass
class InvariantReport:
    """What the checker found."""

    cards_checked: int = 0
    problems: list[str] = field(default_factory=list)
    transactions_total_kop: int = 0
    remainders_total_kop: int = 0
    debt_total_kop: int = 0

    @property
    def ok(self) -> bool:
        """No invariant broken."""
        return not self.problems


async def check_invariants(conn: AsyncConnection, problems_max: int = 50) -> InvariantReport:
    """Check every invariant over the whole ledger."""
    report = InvariantReport()
    tx_sum = (
        sa.select(
            schema.transactions.c.card, sa.func.sum(schema.transactions.c.amount_kop).label("s")
        )
        .group_by(schema.transactions.c.card)
        .subquery()
    )
    lot_sum = (
        sa.select(schema.lots.c.card, sa.func.sum(schema.lots.c.remaining_kop).label("s"))
        .group_by(schema.lots.c.card)
        .subquery()
    )
    query = sa.select(
        schema.cards.c.number,
        schema.cards.c.debt_kop,
        sa.func.coalesce(tx_sum.c.s, 0).label("tx"),
        sa.func.coalesce(lot_sum.c.s, 0).label("lots"),
    ).select_from(
        schema.cards.outerjoin(tx_sum, tx_sum.c.card == schema.cards.c.number).outerjoin(
            lot_sum, lot_sum.c.card == schema.cards.c.number
        )
    )
    for row in (await conn.execute(query)).all():
        report.cards_checked += 1
        tx_total, lots_total, debt = int(row.tx), int(row.lots), int(row.debt_kop)
        report.transactions_total_kop += tx_total
        report.remainders_total_kop += lots_total
        report.debt_total_kop += debt
        if tx_total != lots_total - debt and len(report.problems) < problems_max:
            report.problems.append(
                f"card {row.number}: transactions {tx_total} ≠ remainders {lots_total} − debt {debt}"
            )
        if debt < 0:
            report.problems.append(f"card {row.number}: negative debt {debt}")
    bad_lots = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(schema.lots)
        .where(
            sa.or_(
                schema.lots.c.remaining_kop < 0,
                schema.lots.c.remaining_kop > schema.lots.c.amount_kop,
            )
        )
    )
    if bad_lots:
        report.problems.append(f"{bad_lots} lots outside 0..amount")
    repeated = (
        await conn.execute(
            sa.select(
                schema.transactions.c.op_id, schema.transactions.c.kind, sa.func.count().label("n")
            )
            .where(schema.transactions.c.op_id.is_not(None))
            .group_by(schema.transactions.c.op_id, schema.transactions.c.kind)
            .having(sa.func.count() > 1)
            .limit(problems_max)
        )
    ).all()
    for row in repeated:
        report.problems.append(f"operation {row.op_id}: {row.n} {row.kind} transactions")
    orphan_tx = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(schema.transactions)
        .where(~schema.transactions.c.card.in_(sa.select(schema.cards.c.number)))
    )
    if orphan_tx:
        report.problems.append(f"{orphan_tx} transactions of unknown cards")
    if report.transactions_total_kop != report.remainders_total_kop - report.debt_total_kop:
        report.problems.append("the chain's total is not conserved")
    return report
