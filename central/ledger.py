"""The central ledger: cards loaded for one transaction, changed in memory with the pure core,
written back in bulk with their journal transactions.

Every change of a card is an immutable row of ``transactions``; for every card the sum of its
transactions equals its lot remainders minus its debt (``central.invariants`` checks it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.bulk import insert_rows, one_of, update_rows
from central.db import next_cursor
from shared.lots import Allocation, Hold, Lot, LotSource, Wallet


@dataclass
class CardRecord:
    """A card as one transaction sees and changes it."""

    number: str
    status: str
    merged_into: str | None
    phone: str | None
    verified: bool
    last_purchase_on: date | None
    wallet: Wallet
    known_lots: set[str] = field(default_factory=set)  # lot ids that exist in the database
    lot_remaining: dict[str, int] = field(default_factory=dict)  # as loaded, to write only changes
    hold_stores: dict[str, str] = field(default_factory=dict)  # active hold id → its store
    #: lot remainders less debt as loaded: the transactions written for the card must add up to
    #: its change (checked before the write).
    net_loaded_kop: int = 0
    changed: bool = False


@dataclass
class TxRow:
    """A journal transaction to insert."""

    card: str
    kind: str
    amount_kop: int
    lots: list[list[Any]]
    store_id: str | None = None
    receipt_id: str | None = None
    campaign_id: str | None = None
    op_id: str | None = None
    at_store: datetime | None = None
    note: str | None = None


def _lot(row: Any) -> Lot:
    return Lot(
        lot_id=row.lot_id,
        amount_kop=row.amount_kop,
        remaining_kop=row.remaining_kop,
        created_on=row.created_on,
        expires_on=row.expires_on,
        active_from=row.active_from,
        source=LotSource(row.source),
        source_ref=row.source_ref,
    )


class LedgerTx:
    """The cards of one write transaction; ``flush`` writes every change and one cursor."""

    def __init__(self, conn: AsyncConnection, now: datetime, *, lock: bool) -> None:
        self.conn = conn
        self.now = now
        self.lock = lock
        self.cards: dict[str, CardRecord] = {}
        self.txs: list[TxRow] = []
        self.new_holds: list[dict[str, Any]] = []
        self.hold_states: dict[str, str] = {}
        #: Cards (and their clients) created in this transaction, inserted by ``write``.
        self.new_cards: list[dict[str, Any]] = []
        self.new_clients: list[dict[str, Any]] = []
        self._wrote = False  # ``write`` wrote rows that ``publish`` must give a cursor

    async def load(self, numbers: Iterable[str], *, all_lots: bool = False) -> None:
        """Load cards (and the cards they were merged into) with their unspent lots and holds."""
        wanted = sorted(set(numbers) - set(self.cards))
        dialect = self.conn.dialect
        while wanted:
            query = sa.select(schema.cards).where(one_of(schema.cards.c.number, wanted, dialect))
            if self.lock:
                query = query.order_by(schema.cards.c.number).with_for_update()
            rows = (await self.conn.execute(query)).all()
            for row in rows:
                self.cards[row.number] = CardRecord(
                    number=row.number,
                    status=row.status,
                    merged_into=row.merged_into,
                    phone=row.phone,
                    verified=row.verified,
                    last_purchase_on=row.last_purchase_on,
                    wallet=Wallet(debt_kop=row.debt_kop),
                    net_loaded_kop=-row.debt_kop,
                )
            loaded = [row.number for row in rows]
            if loaded:
                await self._load_lots(loaded, all_lots=all_lots)
                await self._load_holds(loaded)
            wanted = sorted({row.merged_into for row in rows if row.merged_into} - set(self.cards))

    async def _load_lots(self, numbers: list[str], *, all_lots: bool) -> None:
        query = sa.select(schema.lots).where(one_of(schema.lots.c.card, numbers, self.conn.dialect))
        if not all_lots:
            query = query.where(schema.lots.c.remaining_kop > 0)
        self._add_lot_rows((await self.conn.execute(query.order_by(schema.lots.c.lot_id))).all())

    def _add_lot_rows(self, rows: Iterable[Any]) -> None:
        """Lot rows into the wallets of their (loaded) cards."""
        by_card: dict[str, list[Lot]] = {}
        for row in rows:
            if row.card in self.cards:
                by_card.setdefault(row.card, []).append(_lot(row))
        for number, card_lots in by_card.items():
            self._add_lots(self.cards[number], card_lots)

    def _add_lots(self, card: CardRecord, new_lots: list[Lot]) -> None:
        fresh = [lot for lot in new_lots if lot.lot_id not in card.known_lots]
        card.wallet = replace(card.wallet, lots=(*card.wallet.lots, *fresh))
        for lot in fresh:
            card.known_lots.add(lot.lot_id)
            card.lot_remaining[lot.lot_id] = lot.remaining_kop
            card.net_loaded_kop += lot.remaining_kop

    async def prefetch_lots(self, lot_ids: Iterable[str]) -> None:
        """Load specific lots (spent ones too) of the loaded cards in one query: what a batch's
        returns will reverse, so that each return need not ask on its own."""
        wanted = sorted(set(lot_ids))
        if not wanted:
            return
        query = sa.select(schema.lots).where(
            one_of(schema.lots.c.lot_id, wanted, self.conn.dialect)
        )
        self._add_lot_rows((await self.conn.execute(query)).all())

    async def ensure_lots(self, number: str, lot_ids: Iterable[str]) -> None:
        """Load specific lots of a card (spent ones too), for exact reversals."""
        card = self.cards[number]
        # Lots made earlier in this transaction are in the wallet but not yet in the database.
        missing = sorted(set(lot_ids) - card.known_lots - {lot.lot_id for lot in card.wallet.lots})
        if not missing:
            return
        rows = (
            await self.conn.execute(
                sa.select(schema.lots).where(
                    schema.lots.c.card == number, schema.lots.c.lot_id.in_(missing)
                )
            )
        ).all()
        self._add_lots(card, [_lot(row) for row in rows])

    async def _load_holds(self, numbers: list[str]) -> None:
        rows = (
            await self.conn.execute(
                sa.select(schema.holds).where(
                    one_of(schema.holds.c.card, numbers, self.conn.dialect),
                    schema.holds.c.state == "active",
                )
            )
        ).all()
        for row in rows:
            card = self.cards[row.card]
            expires_at = row.expires_at
            if expires_at.tzinfo is None:  # SQLite returns naive UTC
                from datetime import UTC

                expires_at = expires_at.replace(tzinfo=UTC)
            card.wallet = replace(
                card.wallet,
                holds=(*card.wallet.holds, Hold(row.hold_id, row.amount_kop, expires_at)),
            )
            card.hold_stores[row.hold_id] = row.store_id

    def resolve(self, number: str) -> CardRecord | None:
        """The card that receives a card's operations (a merged card's primary)."""
        card = self.cards.get(number)
        seen = 0
        while card is not None and card.status == "merged" and card.merged_into and seen < 5:
            card = self.cards.get(card.merged_into)
            seen += 1
        return card

    def snapshot(self, number: str) -> CardRecord:
        """A copy to restore if an operation fails half-way."""
        # A shallow copy as copy.copy makes it, without its reduce protocol (once per operation).
        clone = object.__new__(CardRecord)
        clone.__dict__.update(self.cards[number].__dict__)
        return clone

    def record(self, tx: TxRow) -> None:
        """Add a journal transaction."""
        self.txs.append(tx)

    def add_card(self, record: CardRecord, row: dict[str, Any]) -> None:
        """A card created in this transaction (a registration): ``write`` inserts ``row``."""
        self.cards[record.number] = record
        self.new_cards.append(row)

    async def flush(self) -> int:
        """Write every changed card, lot, hold and transaction; returns the feed cursor."""
        await self.write()
        return await self.publish()

    async def write(self) -> None:
        """Write everything but the cards' own rows: new cards and clients, lots, holds and
        journal transactions.  The feed cursor is not taken yet (see ``publish``)."""
        conn = self.conn
        self._wrote = self._wrote or bool(
            self.new_cards or self.txs or self.new_holds or self.hold_states
        )
        await insert_rows(conn, schema.cards, self.new_cards)
        await insert_rows(conn, schema.clients, self.new_clients)
        self.new_cards = []
        self.new_clients = []
        new_lots: list[dict[str, Any]] = []
        updated_lots: list[dict[str, Any]] = []
        for card in self.cards.values():
            if not card.changed:
                continue
            for lot in card.wallet.lots:
                if lot.lot_id not in card.known_lots:
                    new_lots.append(_lot_row(card.number, lot))
                    card.known_lots.add(lot.lot_id)
                elif card.lot_remaining.get(lot.lot_id) != lot.remaining_kop:
                    updated_lots.append({"lot_id": lot.lot_id, "remaining_kop": lot.remaining_kop})
                card.lot_remaining[lot.lot_id] = lot.remaining_kop
        self._check_sums()
        await insert_rows(conn, schema.lots, new_lots)
        await update_rows(conn, schema.lots, ["lot_id"], updated_lots)
        await insert_rows(conn, schema.holds, self.new_holds)
        await update_rows(
            conn,
            schema.holds,
            ["hold_id"],
            [{"hold_id": hold_id, "state": state} for hold_id, state in self.hold_states.items()],
        )
        await insert_rows(
            conn,
            schema.transactions,
            [
                {
                    "card": tx.card,
                    "store_id": tx.store_id,
                    "kind": tx.kind,
                    "amount_kop": tx.amount_kop,
                    "lots": tx.lots,
                    "receipt_id": tx.receipt_id,
                    "campaign_id": tx.campaign_id,
                    "op_id": tx.op_id,
                    "at_store": tx.at_store,
                    "received_at": self.now,
                    "note": tx.note,
                }
                for tx in self.txs
            ],
        )
        self.txs = []
        self.new_holds = []
        self.hold_states = {}

    def _check_sums(self) -> None:
        """Assert before writing what must hold after: for every card, the transactions of this
        write add up to the change of its lot remainders less its debt."""
        booked: dict[str, int] = {}
        for tx in self.txs:
            booked[tx.card] = booked.get(tx.card, 0) + tx.amount_kop
        for card in self.cards.values():
            if not card.changed and card.number not in booked:
                continue
            net = sum(lot.remaining_kop for lot in card.wallet.lots) - card.wallet.debt_kop
            assert net - card.net_loaded_kop == booked.get(card.number, 0), (
                f"card {card.number}: transactions {booked.get(card.number, 0)} "
                f"against a change of {net - card.net_loaded_kop}"
            )
            card.net_loaded_kop = net

    async def publish(self) -> int:
        """Take the feed's next cursor and stamp the changed cards with it; returns the cursor
        (0 when nothing changed).

        Taking the cursor increments the one ``feed`` row, whose lock every feed writer then
        holds until it commits: cursor order is commit order.  So it comes last, after every
        other write of the transaction, and the lock is held only for the cards' update and the
        commit; the caller should have nothing else to write after it.
        """
        changed = [card for card in self.cards.values() if card.changed]
        wrote, self._wrote = self._wrote, False
        if not changed and not wrote:
            return 0
        cursor = await next_cursor(self.conn)
        await update_rows(
            self.conn,
            schema.cards,
            ["number"],
            [
                {
                    "number": card.number,
                    "debt_kop": card.wallet.debt_kop,
                    "verified": card.verified,
                    "last_purchase_on": card.last_purchase_on,
                    "status": card.status,
                    "merged_into": card.merged_into,
                }
                for card in changed
            ],
            constants={"cursor": cursor},
        )
        for card in changed:
            card.changed = False
        return cursor


def _lot_row(card: str, lot: Lot) -> dict[str, Any]:
    return {
        "lot_id": lot.lot_id,
        "card": card,
        "amount_kop": lot.amount_kop,
        "remaining_kop": lot.remaining_kop,
        "created_on": lot.created_on,
        "expires_on": lot.expires_on,
        "active_from": lot.active_from,
        "source": str(lot.source),
        "source_ref": lot.source_ref,
    }


def allocations_json(allocations: Iterable[Allocation]) -> list[list[Any]]:
    """Allocations as ``[lot_id, amount]`` pairs for the journal."""
    return [[a.lot_id, a.amount_kop] for a in allocations]
