"""Applying a store's operations to the central ledger, exactly once and in sequence order.

The central server trusts no store's figures: each operation's effect is derived again from its
inputs (the receipt's lines, the redemption asked for, the settings version the store says it
used) with the pure functions the stores use (``shared/effects.py``), on the cards loaded in a
``LedgerTx``.  Where the store's figures differ from the derived ones the difference is recorded
with the result; the ledger books its own.  An operation that cannot have happened (an unknown
card or receipt, an unknown settings version, impossible lines) is rejected with a stable reason
and does not block the ones behind it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.bulk import insert_rows, one_of, update_rows
from central.ledger import CardRecord, LedgerTx, TxRow, allocations_json
from central.program import SettingsBook
from shared.effects import (
    SaleFigures,
    SoldReceipt,
    claimed_sale_figures,
    hold_effect,
    release_effect,
    return_effect,
    return_plan,
    sale_effect,
    sale_figures,
    sold_line_rows,
    sold_lines,
)
from shared.journal import (
    HoldPlaced,
    HoldReleased,
    Registration,
    Return,
    Sale,
    Verification,
    accrual_lot_id,
)
from shared.lots import Allocation, Wallet, local_date
from shared.protocol import Difference, Op, OpResult, Rejection, auth_hold_id
from shared.returns import ReturnExceedsSale

#: A hold may end at most this long after the central server's clock plus the longest
#: time-to-live: stores' clocks drift, and a longer hold cannot have been placed.
HOLD_CLOCK_SLACK: Final = timedelta(days=1)


class Rejected(Exception):
    """An operation that cannot have happened; recorded with this reason."""

    def __init__(self, reason: Rejection, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason


@dataclass
class ApplyContext:
    """What applying a batch needs beyond the cards."""

    store_id: str
    book: SettingsBook
    #: phone → its hash, computed before the batch's transaction (``sync.upload``).
    phone_hashes: Mapping[str, str]
    now: datetime
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)  # receipt_id → row
    new_receipts: set[str] = field(default_factory=set)
    #: phone → the primary card of that phone (None: none yet), for the batch's registrations;
    #: a registration that makes a new primary adds it, so a later one in the batch merges.
    phone_primary: dict[str, str | None] = field(default_factory=dict)
    #: cards known to have a ``clients`` row (among the registrations' cards and primaries).
    client_owners: set[str] = field(default_factory=set)
    #: hold ids the central server holds already (for any store): a hold cannot reuse one.
    taken_hold_ids: set[str] = field(default_factory=set)

    @property
    def today(self) -> date:
        return local_date(self.now, self.book.current.zone)


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes; make them aware."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def load_for_batch(tx: LedgerTx, ctx: ApplyContext, ops: list[Op]) -> None:
    """Load every card, receipt and hold id a batch touches, in one round of queries.

    Registrations are prepared here too, for the whole batch: the phones' advisory locks
    (PostgreSQL), their primary cards (locked and loaded) and which of those cards have a client
    row; ``_register`` then creates cards in memory and ``LedgerTx.write`` inserts them.
    """
    conn = tx.conn
    dialect = conn.dialect
    await tx.load({op.card for op in ops})
    registrations = [op.operation for op in ops if isinstance(op.operation, Registration)]
    phones = sorted({r.phone for r in registrations if r.phone is not None})
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
        owners = sorted({r.card for r in registrations} | set(primaries))
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
        {op.operation.receipt_id for op in ops if isinstance(op.operation, Sale | Return)}
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
            ctx.receipts[op.operation.receipt_id]
            for op in ops
            if isinstance(op.operation, Return) and op.operation.receipt_id in ctx.receipts
        ]
        await tx.prefetch_lots(
            [lot_id for receipt in returned for lot_id, _ in receipt["allocations"]]
            + [receipt["accrual_lot"] for receipt in returned if receipt["accrual_lot"]]
        )
    # A hold id another store (or an earlier operation) used already would collide in the
    # holds table: such a hold is rejected, not the whole batch.
    hold_ids = sorted({op.operation.hold_id for op in ops if isinstance(op.operation, HoldPlaced)})
    if hold_ids:
        ctx.taken_hold_ids = set(
            (
                await conn.execute(
                    sa.select(schema.holds.c.hold_id).where(
                        one_of(schema.holds.c.hold_id, hold_ids, dialect)
                    )
                )
            ).scalars()
        )


async def apply_op(tx: LedgerTx, ctx: ApplyContext, op: Op) -> OpResult:
    """Apply one operation; a rejection leaves the cards as they were."""
    saved = {number: tx.snapshot(number) for number in _touched(tx, op.card)}
    tx_count = len(tx.txs)
    try:
        debt_added, differences = await _APPLY[op.kind](tx, ctx, op)
    except Rejected as exc:
        for number, record in saved.items():
            tx.cards[number] = record
        del tx.txs[tx_count:]
        return OpResult(seq=op.seq, op_id=op.op_id, status="rejected", reason=str(exc.reason))
    return OpResult(
        seq=op.seq,
        op_id=op.op_id,
        status="applied",
        debt_added_kop=debt_added,
        differences=differences,
    )


Outcome = tuple[int, list[Difference]]  # debt added, and where the store's figures differ
NOTHING: Final[Outcome] = (0, [])


def _touched(tx: LedgerTx, number: str) -> list[str]:
    card = tx.cards.get(number)
    out = [number] if card else []
    if card is not None and card.merged_into and card.merged_into in tx.cards:
        out.append(card.merged_into)
    return out


def _target(tx: LedgerTx, number: str) -> CardRecord:
    card = tx.resolve(number)
    if card is None:
        raise Rejected(Rejection.CARD_UNKNOWN, number)
    if card.status == "blocked":
        raise Rejected(Rejection.CARD_BLOCKED, number)
    return card


def _common(ctx: ApplyContext, op: Op, receipt_id: str) -> dict[str, Any]:
    return {
        "store_id": ctx.store_id,
        "receipt_id": receipt_id,
        "op_id": op.op_id,
        "at_store": op.created_at,
    }


def _differ(name: str, store: int | date | None, central: int | date | None) -> list[Difference]:
    if store == central:
        return []
    return [Difference(field=name, store=_plain(store), central=_plain(central))]


def _plain(value: int | date | None) -> int | str | None:
    return value.isoformat() if isinstance(value, date) else value


# --- registration and confirmation --------------------------------------------------------------


async def _register(tx: LedgerTx, ctx: ApplyContext, op: Op) -> Outcome:
    registration = op.operation
    assert isinstance(registration, Registration)
    phone = registration.phone
    existing = tx.cards.get(registration.card)
    if existing is not None:
        if existing.phone not in (None, phone) and phone is not None:
            raise Rejected(Rejection.CARD_PHONE_CONFLICT, registration.card)
        return NOTHING
    if phone is None:
        # The store removes the phone once acknowledged; a first upload always carries it.
        raise Rejected(Rejection.REGISTRATION_WITHOUT_PHONE, registration.card)
    # ``load_for_batch`` locked the phone and found its primary, if any; a registration earlier
    # in this batch that made a primary put it in ``phone_primary``.
    primary = ctx.phone_primary.get(phone)
    if primary is None:
        ctx.phone_primary[phone] = registration.card
    status = "merged" if primary else "active"
    tx.add_card(
        CardRecord(
            number=registration.card,
            status=status,
            merged_into=primary,
            phone=phone,
            verified=False,
            last_purchase_on=None,
            wallet=Wallet(),
            changed=True,
        ),
        {
            "number": registration.card,
            "status": status,
            "merged_into": primary,
            "phone": phone,
            # A merged card is found by phone through its primary only.
            "phone_hash": None if primary else ctx.phone_hashes[phone],
            "virtual": registration.virtual,
            "created_store": ctx.store_id,
            "created_at": ctx.now,
            "cursor": 0,
        },
    )
    profile = registration.profile
    owner = primary or registration.card
    if owner not in ctx.client_owners:
        ctx.client_owners.add(owner)
        tx.new_clients.append(
            {
                "card": owner,
                "first_name": profile.first_name if profile else None,
                "last_name": profile.last_name if profile else None,
                "middle_name": profile.middle_name if profile else None,
                "email": profile.email if profile else None,
                "birth_date": profile.birth_date if profile else None,
                "sex": profile.sex if profile else None,
                "consent_personal_data": registration.consents.personal_data,
                "consent_advertising": registration.consents.advertising,
                "consented_at": op.created_at,
            }
        )
    if primary:
        tx.cards[primary].changed = True
    return NOTHING


async def _verify(tx: LedgerTx, ctx: ApplyContext, op: Op) -> Outcome:
    assert isinstance(op.operation, Verification)
    card = _target(tx, op.card)
    card.verified = True
    card.changed = True
    return NOTHING


# --- sale ---------------------------------------------------------------------------------------


def _check_lines(sale: Sale) -> None:
    ids = [line.line_id for line in sale.lines]
    if len(set(ids)) != len(ids):
        raise Rejected(Rejection.IMPOSSIBLE_LINES, "a line id appears twice")
    for line in sale.lines:
        if line.redeemed_kop > line.amount_kop:
            raise Rejected(Rejection.IMPOSSIBLE_LINES, f"line {line.line_id} redeemed > amount")


def sale_differences(claimed: SaleFigures, derived: SaleFigures) -> list[Difference]:
    """Where a store's figures for a sale differ from the derived ones."""
    out = _differ("accrued_kop", claimed.accrued_kop, derived.accrued_kop)
    out += _differ("redeemed_kop", claimed.redeemed_kop, derived.redeemed_kop)
    lines = sum(
        1
        for mine, theirs in zip(claimed.lines, derived.lines, strict=True)
        if (mine.accrued_kop, mine.redeemed_kop) != (theirs.accrued_kop, theirs.redeemed_kop)
    )
    out += _differ("lines_differing", 0, lines)
    out += _differ("accrual_expires_on", claimed.accrual_expires_on, derived.accrual_expires_on)
    out += _differ("accrual_active_from", claimed.accrual_active_from, derived.accrual_active_from)
    return out


