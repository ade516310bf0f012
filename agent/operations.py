"""The till's operations: lookup, calculate, sale, return, holds, registration, transactions.

Each mutating operation checks its idempotency key, computes with the pure core, and records
its journal entry, its effects and the answer to the till in one write transaction; a retry
returns the recorded answer.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel
from uuid6 import uuid7

from agent import store
from agent.authorization import authorize_online, check_offline_caps
from agent.context import AgentContext, refusal_body, request_hash
from agent.models import (
    BalanceOut,
    CalculateRequest,
    CalculateResponse,
    CardOut,
    ExpiringOut,
    HoldRequest,
    HoldResponse,
    LineIn,
    LineOut,
    LookupRequest,
    LookupResponse,
    RegisterRequest,
    RegisterResponse,
    ReturnLineOut,
    ReturnRequest,
    ReturnResponse,
    SaleRequest,
    SaleResponse,
    TransactionOut,
    TransactionsResponse,
)
from shared.cards import CardNumberError, new_virtual_card_number, normalize_card_number
from shared.codec import allocations_from_json, allocations_to_json
from shared.effects import (
    SaleFigures,
    SoldReceipt,
    hold_effect,
    receipt_figures,
    recorded_lines,
    release_effect,
    return_effect,
    return_plan,
    sale_effect,
    sold_line_rows,
    sold_lines,
)
from shared.errors import BonusError, ErrorCode
from shared.journal import (
    Consents,
    HoldPlaced,
    HoldReleased,
    LotAmount,
    Profile,
    Registration,
    Return,
    ReturnLine,
    Sale,
    accrual_lot_id,
)
from shared.lots import Balance, Wallet, balance
from shared.phones import PhoneError, normalize_phone, phone_last4
from shared.protocol import auth_hold_id
from shared.receipts import Line, ReceiptResult, calculate, max_redeem
from shared.returns import ReturnExceedsSale

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


class Operations:
    """The agent's operations over its context."""

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

    # --- sale ---------------------------------------------------------------------------------

    async def sale(self, request: SaleRequest) -> dict[str, Any]:
        """Commit a sale: accrual and redemption, atomic and idempotent on the receipt id."""
        body = request.model_dump(mode="json")
        fingerprint = request_hash(body)
        self._refuse_new_when_closed("sale", request.receipt_id, fingerprint)
        if request.redeem > 0:
            # A retry answers as the first time, even once the sync has gone stale since; a
            # sale without redemption has nothing to check first and is replayed by the writer.
            replayed = self._replay(self.ctx.db.reader, "sale", request.receipt_id, fingerprint)
            if replayed is not None:
                return replayed
            await self.ctx.require_fresh()
        needs_code = self.ctx.settings.redemption_confirmation == "code"
        # A hold was confirmed by a code when it was placed; the sale consuming it needs none
        # for what the hold covers (checked with the hold itself, in the transaction).
        if (
            request.redeem > 0
            and needs_code
            and request.verification_id is None
            and request.hold_id is None
        ):
            raise BonusError(ErrorCode.VERIFICATION_REQUIRED)
        authorization_id: str | None = None
        if request.redeem > 0 and self.ctx.central is not None:
            # The store's own checks first (a sale it refuses sets nothing aside anywhere);
            # then, while the central server answers, the chain-wide balance decides (two
            # stores cannot spend the same points); otherwise the offline caps.
            plan = self._plan_sale(self.ctx.db.reader, request, online=True)
            decision = await authorize_online(
                self.ctx,
                plan.card.number,
                request.redeem,
                f"{self.ctx.config.store_id}:{request.receipt_id}",
                request.hold_id,
            )
            authorization_id = decision.authorization_id

        def _write(conn: sqlite3.Connection) -> Any:
            replayed = self._replay(conn, "sale", request.receipt_id, fingerprint)
            if replayed is not None:
                return replayed
            return self._commit_sale(conn, request, fingerprint, authorization_id)

        return await self.ctx.db.write(_write)

    def _plan_sale(
        self, conn: sqlite3.Connection, request: SaleRequest, *, online: bool
    ) -> _SalePlan:
        """Every check of a sale, without writing: the card, its hold and confirmation, the
        offline caps (unless ``online``: authorised by the central server) and the amounts."""
        ctx = self.ctx
        card = self._card(conn, request.card)
        now = ctx.clock.now()
        today = ctx.today()
        # The central server's authorisation of this very receipt (asked now or by an earlier
        # try) sets aside the points this sale redeems: they are not counted twice.
        own_authorization = auth_hold_id(f"{ctx.config.store_id}:{request.receipt_id}")
        consumed = [own_authorization]
        wallet = release_effect(card.wallet, own_authorization)
        held_kop = 0
        if request.hold_id is not None:
            wallet, held_kop = self._take_hold(conn, request.hold_id, card.number, now)
            wallet = release_effect(wallet, own_authorization)
            consumed.append(request.hold_id)
        if request.redeem > 0 and ctx.settings.redemption_confirmation == "code":
            if request.verification_id is not None:
                self._use_verification(conn, request.verification_id, card.number)
            elif request.redeem > held_kop:
                raise BonusError(ErrorCode.VERIFICATION_REQUIRED, reason="more than the hold")
        if request.redeem > 0 and not online:
            check_offline_caps(ctx, conn, card.number, request.redeem, today)
        current = balance(wallet, today, now)
        lines = _lines(request.lines)
        figures = receipt_figures(lines, request.redeem, today, ctx.settings, current.available_kop)
        if request.redeem > 0 and figures.redeemed_kop != request.redeem:
            if request.redeem > current.available_kop:
                raise BonusError(
                    ErrorCode.INSUFFICIENT_BALANCE,
                    available=f"{current.available_kop / 100:.2f}",
                )
            most = max_redeem(lines, ctx.settings, current.available_kop)
            raise BonusError(ErrorCode.REDEMPTION_EXCEEDS_MAX, max_redeem=f"{most / 100:.2f}")
        return _SalePlan(card, wallet, tuple(lines), figures, tuple(consumed), today, now)

    def _commit_sale(
        self,
        conn: sqlite3.Connection,
        request: SaleRequest,
        fingerprint: str,
        authorization_id: str | None,
    ) -> dict[str, Any]:
        ctx = self.ctx
        plan = self._plan_sale(conn, request, online=authorization_id is not None)
        card, figures, now = plan.card, plan.figures, plan.now
        op_id = new_op_id()
        sale = Sale(
            card=card.number,
            receipt_id=request.receipt_id,
            day=plan.today,
            lines=recorded_lines(plan.lines, figures),
            redeem_kop=request.redeem,
            hold_id=request.hold_id,
            authorization_id=authorization_id,
            cashier=request.cashier,
            settings_version=ctx.settings.version,
            accrual_expires_on=figures.accrual_expires_on,
            accrual_active_from=figures.accrual_active_from,
        )
        effect = sale_effect(
            plan.wallet,
            sale,
            figures,
            lot_id=accrual_lot_id(op_id),
            now=now,
            consumed_holds=plan.consumed_holds,
        )
        assert effect.debt_added_kop == 0, "a store redeems only what the balance covers"
        response = SaleResponse(
            receipt_id=request.receipt_id,
            operation_id=op_id,
            accrued=figures.accrued_kop,
            redeemed=figures.redeemed_kop,
            lines=_line_outs(figures),
            balance=_balance_out(balance(effect.wallet, plan.today, now)),
        )
        seq = store.append_entry(
            conn,
            op_id=op_id,
            idem_key=request.receipt_id,
            request_hash=fingerprint,
            operation=sale,
            response=_dump(response),
            created_at=now,
        )
        store.save_wallet(conn, card.number, effect.wallet)
        store.insert_receipt(
            conn,
            store.ReceiptRow(
                receipt_id=request.receipt_id,
                card=card.number,
                seq=seq,
                lines=sold_line_rows(sale, figures),
                allocations=allocations_to_json(list(effect.allocations)),
                accrual_lot=effect.accrual_lot.lot_id if effect.accrual_lot else None,
                returned={},
                refunded_kop=0,
            ),
        )
        if request.hold_id is not None:
            store.set_hold_state(conn, request.hold_id, "consumed")
        if request.verification_id is not None and request.redeem > 0:
            store.update_verification(conn, request.verification_id, used_by=op_id)
        return _dump(response)

    def _take_hold(
        self, conn: sqlite3.Connection, hold_id: str, card: str, now: datetime
    ) -> tuple[Wallet, int]:
        """The card's wallet without the hold, and the amount the hold set aside."""
        hold = store.find_hold(conn, hold_id)
        if hold is None or _card_of(conn, hold.card) != card:
            raise BonusError(ErrorCode.HOLD_NOT_FOUND)
        if hold.state != "active":
            raise BonusError(ErrorCode.HOLD_RESOLVED, state=hold.state)
        if hold.expires_at <= now:
            raise BonusError(ErrorCode.HOLD_EXPIRED)
        found = store.find_card(conn, card)
        assert found is not None
        return release_effect(found.wallet, hold_id), hold.amount_kop

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

    # --- return -------------------------------------------------------------------------------

    async def return_(self, request: ReturnRequest) -> dict[str, Any]:
        """Reverse a receipt's accrual and refund its redemption, wholly or in part."""
        fingerprint = request_hash(request.model_dump(mode="json"))
        replayed = self._replay(self.ctx.db.reader, "return", request.return_id, fingerprint)
        if replayed is not None:
            return replayed
        self._refuse_new_when_closed()

        def _write(conn: sqlite3.Connection) -> Any:
            replayed = self._replay(conn, "return", request.return_id, fingerprint)
            if replayed is not None:
                return replayed
            return self._commit_return(conn, request, fingerprint)

        return await self.ctx.db.write(_write)

    def _commit_return(
        self, conn: sqlite3.Connection, request: ReturnRequest, fingerprint: str
    ) -> dict[str, Any]:
        ctx = self.ctx
        receipt = store.find_receipt(conn, request.receipt_id)
        if receipt is None:
            raise BonusError(ErrorCode.RECEIPT_NOT_FOUND)
        found = store.find_card(conn, receipt.card)
        assert found is not None, "a receipt's card is in the replica"
        sold = SoldReceipt(
            receipt_id=receipt.receipt_id,
            card=receipt.card,
            lines=sold_lines(receipt.lines),
            allocations=tuple(allocations_from_json(receipt.allocations)),
            accrual_lot=receipt.accrual_lot,
            returned={line_id: Decimal(qty) for line_id, qty in receipt.returned.items()},
            refunded_kop=receipt.refunded_kop,
        )
        requested = (
            None if request.lines is None else {line.line_id: line.qty for line in request.lines}
        )
        try:
            plan = return_plan(sold, requested)
        except ReturnExceedsSale as exc:
            raise BonusError(ErrorCode.RETURN_EXCEEDS_SALE, reason=str(exc)) from exc
        now = ctx.clock.now()
        today = ctx.today()
        op_id = new_op_id()
        effect = return_effect(found.wallet, sold, plan, day=today, refund_lot_id=f"{op_id}:r")
        response = ReturnResponse(
            return_id=request.return_id,
            receipt_id=request.receipt_id,
            operation_id=op_id,
            accrual_reversed=plan.accrual_reversed_kop,
            redemption_refunded=plan.redemption_refunded_kop,
            debt_added=effect.reversal.debt_added_kop,
            lines=[
                ReturnLineOut(
                    line_id=line.line_id,
                    qty=line.qty,
                    accrual_reversed=line.accrual_reversed_kop,
                    redemption_refunded=line.redemption_refunded_kop,
                )
                for line in plan.lines
            ],
            balance=_balance_out(balance(effect.wallet, today, now)),
        )
        operation = Return(
            card=receipt.card,
            receipt_id=request.receipt_id,
            return_id=request.return_id,
            day=today,
            lines=tuple(ReturnLine(line_id=line.line_id, qty=line.qty) for line in plan.lines),
            accrual_lot=receipt.accrual_lot,
            accrual_reversed_kop=plan.accrual_reversed_kop,
            redemption_refunded_kop=plan.redemption_refunded_kop,
            refund_lots=tuple(
                LotAmount(lot_id=given.lot_id, amount_kop=given.amount_kop)
                for given in effect.given
            ),
        )
        store.append_entry(
            conn,
            op_id=op_id,
            idem_key=request.return_id,
            request_hash=fingerprint,
            operation=operation,
            response=_dump(response),
            created_at=now,
        )
        store.save_wallet(conn, receipt.card, effect.wallet)
        store.update_receipt_returns(
            conn,
            request.receipt_id,
            {line_id: str(qty) for line_id, qty in effect.receipt.returned.items()},
            effect.receipt.refunded_kop,
        )
        return _dump(response)

    # --- holds --------------------------------------------------------------------------------

    async def hold(self, request: HoldRequest) -> dict[str, Any]:
        """Set points aside for an order, idempotent on the hold id."""
        fingerprint = request_hash(request.model_dump(mode="json"))
        replayed = self._replay(self.ctx.db.reader, "hold", request.hold_id, fingerprint)
        if replayed is not None:
            return replayed
        self._refuse_new_when_closed()
        if request.amount <= 0:
            raise BonusError(ErrorCode.VALIDATION_ERROR, field="amount", reason="must be positive")
        if request.ttl_s > self.ctx.settings.hold_ttl_max_s:
            raise BonusError(
                ErrorCode.VALIDATION_ERROR, field="ttl_s", max=self.ctx.settings.hold_ttl_max_s
            )
        await self.ctx.require_fresh()

        def _write(conn: sqlite3.Connection) -> Any:
            replayed = self._replay(conn, "hold", request.hold_id, fingerprint)
            if replayed is not None:
                return replayed
            card = self._card(conn, request.card)
            if self.ctx.settings.redemption_confirmation == "code":
                if request.verification_id is None:
                    raise BonusError(ErrorCode.VERIFICATION_REQUIRED)
                self._use_verification(conn, request.verification_id, card.number)
            now = self.ctx.clock.now()
            today = self.ctx.today()
            expires_at = now + timedelta(seconds=request.ttl_s)
            available = balance(card.wallet, today, now).available_kop
            if request.amount > available:
                raise BonusError(ErrorCode.INSUFFICIENT_BALANCE, available=f"{available / 100:.2f}")
            operation = HoldPlaced(
                card=card.number,
                hold_id=request.hold_id,
                amount_kop=request.amount,
                expires_at=expires_at,
            )
            wallet = hold_effect(card.wallet, operation)
            op_id = new_op_id()
            response = HoldResponse(
                hold_id=request.hold_id,
                card=card.number,
                amount=request.amount,
                expires_at=expires_at,
                state="active",
                balance=_balance_out(balance(wallet, today, now)),
            )
            seq = store.append_entry(
                conn,
                op_id=op_id,
                idem_key=request.hold_id,
                request_hash=fingerprint,
                operation=operation,
                response=_dump(response),
                created_at=now,
            )
            store.save_wallet(conn, card.number, wallet)
            store.insert_hold(
                conn,
                store.HoldRow(
                    request.hold_id, card.number, request.amount, expires_at, "active", seq
                ),
            )
            if request.verification_id is not None:
                store.update_verification(conn, request.verification_id, used_by=op_id)
            return _dump(response)

        return await self.ctx.db.write(_write)

    async def release_hold(self, hold_id: str) -> dict[str, Any]:
        """Release a hold early; releasing it again answers the same."""

        def _write(conn: sqlite3.Connection) -> Any:
            hold = store.find_hold(conn, hold_id)
            if hold is None:
                raise BonusError(ErrorCode.HOLD_NOT_FOUND)
            if hold.state == "consumed":
                raise BonusError(ErrorCode.HOLD_RESOLVED, state=hold.state)
            found = store.find_card(conn, hold.card)
            assert found is not None
            now = self.ctx.clock.now()
            wallet = release_effect(found.wallet, hold_id)
            state = hold.state
            if state == "active":
                ended: Literal["released", "expired"] = (
                    "released" if hold.expires_at > now else "expired"
                )
                state = ended
                store.append_entry(
                    conn,
                    op_id=new_op_id(),
                    idem_key=hold_id,
                    request_hash="",
                    operation=HoldReleased(card=hold.card, hold_id=hold_id, state=ended),
                    response={},
                    created_at=now,
                )
                store.set_hold_state(conn, hold_id, state)
                store.save_wallet(conn, hold.card, wallet)
            response = HoldResponse(
                hold_id=hold_id,
                card=hold.card,
                amount=hold.amount_kop,
                expires_at=hold.expires_at,
                state=state,
                balance=_balance_out(balance(wallet, self.ctx.today(), now)),
            )
            return _dump(response)

        return await self.ctx.db.write(_write)

    # --- registration -------------------------------------------------------------------------

    async def register(self, request: RegisterRequest) -> tuple[RegisterResponse, bool]:
        """Register a customer; a known phone returns its existing card.

        Returns the answer and whether a new card was created.
        """
        phone10 = parse_phone(request.phone)
        if not request.consents.personal_data:
            raise BonusError(ErrorCode.CONSENT_REQUIRED)
        self._refuse_new_when_closed()
        phone_hash = await self.ctx.hash_phone(phone10)
        physical = parse_card_ref(request.card) if request.card is not None else None

        def _write(conn: sqlite3.Connection) -> tuple[RegisterResponse, bool]:
            existing = store.find_card_by_phone(conn, phone_hash)
            if existing is not None:
                return self._registered(existing, created=False), False
            if physical is not None:
                if store.find_card(conn, physical) is not None:
                    raise BonusError(ErrorCode.CARD_EXISTS)
                number = physical
            else:
                number = new_virtual_card_number()
                while store.find_card(conn, number) is not None:
                    number = new_virtual_card_number()
            store.insert_card(conn, number, phone_hash, phone_last4(phone10))
            now = self.ctx.clock.now()
            operation = Registration(
                card=number,
                phone=phone10,
                virtual=physical is None,
                profile=(
                    Profile.model_validate(request.profile.model_dump())
                    if request.profile
                    else None
                ),
                consents=Consents.model_validate(request.consents.model_dump()),
            )
            card = store.find_card(conn, number)
            assert card is not None
            response = self._registered(card, created=True)
            store.append_entry(
                conn,
                op_id=new_op_id(),
                idem_key=number,
                request_hash=request_hash(operation.model_dump(mode="json")),
                operation=operation,
                response=_dump(response),
                created_at=now,
            )
            return response, True

        response, created = await self.ctx.db.write(_write)
        self.ctx.remember_phone(response.card.number, phone10)
        return response, created

    def _registered(self, card: store.CardRow, *, created: bool) -> RegisterResponse:
        return RegisterResponse(
            card=_card_out(card),
            balance=_balance_out(self.balance_of(card.wallet)),
            created=created,
            verification=None,
        )
