"""The snapshot's plain-dict lines are the card state messages, field for field."""

from __future__ import annotations

import typing
from typing import Any, NotRequired

import pytest
from pydantic import BaseModel

from shared.protocol import CardLine, CardState, HoldLine, HoldState, LotLine, LotState

PAIRS = [(CardLine, CardState), (LotLine, LotState), (HoldLine, HoldState)]
#: The messages a line's fields name, and their dict forms.
AS_LINES: dict[Any, Any] = {
    list[LotState]: list[LotLine],
    list[HoldState]: list[HoldLine],
}


@pytest.mark.parametrize(("line", "model"), PAIRS, ids=lambda value: value.__name__)
def test_a_line_has_the_fields_of_its_message(line: Any, model: type[BaseModel]) -> None:
    hints = typing.get_type_hints(line, include_extras=True)
    assert set(hints) == set(model.model_fields)
    optional = {name for name, hint in hints.items() if typing.get_origin(hint) is NotRequired}
    assert optional == {
        name for name, field in model.model_fields.items() if not field.is_required()
    }
    for name, field in model.model_fields.items():
        hint = typing.get_args(hints[name])[0] if name in optional else hints[name]
        assert hint == AS_LINES.get(field.annotation, field.annotation), name
    assert line.__pydantic_config__["extra"] == "forbid"
