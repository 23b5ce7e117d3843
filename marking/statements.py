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
    return column.in_([constant(column, value) for value in values])


def constant(column: ColumnElement, value: str) -> ColumnElement:
    """The code constant ``value`` written into the SQL text, typed like ``column``
    (lower-case identifiers only, as for :func:`one_of`)."""
    if not isinstance(value, str) or not _CONSTANT.match(value):
        raise ValueError(f"a constant written into SQL must be a lower-case identifier, not {value!r}")
    return literal_column(f"'{value}'", type_=column.type)


def written_limit(n: int) -> ColumnElement:
    """``LIMIT n`` written into the SQL text, for ``select(...).limit(written_limit(1))``.

    SQLAlchemy binds a LIMIT as a parameter. PostgreSQL's generic plan for a prepared
    statement (psycopg prepares after five runs) does not know its value and costs the
    LIMIT as a tenth of the rows; on a large item that made the generic plan of the
    claim's deal statement look 75 times dearer than a custom one, so PostgreSQL planned
    the statement afresh on every claim (0.4 ms each at 1,000,000 responses).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"a written LIMIT takes a positive int, not {n!r}")
    return literal_column(str(n))
