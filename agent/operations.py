"""The till's operations: lookup, calculate, sale, return, holds, registration, transactions.

Each mutating operation checks its idempotency key, computes with the pure core, and records
its journal entry, its effects and the answer to the till in one write transaction; a retry
returns the recorded answer.  What they share is in ``ops_base.py``; each kind in a module of
its own (``ops_sale.py``, ``ops_return.py``, ``ops_holds.py``, ``ops_registration.py``).
"""

from __future__ import annotations

from agent.ops_base import TRANSACTIONS_LIMIT, new_op_id, parse_card_ref, parse_phone
from agent.ops_holds import HoldOperations
from agent.ops_registration import RegistrationOperations
from agent.ops_return import ReturnOperations
from agent.ops_sale import SaleOperations

__all__ = ["TRANSACTIONS_LIMIT", "Operations", "new_op_id", "parse_card_ref", "parse_phone"]


class Operations(SaleOperations, ReturnOperations, HoldOperations, RegistrationOperations):
    """Every operation of the till API, over one agent context."""
