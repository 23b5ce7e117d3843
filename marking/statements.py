"""Building blocks for the statements built once and run on every claim and submit."""
from __future__ import annotations

import re
from typing import Iterable

from sqlalchemy import literal_column
from sqlalchemy.sql.elements import ColumnElement

_CONSTANT = re.compile(r"^[a-z][a-z0-9_]*$")


def one_of(column: ColumnElement, values: Iterable[str]) -> ColumnElement:
    """``column IN ('first', 'second')`` with the constants written into the SQL text.

    ``column.in_(values)`` binds an *expanding* parameter: on every execution SQLAlchemy
    renders the list into the statement's SQL text again — a pass over the whole text per
    list, and the claim's facts statement has seven. The slots, duties and statuses the
    hot-path statements filter on are code constants, fixed when the statement is built,
    so they are written in once (and the planner sees them). Only lower-case identifiers
    are accepted: nothing that needs quoting ever reaches the SQL text this way.
    """
    values = tuple(values)
    if not values:
        raise ValueError("one_of needs at least one value")
    for value in values:
        if not isinstance(value, str) or not _CONSTANT.match(value):
            raise ValueError(f"one_of takes lower-case identifiers only, not {value!r}")
    return column.in_([literal_column(f"'{value}'", type_=column.type) for value in values])
