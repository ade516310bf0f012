"""Returns: partial by quantity, repeated, never more than the sale, exact on the full return.

Each line's reversal is computed on the cumulative returned quantity: after returning ``q`` of
``qty`` the line has reversed ``floor(x · q / qty)`` of an amount ``x``, so a sequence of partial
returns is monotonic, never exceeds the sale, and the last one makes the total exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction


class ReturnExceedsSale(ValueError):
    """A return of more than what remains of a receipt's line, or of an unknown line."""


@dataclass(frozen=True, slots=True)
class SoldLine:
    """A receipt line as it was sold: quantity, points it accrued and points that paid for it."""

    line_id: str
    qty: Decimal
    accrued_kop: int
    redeemed_kop: int


@dataclass(frozen=True, slots=True)
class ReturnedLine:
    """One line's part of a return."""

    line_id: str
    qty: Decimal
    accrual_reversed_kop: int
    redemption_refunded_kop: int


@dataclass(frozen=True, slots=True)
class ReturnPlan:
    """What a return reverses, per line and in total."""

    lines: tuple[ReturnedLine, ...]
    accrual_reversed_kop: int
    redemption_refunded_kop: int


def _portion(amount_kop: int, qty_done: Decimal, qty_sold: Decimal) -> int:
    share = Fraction(amount_kop) * Fraction(qty_done) / Fraction(qty_sold)
    return int(share)  # floor, as amounts and quantities are non-negative


def plan_return(
    sold: Sequence[SoldLine],
    returned_before: Mapping[str, Decimal],
    requested: Mapping[str, Decimal] | None,
) -> ReturnPlan:
    """Plan a return of ``requested`` quantities per line (``None`` = all that remains).

    ``returned_before`` holds the quantities of earlier returns of the same receipt.  Refuses with
    ``ReturnExceedsSale`` a line not on the receipt, a quantity above what remains, and a whole
    return of a receipt with nothing left.
    """
    by_id = {line.line_id: line for line in sold}
    if requested is None:
        wanted = {
            line.line_id: line.qty - returned_before.get(line.line_id, Decimal(0)) for line in sold
        }
        wanted = {line_id: qty for line_id, qty in wanted.items() if qty > 0}
        if not wanted:
            raise ReturnExceedsSale("everything on this receipt has been returned already")
    else:
        wanted = dict(requested)
        if not wanted:
            raise ReturnExceedsSale("a return names at least one line")
    lines = []
    for line_id, qty in wanted.items():
        line = by_id.get(line_id)
        if line is None:
            raise ReturnExceedsSale(f"line {line_id!r} is not on the receipt")
        if qty <= 0:
            raise ReturnExceedsSale(f"line {line_id!r}: a returned quantity is positive")
        before = returned_before.get(line_id, Decimal(0))
        after = before + qty
        if after > line.qty:
            raise ReturnExceedsSale(f"line {line_id!r}: only {line.qty - before} left to return")
        lines.append(
            ReturnedLine(
                line_id=line_id,
                qty=qty,
                accrual_reversed_kop=_portion(line.accrued_kop, after, line.qty)
                - _portion(line.accrued_kop, before, line.qty),
                redemption_refunded_kop=_portion(line.redeemed_kop, after, line.qty)
                - _portion(line.redeemed_kop, before, line.qty),
            )
        )
    return ReturnPlan(
        lines=tuple(lines),
        accrual_reversed_kop=sum(line.accrual_reversed_kop for line in lines),
        redemption_refunded_kop=sum(line.redemption_refunded_kop for line in lines),
    )


def refund_allocations(
    redeemed: Sequence[tuple[str, int]], refunded_before_kop: int, refund_kop: int
) -> list[tuple[str, int]]:
    """Which lots a partial refund of a sale's redemption goes back to.

    ``redeemed`` is the sale's allocations in consumption order.  Refunds give back in reverse
    order (the latest-expiring points first, the customer's best outcome), continuing where the
    earlier refunds of the same sale stopped, so all refunds together give back exactly the
    allocations.
    """
    total = sum(amount for _, amount in redeemed)
    assert refunded_before_kop >= 0, "earlier refunds are non-negative"
    assert refunded_before_kop + refund_kop <= total, "refunds never exceed the redemption"
    result = []
    skip = refunded_before_kop
    left = refund_kop
    for lot_id, amount in reversed(redeemed):
        if left == 0:
            break
        from_skip = min(skip, amount)
        skip -= from_skip
        room = amount - from_skip
        given = min(room, left)
        if given:
            result.append((lot_id, given))
            left -= given
    return result
