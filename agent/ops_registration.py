"""Registration of a customer: a known phone returns its card."""

from __future__ import annotations

import logging
import sqlite3

from agent import store
from agent.context import request_hash
from agent.models import (
    RegisterRequest,
    RegisterResponse,
)
from agent.ops_base import (
    OperationsBase,
    _balance_out,
    _card_out,
    _dump,
    new_op_id,
    parse_card_ref,
    parse_phone,
)
from shared.cards import new_virtual_card_number
from shared.errors import BonusError, ErrorCode
from shared.journal import (
    Consents,
    Profile,
    Registration,
)
from shared.phones import phone_last4

log = logging.getLogger(__name__)


class RegistrationOperations(OperationsBase):
    """Registrations."""

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
