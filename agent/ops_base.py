"""What the till's operations share: the card and balance readers, idempotency, the helpers
that turn core values into the till's answers, and the lookups (lookup, calculate, the card's
transactions)."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel
from uuid6 import uuid7

from agent import store
from agent.context import AgentContext, refusal_body
from agent.models import (
    BalanceOut,
    CalculateRequest,
    CalculateResponse,
    CardOut,
    ExpiringOut,
    LineIn,
    LineOut,
    LookupRequest,
    LookupResponse,
    TransactionOut,
    TransactionsResponse,
)
from shared.cards import CardNumberError, normalize_card_number
from shared.effects import (
    SaleFigures,
)
from shared.errors import BonusError, ErrorCode
from shared.journal import (
    Return,
    Sale,
)
from shared.lots import Balance, Wallet, balance
from shared.phones import PhoneError, normalize_phone
from shared.receipts import Line, ReceiptResult, calculate

log = logging.getLogger(__name__)

TRANSACTIONS_LIMIT = 50


def new_op_id() -> str:
    """A time-sortable operation id (UUIDv7)."""
    return str(uuid7())


def _balance_out(b: Balance) -> BalanceOut:
    return BalanceOut(
        available=b.available_kop,
        non_expiring=b.non_expiring_kop,
        expiring=[ExpiringOut(date=day, amount=amount) for day, amount in b.expiring],
        held=b.held_kop,
        debt=b.debt_kop,
        pending=b.pending_kop,
    )


def _card_out(card: store.CardRow) -> CardOut:
    return CardOut(
        number=card.number,
        status="blocked" if card.status == "blocked" else "active",
        phone_last4=card.phone_last4,
        verified=card.verified,
    )


def _lines(lines: list[LineIn]) -> list[Line]:
    return [
        Line(line.line_id, line.sku, line.qty, line.amount, line.vital, line.category)
        for line in lines
    ]


def _line_outs(result: ReceiptResult | SaleFigures) -> list[LineOut]:
    return [
        LineOut(
            line_id=line.line_id,
            accrued=line.accrued_kop,
            redeemed=line.redeemed_kop,
            max_redeem=line.max_redeem_kop,
        )
        for line in result.lines
    ]


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def _card_of(conn: sqlite3.Connection, number: str) -> str:
    """The card a recorded card number now answers as (a merged card as its primary)."""
    found = store.find_card(conn, number)
    return found.number if found is not None else number


def parse_card_ref(raw: str) -> str:
    try:
        return normalize_card_number(raw)
    except CardNumberError as exc:
        raise BonusError(ErrorCode.CARD_NOT_FOUND, reason=str(exc)) from exc


def parse_phone(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except PhoneError as exc:
        raise BonusError(ErrorCode.PHONE_INVALID, reason=str(exc)) from exc


@dataclass(frozen=True, slots=True)
class _SalePlan:
    """A sale that passed its checks: the card, its wallet (without the holds it consumes),
    the figures, and the moment it was checked at."""

    card: store.CardRow
    wallet: Wallet
    lines: tuple[Line, ...]
    figures: SaleFigures
    consumed_holds: tuple[str, ...]
    today: date
    now: datetime


class OperationsBase:
    """The context every operation works in, and what they all read."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    # --- reading ------------------------------------------------------------------------------

    def _card(self, conn: sqlite3.Connection, raw: str) -> store.CardRow:
        card = store.find_card(conn, parse_card_ref(raw))
        if card is None:
            raise BonusError(ErrorCode.CARD_NOT_FOUND)
        if card.status == "blocked":
            raise BonusError(ErrorCode.CARD_BLOCKED)
        return card

    def balance_of(self, wallet: Wallet) -> Balance:
        """A wallet's balance today."""
        return balance(wallet, self.ctx.today(), self.ctx.clock.now())

    async def _card_by_phone(self, phone_hash: str) -> store.CardRow | None:
        if self.ctx.bootstrapping:
            # No phone index while a snapshot is stored: the scan runs in the writer thread.
            return await self.ctx.db.write(lambda conn: store.find_card_by_phone(conn, phone_hash))
        return store.find_card_by_phone(self.ctx.db.reader, phone_hash)

    async def lookup(self, request: LookupRequest) -> LookupResponse:
        """Find a valid card by phone, number or barcode."""
        conn = self.ctx.db.reader
        if request.phone is not None:
            phone10 = parse_phone(request.phone)
            card = await self._card_by_phone(await self.ctx.hash_phone(phone10))
            if card is None:
                raise BonusError(ErrorCode.CARD_NOT_FOUND)
            if card.status == "blocked":
                raise BonusError(ErrorCode.CARD_BLOCKED)
            self.ctx.remember_phone(card.number, phone10)
        else:
            assert request.card is not None
            card = self._card(conn, request.card)
        refusal = self.ctx.redemption_refusal()
        return LookupResponse(
            card=_card_out(card),
            balance=_balance_out(self.balance_of(card.wallet)),
            redemption_allowed=refusal is None,
            redemption_refusal=refusal_body(refusal),
        )

    async def calculate(self, request: CalculateRequest) -> CalculateResponse:
        """What a receipt would accrue and could redeem; no side effects."""
        card = self._card(self.ctx.db.reader, request.card)
        current = self.balance_of(card.wallet)
        refusal = self.ctx.redemption_refusal()
        available = current.available_kop if refusal is None else 0
        result = calculate(_lines(request.lines), self.ctx.settings, available, request.redeem or 0)
        return CalculateResponse(
            accrued=result.accrued_kop,
            max_redeem=result.max_redeem_kop,
            redeem=result.redeemed_kop,
            lines=_line_outs(result),
            balance=_balance_out(current),
            redemption_allowed=refusal is None,
            redemption_refusal=refusal_body(refusal),
            verification_required=self.ctx.settings.redemption_confirmation == "code",
        )

    async def transactions(self, raw_card: str) -> TransactionsResponse:
        """The card's recent operations at this store, newest first."""
        conn = self.ctx.db.reader
        card = self._card(conn, raw_card)
        acked = int(store.get_meta(conn, "acked_seq") or 0)
        out = []
        for entry in store.card_entries(conn, card.number, TRANSACTIONS_LIMIT):
            operation = entry.operation
            accrued = redeemed = amount = 0
            receipt_id: str | None = None
            if isinstance(operation, Sale):
                accrued = operation.claimed_accrued_kop
                redeemed = operation.claimed_redeemed_kop
                amount = accrued - redeemed
                receipt_id = operation.receipt_id
            elif isinstance(operation, Return):
                amount = operation.redemption_refunded_kop - operation.accrual_reversed_kop
                receipt_id = operation.receipt_id
            out.append(
                TransactionOut(
                    operation_id=entry.op_id,
                    kind=entry.kind,
                    at=entry.created_at,
                    amount=amount,
                    accrued=accrued,
                    redeemed=redeemed,
                    receipt_id=receipt_id,
                    synced=entry.seq <= acked,
                )
            )
        return TransactionsResponse(card=card.number, transactions=out)

    # --- idempotency --------------------------------------------------------------------------

    @staticmethod
    def _replay(
        conn: sqlite3.Connection, kind: str, key: str, fingerprint: str
    ) -> dict[str, Any] | None:
        found = store.find_answer(conn, kind, key)
        if found is None:
            return None
        recorded_hash, response = found
        if recorded_hash != fingerprint:
            raise BonusError(ErrorCode.IDEMPOTENCY_CONFLICT, kind=kind, key=key)
        return response

    def _refuse_new_when_closed(
        self, kind: str | None = None, key: str = "", fingerprint: str = ""
    ) -> None:
        """A store being closed records nothing new; a retry of what it recorded before still
        gets its first answer (checked here for ``kind``, by the caller otherwise)."""
        refusal = self.ctx.closed_refusal()
        if refusal is None:
            return
        if kind is not None and self._replay(self.ctx.db.reader, kind, key, fingerprint):
            return
        raise refusal

    def _use_verification(self, conn: sqlite3.Connection, verification_id: str, card: str) -> None:
        verification = store.find_verification(conn, verification_id)
        if (
            verification is None
            or _card_of(conn, verification.card) != card
            or verification.purpose != "redemption"
        ):
            raise BonusError(ErrorCode.VERIFICATION_REQUIRED, reason="no such confirmation")
        if verification.confirmed_at is None:
            raise BonusError(ErrorCode.VERIFICATION_REQUIRED, reason="code not confirmed")
        if verification.used_by is not None:
            raise BonusError(ErrorCode.VERIFICATION_REQUIRED, reason="code already used")
        if verification.expires_at <= self.ctx.clock.now():
            raise BonusError(ErrorCode.VERIFICATION_EXPIRED)