async def _sale(tx: LedgerTx, ctx: ApplyContext, op: Op) -> Outcome:
    sale = op.operation
    assert isinstance(sale, Sale)
    card = _target(tx, sale.card)
    if sale.receipt_id in ctx.receipts:
        raise Rejected(Rejection.RECEIPT_REUSED, sale.receipt_id)
    _check_lines(sale)
    settings = ctx.book.for_claim(sale.settings_version, ctx.now)
    if settings is None:
        raise Rejected(Rejection.SETTINGS_VERSION_UNKNOWN, str(sale.settings_version))
    differences = _differ("settings_version", sale.settings_version, settings.version)
    # A sale's day is never after the central server's today: a store's clock set ahead must
    # not use points before they are active, nor push its accrual's expiry later.
    day = min(sale.day, ctx.today)
    differences += _differ("day", sale.day, day)
    booked = sale if day == sale.day else sale.model_copy(update={"day": day})
    figures = sale_figures(booked, settings)
    differences += sale_differences(claimed_sale_figures(sale), figures)
    # The holds it ends: its order's hold, its online authorisation's, and the authorisation
    # asked for this receipt that the store did not wait for (its answer came too late).
    ends = {
        hold_id
        for hold_id in (
            sale.hold_id,
            auth_hold_id(sale.authorization_id) if sale.authorization_id else None,
            auth_hold_id(f"{ctx.store_id}:{sale.receipt_id}"),
        )
        if hold_id is not None and card.hold_stores.get(hold_id) == ctx.store_id
    }
    effect = sale_effect(
        card.wallet,
        booked,
        figures,
        lot_id=accrual_lot_id(op.op_id),
        now=ctx.now,
        consumed_holds=sorted(ends),
    )
    for hold_id in ends:
        tx.hold_states[hold_id] = "consumed"
        del card.hold_stores[hold_id]
    common = _common(ctx, op, sale.receipt_id)
    if figures.redeemed_kop:
        tx.record(
            TxRow(
                card.number,
                "redemption",
                -figures.redeemed_kop,
                allocations_json(effect.allocations),
                **common,
            )
        )
    if effect.accrual_lot is not None:
        lot = effect.accrual_lot
        tx.record(
            TxRow(card.number, "accrual", lot.amount_kop, [[lot.lot_id, lot.amount_kop]], **common)
        )
    card.wallet = effect.wallet
    card.last_purchase_on = max(filter(None, [card.last_purchase_on, day]))
    card.changed = True
    ctx.receipts[sale.receipt_id] = {
        "store_id": ctx.store_id,
        "receipt_id": sale.receipt_id,
        "card": card.number,
        "day": day,
        "lines": sold_line_rows(sale, figures),
        "allocations": allocations_json(effect.allocations),
        "accrual_lot": effect.accrual_lot.lot_id if effect.accrual_lot else None,
        "accrued_kop": figures.accrued_kop,
        "redeemed_kop": figures.redeemed_kop,
        "returned": {},
        "refunded_kop": 0,
        "annulled": False,
    }
    ctx.new_receipts.add(sale.receipt_id)
    return effect.debt_added_kop, differences


