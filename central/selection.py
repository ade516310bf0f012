"""Which cards an office operation or search means: an explicit list, or a filter for the
office's real questions (non-expiring sum, expiring sum, last purchase, status)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from central import schema
from shared.amounts import AmountIn, DayIn
from shared.money import kop_to_decimal
from shared.phones import PhoneError, normalize_phone

#: Most card numbers an explicit selection may name.
SELECTION_CARDS_MAX = 100_000


class CardFilter(BaseModel):
    """A filter over cards; every condition given must hold."""

    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(None, max_length=40, description="Card number, barcode or phone.")
    non_expiring_min: AmountIn | None = None
    non_expiring_max: AmountIn | None = None
    expiring_min: AmountIn | None = None
    expiring_max: AmountIn | None = None
    last_purchase_before: DayIn | None = Field(
        None, description="Last purchase-related transaction strictly before this day (or none)."
    )
    last_purchase_after: DayIn | None = Field(
        None, description="Last purchase on or after this day."
    )
    status: Literal["active", "blocked"] | None = None


class Selection(BaseModel):
    """Exactly one of: explicit card numbers, or a filter."""

    model_config = ConfigDict(extra="forbid")

    cards: Annotated[list[str], Field(min_length=1, max_length=SELECTION_CARDS_MAX)] | None = None
    filter: CardFilter | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Selection:
        if (self.cards is None) == (self.filter is None):
            raise ValueError("give exactly one of cards or filter")
        return self

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Selection:
        """A selection as ``model_dump(mode="json")`` stored it: its amounts are kopecks there,
        and roubles as a request gives them."""
        if data.get("filter"):
            stored = dict(data["filter"])
            for name in _AMOUNTS:
                if stored.get(name) is not None:
                    stored[name] = str(kop_to_decimal(int(stored[name])))
            data = {**data, "filter": stored}
        return cls.model_validate(data)


_AMOUNTS = ("non_expiring_min", "non_expiring_max", "expiring_min", "expiring_max")


#: A condition on a card-number column: the cards a query is limited to (a chunk of an office
#: operation), given for each table the query reads.
CardsIn = Callable[[sa.ColumnElement[Any]], sa.ColumnElement[bool]]


def _sum_of_lots(expiring: bool, today: date, within: CardsIn | None) -> sa.Subquery:
    lots = schema.lots
    condition = (
        sa.and_(lots.c.expires_on.is_not(None), lots.c.expires_on >= today)
        if expiring
        else lots.c.expires_on.is_(None)
    )
    if within is not None:
        condition = sa.and_(condition, within(lots.c.card))
    return (
        sa.select(lots.c.card, sa.func.sum(lots.c.remaining_kop).label("total"))
        .where(condition, lots.c.remaining_kop > 0)
        .group_by(lots.c.card)
        .subquery("expiring" if expiring else "non_expiring")
    )


def cards_query(
    selection: Selection, today: date, within: CardsIn | None = None
) -> sa.Select[tuple[str]]:
    """A query of the selected card numbers (merged cards never count); ``within`` limits it,
    and the sums it aggregates, to some cards."""
    cards = schema.cards
    limit = sa.true() if within is None else within(cards.c.number)
    if selection.cards is not None:
        return sa.select(cards.c.number).where(
            cards.c.number.in_(selection.cards), cards.c.status != "merged", limit
        )
    assert selection.filter is not None
    f = selection.filter
    query = sa.select(cards.c.number).where(cards.c.status != "merged", limit)
    if f.query:
        text = f.query.strip()
        conditions = [cards.c.number == text, cards.c.barcode == text]
        with contextlib.suppress(PhoneError):
            conditions.append(cards.c.phone == normalize_phone(text))
        query = query.where(sa.or_(*conditions))
    if f.status:
        query = query.where(cards.c.status == f.status)
    if f.last_purchase_before:
        query = query.where(
            sa.or_(
                cards.c.last_purchase_on.is_(None),
                cards.c.last_purchase_on < f.last_purchase_before,
            )
        )
    if f.last_purchase_after:
        query = query.where(cards.c.last_purchase_on >= f.last_purchase_after)
    for expiring, low, high in (
        (False, f.non_expiring_min, f.non_expiring_max),
        (True, f.expiring_min, f.expiring_max),
    ):
        if low is None and high is None:
            continue
        sums = _sum_of_lots(expiring, today, within)
        query = query.outerjoin(sums, sums.c.card == cards.c.number)
        total = sa.func.coalesce(sums.c.total, 0)
        if low is not None:
            query = query.where(total >= low)
        if high is not None:
            query = query.where(total <= high)
    return query
