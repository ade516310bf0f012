"""Applying a store's operations to the central ledger, exactly once and in sequence order.

Each operation is applied to the cards loaded in a ``LedgerTx`` with the pure core.  An operation
that can never apply (a card blocked centrally, a receipt unknown) is recorded as rejected with
its reason and does not block the ones behind it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.bulk import insert_rows, one_of, update_rows
from central.ledger import CardRecord, LedgerTx, TxRow, allocations_json
from shared.lots import (
    Allocation,
    Lot,
    LotSource,
    Wallet,
    balance,
    consume,
    credit,
    drop_hold,
    give_back,
    local_date,
    take_from_lot,
)
from shared.protocol import Op, OpResult, auth_hold_id
from shared.returns import ReturnExceedsSale, SoldLine, plan_return, refund_allocations
from shared.settings import ProgramSettings


class Rejected(Exception):
    """An operation that can never apply; recorded with this reason."""


@dataclass
class ApplyContext:
    """What applying a batch needs beyond the cards."""

    store_id: str
    settings: ProgramSettings
    #: phone → its hash, computed before the batch's transaction (``sync.upload``).
    phone_hashes: Mapping[str, str]
    now: datetime
    receipts: dict[str, dict[str, Any]]  # receipt_id → row, loaded and changed here
    new_receipts: set[str]
    #: phone → the primary card of that phone (None: none yet), for the batch's registrations;
    #: a registration that makes a new primary adds it, so a later one in the batch merges.
    phone_primary: dict[str, str | None] = field(default_factory=dict)
    #: cards known to have a ``clients`` row (among the registrations' cards and primaries).
    client_owners: set[str] = field(default_factory=set)

    @property
    def today(self) -> date:
        return local_date(self.now, self.settings.zone)


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes; make them aware."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def load_for_batch(tx: LedgerTx, ctx: ApplyContext, ops: list[Op]) -> None:
    """Load every card and receipt a batch touches, in one round of queries.

    Registrations are prepared here too, for the whole batch: the phones' advisory locks
    (PostgreSQL), their primary cards (locked and loaded) and which of those cards have a client
    row; ``_register`` then creates cards in memory and ``LedgerTx.write`` inserts them.
    """
    conn = tx.conn
    dialect = conn.dialect
    await tx.load({op.card for op in ops})
    phones = sorted(
        {
            str(op.payload["phone"])
            for op in ops
            if op.kind == "register" and op.payload.get("phone")
        }
    )
    if phones:
        if dialect.name == "postgresql":
            # Two stores registering one phone at the same moment must not both find no primary
            # (neither sees the other's uncommitted card): serialise registrations per phone.
            # Under READ COMMITTED the query below then sees the other's committed card. The
            # locks are taken in phone order (volatile functions run after the sort), so two
            # batches with the same phones cannot deadlock on them.
            await conn.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtextextended('phone:' || p, 0)) "
                "FROM unnest($1::text[]) AS p ORDER BY p",
                (phones,),
            )
        rows = (
            await conn.execute(
                sa.select(schema.cards.c.phone, schema.cards.c.number)
                .where(
                    one_of(schema.cards.c.phone, phones, dialect),
                    schema.cards.c.status != "merged",
                )
                .order_by(schema.cards.c.created_at, schema.cards.c.number)
            )
        ).all()
        ctx.phone_primary = dict.fromkeys(phones)
        for row in rows:
            if ctx.phone_primary[row.phone] is None:
                ctx.phone_primary[row.phone] = row.number
        primaries = [number for number in ctx.phone_primary.values() if number]
        await tx.load(primaries)
        owners = sorted({op.card for op in ops if op.kind == "register"} | set(primaries))
        ctx.client_owners = set(
            (
                await conn.execute(
                    sa.select(schema.clients.c.card).where(
                        one_of(schema.clients.c.card, owners, dialect)
                    )
                )
            ).scalars()
        )
    # Sales too: a sale under a receipt id this store already recorded must be rejected, not
    # fail the whole batch on the receipts' primary key (and so block the queue for ever).
    receipt_ids = sorted(
        {str(op.payload["receipt_id"]) for op in ops if op.kind in ("return", "sale")}
    )
    if receipt_ids:
        rows = (
            await conn.execute(
                sa.select(schema.receipts).where(
                    schema.receipts.c.store_id == ctx.store_id,
                    one_of(schema.receipts.c.receipt_id, receipt_ids, dialect),
                )
            )
        ).all()
        for row in rows:
            ctx.receipts[row.receipt_id] = dict(row._mapping)
        # The lots the batch's returns give back to or take from, in one query.
        returned = [
            ctx.receipts[str(op.payload["receipt_id"])]
            for op in ops
            if op.kind == "return" and str(op.payload["receipt_id"]) in ctx.receipts
        ]
        await tx.prefetch_lots(
            [lot_id for receipt in returned for lot_id, _ in receipt["allocations"]]
            + [receipt["accrual_lot"] for receipt in returned if receipt["accrual_lot"]]
        )


async def apply_op(tx: LedgerTx, ctx: ApplyContext, op: Op) -> OpResult:
    """Apply one operation; a rejection leaves the cards as they were."""
    card_number = op.card
    saved = {number: tx.snapshot(number) for number in _touched(tx, card_number)}
    tx_count = len(tx.txs)
    try:
        debt_added = await _APPLY[op.kind](tx, ctx, op)
    except (Rejected, ReturnExceedsSale) as exc:
        for number, record in saved.items():
            tx.cards[number] = record
        del tx.txs[tx_count:]
        return OpResult(seq=op.seq, op_id=op.op_id, status="rejected", reason=str(exc))
    return OpResult(seq=op.seq, op_id=op.op_id, status="applied", debt_added_kop=debt_added)


def _touched(tx: LedgerTx, number: str) -> list[str]:
    card = tx.cards.get(number)
    out = [number] if card else []
    if card is not None and card.merged_into and card.merged_into in tx.cards:
        out.append(card.merged_into)
    return out


def _target(tx: LedgerTx, number: str) -> CardRecord:
    card = tx.resolve(number)
    if card is None:
        raise Rejected(f"card {number} is unknown")
    if card.status == "blocked":
        raise Rejected(f"card {number} is blocked")
    return card


async def _register(tx: LedgerTx, ctx: ApplyContext, op: Op) -> int:
    payload = op.payload
    phone = str(payload["phone"]) if payload.get("phone") else None
    existing = tx.cards.get(op.card)
    if existing is not None:
        if existing.phone not in (None, phone):
            raise Rejected("card number is registered to another phone")
        return 0
    # ``load_for_batch`` locked the phone and found its primary, if any; a registration earlier
    # in this batch that made a primary put it in ``phone_primary``.
    primary = ctx.phone_primary.get(phone) if phone is not None else None
    if phone is not None and primary is None:
        ctx.phone_primary[phone] = op.card
    status = "merged" if primary else "active"
    tx.add_card(
        CardRecord(
            number=op.card,
            status=status,
            merged_into=primary,
            phone=phone,
            verified=False,
            last_purchase_on=None,
            wallet=Wallet(),
            changed=True,
        ),
        {
            "number": op.card,
            "status": status,
            "merged_into": primary,
            "phone": phone,
            # A merged card is found by phone through its primary only.
            "phone_hash": None if primary or phone is None else ctx.phone_hashes[phone],
            "virtual": bool(payload.get("virtual")),
            "created_store": ctx.store_id,
            "created_at": ctx.now,
            "cursor": 0,
        },
    )
    profile = payload.get("profile") or {}
    consents = payload.get("consents") or {}
    owner = primary or op.card
    if owner not in ctx.client_owners:
        ctx.client_owners.add(owner)
        tx.new_clients.append(
            {
                "card": owner,
                "first_name": profile.get("first_name"),
                "last_name": profile.get("last_name"),
                "middle_name": profile.get("middle_name"),
                "email": profile.get("email"),
                "birth_date": date.fromisoformat(profile["birth_date"])
                if profile.get("birth_date")
                else None,
                "sex": profile.get("sex"),
                "consent_personal_data": bool(consents.get("personal_data")),
                "consent_advertising": bool(consents.get("advertising")),
                "consented_at": aware(op.created_at),
            }
        )
    if primary:
        tx.cards[primary].changed = True
    return 0


async def _verify(tx: LedgerTx, ctx: ApplyContext, op: Op) -> int:
    card = _target(tx, op.card)
    card.verified = True
    card.changed = True
    return 0


async def _sale(tx: LedgerTx, ctx: ApplyContext, op: Op) -> int:
    payload = op.payload
    card = _target(tx, op.card)
    effect = payload["effect"]
    redeemed = int(effect["redeemed"])
    accrued = int(effect["accrued"])
    day = date.fromisoformat(payload["day"])
    receipt_id = str(payload["receipt_id"])
    if receipt_id in ctx.receipts:
        raise Rejected(f"receipt {receipt_id} was already recorded for this store")
    wallet = card.wallet
    authorization = payload.get("authorization_id")
    for hold_id in (payload.get("hold_id"), auth_hold_id(authorization) if authorization else None):
        if hold_id and hold_id in card.hold_ids:
            wallet = drop_hold(wallet, hold_id)
            tx.hold_states[hold_id] = "consumed"
    usable = balance(wallet, day, ctx.now).usable_kop
    taken = min(redeemed, usable)
    wallet, allocations = consume(wallet, taken, day)
    debt_added = redeemed - taken
    if debt_added:
        # Redeemed offline beyond the chain-wide balance: the overspend becomes debt.
        wallet = replace(wallet, debt_kop=wallet.debt_kop + debt_added)
    common: dict[str, Any] = {
        "store_id": ctx.store_id,
        "receipt_id": receipt_id,
        "op_id": op.op_id,
        "at_store": aware(op.created_at),
    }
    if redeemed:
        tx.record(
            TxRow(card.number, "redemption", -redeemed, allocations_json(allocations), **common)
        )
    accrual_lot = payload.get("accrual_lot")
    if accrued:
        assert accrual_lot, "a sale with an accrual names its lot"
        lot = Lot(
            lot_id=accrual_lot,
            amount_kop=accrued,
            remaining_kop=accrued,
            created_on=day,
            expires_on=_date(payload.get("accrual_expires_on")),
            active_from=_date(payload.get("accrual_active_from")),
            source=LotSource.PURCHASE,
            source_ref=receipt_id,
        )
        wallet, _debt_paid = credit(wallet, lot)
        tx.record(TxRow(card.number, "accrual", accrued, [[accrual_lot, accrued]], **common))
    card.wallet = wallet
    card.last_purchase_on = max(filter(None, [card.last_purchase_on, day]))
    card.changed = True
    ctx.receipts[receipt_id] = {
        "store_id": ctx.store_id,
        "receipt_id": receipt_id,
        "card": card.number,
        "day": day,
        "lines": payload["lines"],
        "allocations": allocations_json(allocations),
        "accrual_lot": accrual_lot if accrued else None,
        "accrued_kop": accrued,
        "redeemed_kop": redeemed,
        "returned": {},
        "refunded_kop": 0,
        "annulled": False,
    }
    ctx.new_receipts.add(receipt_id)
    return debt_added


async def _return(tx: LedgerTx, ctx: ApplyContext, op: Op) -> int:
    payload = op.payload
    receipt = ctx.receipts.get(str(payload["receipt_id"]))
    if receipt is None:
        raise Rejected(f"receipt {payload['receipt_id']} is unknown at this store")
    card = _target(tx, receipt["card"])
    sold = [
        SoldLine(line["line_id"], Decimal(line["qty"]), int(line["accrued"]), int(line["redeemed"]))
        for line in receipt["lines"]
    ]
    before = {line_id: Decimal(qty) for line_id, qty in receipt["returned"].items()}
    requested = {line["line_id"]: Decimal(line["qty"]) for line in payload["lines"]}
    plan = plan_return(sold, before, requested)
    if receipt.get("annulled"):
        # The office already took this receipt's accrual back; a return reverses no accrual.
        plan = replace(plan, accrual_reversed_kop=0)
    day = date.fromisoformat(payload["day"])
    # A redemption made offline beyond the chain-wide balance took fewer points from lots than it
    # redeemed; the rest became debt. Its refund goes back to those lots first, and the part
    # beyond them pays that debt (or, if later credits paid it already, comes back as points).
    allocations = [(lot_id, int(amount)) for lot_id, amount in receipt["allocations"]]
    allocated = sum(amount for _, amount in allocations)
    refunded_to_lots = min(int(receipt["refunded_kop"]), allocated)
    to_lots = min(plan.redemption_refunded_kop, allocated - refunded_to_lots)
    beyond_lots = plan.redemption_refunded_kop - to_lots
    refund = refund_allocations(allocations, refunded_to_lots, to_lots)
    lot_ids = [lot_id for lot_id, _ in refund]
    if receipt["accrual_lot"]:
        lot_ids.append(receipt["accrual_lot"])
    await tx.ensure_lots(card.number, lot_ids)
    wallet = card.wallet
    debt_added = 0
    common: dict[str, Any] = {
        "store_id": ctx.store_id,
        "receipt_id": receipt["receipt_id"],
        "op_id": op.op_id,
        "at_store": aware(op.created_at),
    }
    if plan.accrual_reversed_kop:
        wallet, taken, debt_added = take_from_lot(
            wallet, receipt["accrual_lot"], plan.accrual_reversed_kop
        )
        tx.record(
            TxRow(
                card.number,
                "accrual_reversal",
                -plan.accrual_reversed_kop,
                [[receipt["accrual_lot"], taken]],
                **common,
            )
        )
    if plan.redemption_refunded_kop:
        wallet, given, burned = give_back(
            wallet, [Allocation(lot, amount) for lot, amount in refund], day
        )
        if beyond_lots:
            paid = min(wallet.debt_kop, beyond_lots)
            wallet = replace(wallet, debt_kop=wallet.debt_kop - paid)
            if beyond_lots > paid:
                lot = Lot(
                    lot_id=f"{op.op_id}:r",
                    amount_kop=beyond_lots - paid,
                    remaining_kop=beyond_lots - paid,
                    created_on=day,
                    source=LotSource.ADJUSTMENT,
                    source_ref=receipt["receipt_id"],
                )
                wallet, _ = credit(wallet, lot)
                given = [*given, Allocation(lot.lot_id, lot.amount_kop)]
        tx.record(
            TxRow(
                card.number,
                "redemption_refund",
                plan.redemption_refunded_kop,
                allocations_json(given),
                **common,
            )
        )
        if burned:
            tx.record(
                TxRow(card.number, "expiry", -burned, [], note="refund to an expired lot", **common)
            )
    card.wallet = wallet
    card.changed = True
    returned = dict(receipt["returned"])
    for line in plan.lines:
        returned[line.line_id] = str(before.get(line.line_id, Decimal(0)) + line.qty)
    receipt["returned"] = returned
    receipt["refunded_kop"] = int(receipt["refunded_kop"]) + plan.redemption_refunded_kop
    if receipt["receipt_id"] not in ctx.new_receipts:
        ctx.new_receipts.add(receipt["receipt_id"])
        receipt["_update"] = True
    return debt_added


async def _hold(tx: LedgerTx, ctx: ApplyContext, op: Op) -> int:
    from shared.lots import Hold

    payload = op.payload
    card = _target(tx, op.card)
    expires_at = datetime.fromisoformat(payload["expires_at"])
    hold = Hold(str(payload["hold_id"]), int(payload["amount"]), expires_at)
    card.wallet = replace(card.wallet, holds=(*card.wallet.holds, hold))
    card.hold_ids.add(hold.hold_id)
    card.changed = True
    tx.new_holds.append(
        {
            "hold_id": hold.hold_id,
            "card": card.number,
            "store_id": ctx.store_id,
            "amount_kop": hold.amount_kop,
            "expires_at": expires_at,
            "state": "active",
        }
    )
    return 0


async def _hold_release(tx: LedgerTx, ctx: ApplyContext, op: Op) -> int:
    card = _target(tx, op.card)
    hold_id = str(op.payload["hold_id"])
    if hold_id in card.hold_ids:
        card.wallet = drop_hold(card.wallet, hold_id)
        card.changed = True
        tx.hold_states[hold_id] = str(op.payload.get("state", "released"))
    return 0


_APPLY = {
    "register": _register,
    "verify": _verify,
    "sale": _sale,
    "return": _return,
    "hold": _hold,
    "hold_release": _hold_release,
}


def _date(value: Any) -> date | None:
    return date.fromisoformat(value) if value else None


async def write_receipts(conn: AsyncConnection, ctx: ApplyContext) -> None:
    """Insert the batch's new receipts and update the returned ones."""
    inserts = []
    updates = []
    for receipt_id in ctx.new_receipts:
        row = ctx.receipts[receipt_id]
        if row.pop("_update", False):
            updates.append(
                {
                    "store_id": ctx.store_id,
                    "receipt_id": receipt_id,
                    "returned": row["returned"],
                    "refunded_kop": row["refunded_kop"],
                }
            )
        else:
            inserts.append(row)
    await insert_rows(conn, schema.receipts, inserts)
    await update_rows(conn, schema.receipts, ["store_id", "receipt_id"], updates)