# --- return -------------------------------------------------------------------------------------


def sold_receipt(row: dict[str, Any]) -> SoldReceipt:
    """A receipts row as the return rules see it."""
    return SoldReceipt(
        receipt_id=row["receipt_id"],
        card=row["card"],
        lines=sold_lines(row["lines"]),
        allocations=tuple(Allocation(str(lot), int(amount)) for lot, amount in row["allocations"]),
        accrual_lot=row["accrual_lot"],
        returned={line_id: Decimal(qty) for line_id, qty in row["returned"].items()},
        refunded_kop=int(row["refunded_kop"]),
        annulled=bool(row.get("annulled")),
    )


async def _return(tx: LedgerTx, ctx: ApplyContext, op: Op) -> Outcome:
    ret = op.operation
    assert isinstance(ret, Return)
    row = ctx.receipts.get(ret.receipt_id)
    if row is None:
        raise Rejected(Rejection.RECEIPT_UNKNOWN, ret.receipt_id)
    card = _target(tx, row["card"])
    requested = {line.line_id: line.qty for line in ret.lines}
    if len(requested) != len(ret.lines):
        raise Rejected(Rejection.IMPOSSIBLE_LINES, "a line id appears twice")
    receipt = sold_receipt(row)
    try:
        plan = return_plan(receipt, requested)
    except ReturnExceedsSale as exc:
        raise Rejected(Rejection.RETURN_EXCEEDS_SALE, str(exc)) from exc
    day = min(ret.day, ctx.today)
    lot_ids = [a.lot_id for a in receipt.allocations]
    if receipt.accrual_lot:
        lot_ids.append(receipt.accrual_lot)
    await tx.ensure_lots(card.number, lot_ids)
    effect = return_effect(card.wallet, receipt, plan, day=day, refund_lot_id=f"{op.op_id}:r")
    common = _common(ctx, op, ret.receipt_id)
    if plan.accrual_reversed_kop:
        tx.record(
            TxRow(
                card.number,
                "accrual_reversal",
                -plan.accrual_reversed_kop,
                [[receipt.accrual_lot, effect.reversal.accrual_taken_kop]],
                **common,
            )
        )
    if plan.redemption_refunded_kop:
        tx.record(
            TxRow(
                card.number,
                "redemption_refund",
                plan.redemption_refunded_kop,
                allocations_json(effect.given),
                **common,
            )
        )
    if effect.reversal.burned_kop:
        tx.record(
            TxRow(
                card.number,
                "expiry",
                -effect.reversal.burned_kop,
                [],
                note="refund to an expired lot",
                **common,
            )
        )
    card.wallet = effect.wallet
    card.changed = True
    row["returned"] = {line_id: str(qty) for line_id, qty in effect.receipt.returned.items()}
    row["refunded_kop"] = effect.receipt.refunded_kop
    if row["receipt_id"] not in ctx.new_receipts:
        ctx.new_receipts.add(row["receipt_id"])
        row["_update"] = True
    differences = _differ(
        "accrual_reversed_kop", ret.accrual_reversed_kop, plan.accrual_reversed_kop
    )
    differences += _differ(
        "redemption_refunded_kop", ret.redemption_refunded_kop, plan.redemption_refunded_kop
    )
    return effect.reversal.debt_added_kop, differences


