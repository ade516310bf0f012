"""The replica of card states from the central server, with this store's pending operations
applied on top (rebased), so that a till sees the right balance before and after a sync."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from agent import store
from shared.codec import wallet_from_json, wallet_to_json
from shared.effects import (
    claimed_reversal,
    claimed_sale_figures,
    hold_effect,
    release_effect,
    sale_effect,
)
from shared.journal import HoldPlaced, HoldReleased, Return, Sale, accrual_lot_id
from shared.lots import Wallet
from shared.protocol import CardState, auth_hold_id

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


def rebase(wallet: Wallet, entry: store.JournalEntry, now: datetime, store_id: str) -> Wallet:
    """Apply one pending operation's effects on top of a wallet from the central server, with
    the figures this store's commit recorded and the same functions the central server uses.

    A sale ends the central server's authorisation hold of its receipt even when the store did
    not wait for the answer (``store_id`` names it): the sale spends those points itself.
    """
    operation = entry.operation
    if isinstance(operation, Sale):
        consumed = [auth_hold_id(f"{store_id}:{operation.receipt_id}")]
        if operation.hold_id:
            consumed.append(operation.hold_id)
        if operation.authorization_id:
            # The central server set the redeemed points aside for this very sale.
            consumed.append(auth_hold_id(operation.authorization_id))
        return sale_effect(
            wallet,
            operation,
            claimed_sale_figures(operation),
            lot_id=accrual_lot_id(entry.op_id),
            now=now,
            consumed_holds=consumed,
        ).wallet
    if isinstance(operation, Return):
        return claimed_reversal(wallet, operation).wallet
    if isinstance(operation, HoldPlaced):
        return hold_effect(wallet, operation)
    if isinstance(operation, HoldReleased):
        return release_effect(wallet, operation.hold_id)
    return wallet


def apply_card_states(
    conn: sqlite3.Connection,
    states: list[CardState],
    acked_seq: int,
    now: datetime,
    store_id: str,
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
            wallet = rebase(wallet, entry, now, store_id)
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


__all__ = ["UPSERT_CARDS", "apply_card_states", "base_wallet", "rebase"]
