"""Plain-JSON forms of the core's values, for journals, replicas and the sync protocol."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from shared.lots import Allocation, Hold, Lot, LotSource, Wallet


def lot_to_json(lot: Lot) -> dict[str, Any]:
    """A lot as a JSON object."""
    return {
        "id": lot.lot_id,
        "amount": lot.amount_kop,
        "remaining": lot.remaining_kop,
        "created_on": lot.created_on.isoformat(),
        "expires_on": lot.expires_on.isoformat() if lot.expires_on else None,
        "active_from": lot.active_from.isoformat() if lot.active_from else None,
        "source": str(lot.source),
        "ref": lot.source_ref,
    }


def lot_from_json(data: dict[str, Any]) -> Lot:
    """A lot from its JSON object."""
    return Lot(
        lot_id=data["id"],
        amount_kop=int(data["amount"]),
        remaining_kop=int(data["remaining"]),
        created_on=date.fromisoformat(data["created_on"]),
        expires_on=date.fromisoformat(data["expires_on"]) if data.get("expires_on") else None,
        active_from=date.fromisoformat(data["active_from"]) if data.get("active_from") else None,
        source=LotSource(data.get("source", "purchase")),
        source_ref=data.get("ref"),
    )


def wallet_to_json(wallet: Wallet) -> dict[str, Any]:
    """A wallet as a JSON object."""
    return {
        "lots": [lot_to_json(lot) for lot in wallet.lots],
        "debt": wallet.debt_kop,
        "holds": [
            {"id": h.hold_id, "amount": h.amount_kop, "expires_at": h.expires_at.isoformat()}
            for h in wallet.holds
        ],
    }


def wallet_from_json(data: dict[str, Any]) -> Wallet:
    """A wallet from its JSON object."""
    return Wallet(
        lots=tuple(lot_from_json(item) for item in data.get("lots", ())),
        debt_kop=int(data.get("debt", 0)),
        holds=tuple(
            Hold(item["id"], int(item["amount"]), datetime.fromisoformat(item["expires_at"]))
            for item in data.get("holds", ())
        ),
    )


def allocations_to_json(allocations: list[Allocation]) -> list[list[Any]]:
    """Allocations as compact ``[lot_id, amount]`` pairs."""
    return [[a.lot_id, a.amount_kop] for a in allocations]


def allocations_from_json(data: list[list[Any]]) -> list[Allocation]:
    """Allocations from ``[lot_id, amount]`` pairs."""
    return [Allocation(str(lot_id), int(amount)) for lot_id, amount in data]