# --- holds --------------------------------------------------------------------------------------


async def _hold(tx: LedgerTx, ctx: ApplyContext, op: Op) -> Outcome:
    hold = op.operation
    assert isinstance(hold, HoldPlaced)
    card = _target(tx, hold.card)
    if hold.hold_id in ctx.taken_hold_ids:
        raise Rejected(Rejection.HOLD_ID_TAKEN, hold.hold_id)
    longest = timedelta(seconds=ctx.book.current.hold_ttl_max_s) + HOLD_CLOCK_SLACK
    if hold.expires_at > ctx.now + longest:
        raise Rejected(Rejection.HOLD_TOO_LONG, hold.hold_id)
    ctx.taken_hold_ids.add(hold.hold_id)
    card.wallet = hold_effect(card.wallet, hold)
    card.hold_stores[hold.hold_id] = ctx.store_id
    card.changed = True
    tx.new_holds.append(
        {
            "hold_id": hold.hold_id,
            "card": card.number,
            "store_id": ctx.store_id,
            "amount_kop": hold.amount_kop,
            "expires_at": hold.expires_at,
            "state": "active",
        }
    )
    return NOTHING


async def _hold_release(tx: LedgerTx, ctx: ApplyContext, op: Op) -> Outcome:
    release = op.operation
    assert isinstance(release, HoldReleased)
    card = _target(tx, release.card)
    # A store ends only its own holds.
    if card.hold_stores.get(release.hold_id) == ctx.store_id:
        card.wallet = release_effect(card.wallet, release.hold_id)
        del card.hold_stores[release.hold_id]
        card.changed = True
        tx.hold_states[release.hold_id] = release.state
    return NOTHING


_APPLY = {
    "register": _register,
    "verify": _verify,
    "sale": _sale,
    "return": _return,
    "hold": _hold,
    "hold_release": _hold_release,
}


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
