"""Confirmation codes: sending through the configured provider, limits, and confirmation.

Only a keyed hash of each code is stored, and no code is ever written to a log.  A code lives
``verification_code_ttl_s``, allows ``verification_attempts_max`` wrong entries, can be resent
after ``verification_resend_after_s``, and a phone gets at most
``verification_codes_per_phone_hour_max`` codes an hour.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sqlite3
from datetime import timedelta

from agent import store
from agent.context import AgentContext
from agent.models import ConfirmRequest, ConfirmResponse, VerificationOut, VerificationRequest
from agent.operations import new_op_id, parse_card_ref, parse_phone
from agent.providers import MessageProvider, ProviderError
from shared.errors import BonusError, ErrorCode
from shared.journal import Verification

log = logging.getLogger(__name__)

CODE_DIGITS = 4


class Verifications:
    """Sends and confirms codes for registration and redemption."""

    def __init__(self, ctx: AgentContext, provider: MessageProvider) -> None:
        self.ctx = ctx
        self.provider = provider
        #: Phones (keyed hashes) with a code being sent right now. The limits are checked before
        #: the send and recorded after it, so a second request for the same phone meanwhile is
        #: refused rather than let through both limits.
        self._sending: set[str] = set()

    def _code_hash(self, verification_id: str, code: str) -> str:
        message = f"{verification_id}:{code}".encode()
        return hmac.new(self.ctx.code_key, message, hashlib.sha256).hexdigest()

    async def create(self, request: VerificationRequest) -> VerificationOut:
        """Send a code to the card's phone and record the pending verification."""
        ctx = self.ctx
        settings = ctx.settings
        conn = ctx.db.reader
        card = store.find_card(conn, parse_card_ref(request.card))
        if card is None:
            raise BonusError(ErrorCode.CARD_NOT_FOUND)
        if card.status == "blocked":
            raise BonusError(ErrorCode.CARD_BLOCKED)
        if request.phone is not None:
            phone10 = parse_phone(request.phone)
            phone_hash = await ctx.hash_phone(phone10)
            if phone_hash != card.phone_hash:
                raise BonusError(ErrorCode.PHONE_INVALID, reason="not the phone of this card")
        else:
            phone10 = ctx.known_phone(card.number) or ""
            if not phone10:
                raise BonusError(
                    ErrorCode.VALIDATION_ERROR,
                    "Нужен номер телефона покупателя: найдите карту по телефону или укажите его",
                    field="phone",
                )
            phone_hash = await ctx.hash_phone(phone10)
        if phone_hash in self._sending:
            raise BonusError(
                ErrorCode.VERIFICATION_RATE_LIMITED,
                reason="a code is being sent",
                retry_after_s=settings.verification_resend_after_s,
            )
        self._sending.add(phone_hash)
        try:
            return await self._send(request, card.number, phone10, phone_hash)
        finally:
            self._sending.discard(phone_hash)

    async def _send(
        self, request: VerificationRequest, card_number: str, phone10: str, phone_hash: str
    ) -> VerificationOut:
        ctx = self.ctx
        settings = ctx.settings
        conn = ctx.db.reader
        now = ctx.clock.now()
        previous = store.last_verification(conn, card_number, request.purpose)
        if previous is not None:
            wait_s = (
                settings.verification_resend_after_s - (now - previous.created_at).total_seconds()
            )
            if wait_s > 0:
                raise BonusError(ErrorCode.VERIFICATION_RATE_LIMITED, retry_after_s=int(wait_s) + 1)
        sent = store.codes_sent_since(conn, phone_hash, now - timedelta(hours=1))
        if sent >= settings.verification_codes_per_phone_hour_max:
            raise BonusError(ErrorCode.VERIFICATION_RATE_LIMITED, reason="hourly limit")
        verification_id = new_op_id()
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        try:
            code = await self.provider.send_code(phone10, code, request.purpose, verification_id)
        except ProviderError as exc:
            ctx.metrics.provider_failed(self.provider.name, exc.reason)
            code_for = (
                ErrorCode.PROVIDER_NO_BALANCE
                if exc.reason == "no_balance"
                else ErrorCode.PROVIDER_UNAVAILABLE
            )
            raise BonusError(code_for, provider=self.provider.name) from exc
        expires_at = now + timedelta(seconds=settings.verification_code_ttl_s)

        def _insert(wconn: sqlite3.Connection) -> None:
            store.insert_verification(
                wconn,
                store.VerificationRow(
                    verification_id=verification_id,
                    card=card_number,
                    phone_hash=phone_hash,
                    purpose=request.purpose,
                    receipt_id=request.receipt_id,
                    channel=self.provider.channel,
                    code_hash=self._code_hash(verification_id, code),
                    created_at=now,
                    expires_at=expires_at,
                    attempts_left=settings.verification_attempts_max,
                    confirmed_at=None,
                    used_by=None,
                ),
            )

        await ctx.db.write(_insert)
        log.info(
            "code sent for card %s (%s) by %s", card_number, request.purpose, self.provider.name
        )
        return VerificationOut(
            verification_id=verification_id,
            channel=self.provider.channel,
            expires_at=expires_at,
            resend_after_s=settings.verification_resend_after_s,
            skip_after_s=settings.registration_code_skip_after_s
            if request.purpose == "registration"
            else None,
        )

    async def confirm(self, verification_id: str, request: ConfirmRequest) -> ConfirmResponse:
        """Check a code the customer read out; a wrong code uses up one attempt."""
        now = self.ctx.clock.now()

        def _confirm(conn: sqlite3.Connection) -> BonusError | None:
            verification = store.find_verification(conn, verification_id)
            if verification is None:
                raise BonusError(ErrorCode.VERIFICATION_NOT_FOUND)
            if verification.confirmed_at is not None:
                return None
            if verification.expires_at <= now:
                raise BonusError(ErrorCode.VERIFICATION_EXPIRED)
            if verification.attempts_left <= 0:
                raise BonusError(ErrorCode.VERIFICATION_INVALID, attempts_left=0)
            expected = verification.code_hash
            if not hmac.compare_digest(expected, self._code_hash(verification_id, request.code)):
                left = verification.attempts_left - 1
                store.update_verification(conn, verification_id, attempts_left=left)
                # The attempt must count even though the request is refused: it is committed,
                # and the refusal is raised once it is.
                return BonusError(ErrorCode.VERIFICATION_INVALID, attempts_left=left)
            store.update_verification(conn, verification_id, confirmed_at=now)
            if verification.purpose == "registration":
                store.set_verified(conn, verification.card)
                store.append_entry(
                    conn,
                    op_id=new_op_id(),
                    idem_key=verification_id,
                    request_hash="",
                    operation=Verification(card=verification.card),
                    response={},
                    created_at=now,
                )
            return None

        wrong_code = await self.ctx.db.write(_confirm)
        if wrong_code is not None:
            raise wrong_code
        return ConfirmResponse(verification_id=verification_id, confirmed=True)
