"""The replica of card states from the central server, with this store's pending operations
applied on top (rebased), so that a till sees the right balance before and after a sync."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from agent import store
from shared.codec import wallet_from_json, wallet_to_json
from shared.lots import (
    Allocation,
    Hold,
    Lot,
    LotSource,
    Wallet,
    balance,
    consume,
    credit,
    drop_hold,
    give_back,
    take_from_lot,
)
from shared.protocol import CardState

#: Card states from the central server into the replica (``base`` and the rebased ``wallet``).
UPSERT_CARDS = (
    "INSERT INTO cards (number, barcode, status, merged_into, phone_hash, phone_last4, verified, "
    "base, wallet, last_purchase_on, central_cursor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (number) DO UPDATE SET barcode = excluded.barcode, status = excluded.status, "
    "merged_into = excluded.merged_into, "
    # A card registered here keeps its local phone hash until the central one arrives.
    "phone_hash = coalesce(excluded.phone_hash, CASE WHEN excluded.status = 'merged' THEN NULL "
    "ELSE cards.phone_hash END), "
    "phone_last4 = coalesce(excluded.phone_last4, cards.phone_last4), "
    "verified = max(cards.verified, excluded.verified), base = excluded.base, "
    "wallet = excluded.wallet, last_purchase_on = excluded.last_purchase_on, "
    "central_cursor = excluded.central_cursor"
)


def base_wallet(state: CardState) -> Wallet:
    """The wallet a central card state describes."""
    return wallet_from_json(
        {
            "lots": [lot.model_dump() for lot in state.lots],
            "debt": state.debt,
            "holds": [hold.model_dump() for hold in state.holds],
        }
    )


def rebase(wallet: Wallet, entry: store.JournalEntry, now: datetime) -> Wallet:
    """Apply one pending journal operation's effects on top of a wallet from the central server."""
    payload = entry.payload
    effect = payload.get("effect", {})
    if entry.kind == "sale":
        day = date.fromisoformat(payload["day"])
        if payload.get("hold_id"):
            wallet = drop_hold(wallet, payload["hold_id"])
        if payload.get("authorization_id"):
            # The central server set the redeemed points aside for this very sale.
            wallet = drop_hold(wallet, f"auth:{payload['authorization_id']}")
        redeemed = int(effect.get("redeemed", 0))
        usable = balance(wallet, day, now).usable_kop
        taken = min(redeemed, usable)
        wallet, _ = consume(wallet, taken, day)
        if redeemed > taken:
            wallet = replace(wallet, debt_kop=wallet.debt_kop + redeemed - taken)
        accrued = int(effect.get("accrued", 0))
        lot_id = payload.get("accrual_lot")
        if accrued and lot_id and not any(lot.lot_id == lot_id for lot in wallet.lots):
            wallet, _ = credit(
                wallet,
                Lot(
                    lot_id=lot_id,
                    amount_kop=accrued,
                    remaining_kop=accrued,
                    created_on=day,
                    expires_on=_date(payload.get("accrual_expires_on")),
                    active_from=_date(payload.get("accrual_active_from")),
                    source=LotSource.PURCHASE,
                    source_ref=payload.get("receipt_id"),
                ),
            )
    elif entry.kind == "return":
        day = date.fromisoformat(payload["day"])
        reversed_kop = int(effect.get("accrual_reversed", 0))
        if reversed_kop:
            lot_id = payload.get("accrual_lot") or ""
            try:
                wallet, _, _ = take_from_lot(wallet, lot_id, reversed_kop)
            except KeyError:
                wallet = replace(wallet, debt_kop=wallet.debt_kop + reversed_kop)
        refund = [
            Allocation(str(lot), int(amount)) for lot, amount in effect.get("refund_lots", [])
        ]
        if refund:
            wallet, _, _ = give_back(wallet, refund, day)
    elif entry.kind == "hold":
        hold = Hold(
            payload["hold_id"],
            int(payload["amount"]),
            datetime.fromisoformat(payload["expires_at"]),
        )
        wallet = replace(wallet, holds=(*drop_hold(wallet, hold.hold_id).holds, hold))
    elif entry.kind == "hold_release":
        wallet = drop_hold(wallet, payload["hold_id"])
    return wallet


def _date(value: Any) -> date | None:
    return date.fromisoformat(value) if value else None


def apply_card_states(
    conn: sqlite3.Connection, states: list[CardState], acked_seq: int, now: datetime
) -> None:
    """Store card states from the central server and rebase this store's pending operations."""
    if not states:
        return
    pending: dict[str, list[store.JournalEntry]] = {}
    numbers = [state.number for state in states]
    for entry in store.pending_entries_for(conn, numbers, acked_seq):
        pending.setdefault(entry.card, []).append(entry)
    rows = []
    for state in states:
        base = base_wallet(state)
        wallet = base
        for entry in pending.get(state.number, []):
            wallet = rebase(wallet, entry, now)
        rows.append(
            (
                state.number,
                state.barcode,
                state.status,
                state.merged_into,
                state.phone_hash,
                state.phone_last4,
                int(state.verified),
                store.dumps(wallet_to_json(base)),
                store.dumps(wallet_to_json(wallet)),
                state.last_purchase_on,
                state.cursor,
            )
        )
    conn.executemany(UPSERT_CARDS, rows)


__all__ = ["UPSERT_CARDS", "Lot", "apply_card_states", "base_wallet", "rebase"]
