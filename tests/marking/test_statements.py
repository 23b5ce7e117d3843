"""marking.statements.one_of: constants written into the SQL text, and nothing else."""
from __future__ import annotations

import pytest
from sqlalchemy import String, column, select, table
from sqlalchemy.dialects import postgresql, sqlite

from marking.statements import one_of

T = table("t", column("slot", String))


@pytest.mark.parametrize("dialect", [postgresql.psycopg.dialect(), sqlite.dialect()], ids=["postgresql", "sqlite"])
def test_constants_are_written_in_once(dialect):
    compiled = select(T.c.slot).where(one_of(T.c.slot, ("first", "second"))).compile(dialect=dialect)
    assert "IN ('first', 'second')" in compiled.string
    assert not compiled.post_compile_params and not compiled.params


@pytest.mark.parametrize("bad", ["it's", "First", "a b", "", "1st", "x;--", 3])
def test_anything_but_a_lower_case_identifier_is_refused(bad):
    with pytest.raises(ValueError):
        one_of(T.c.slot, ("first", bad))


def test_an_empty_list_is_refused():
    with pytest.raises(ValueError):
        one_of(T.c.slot, ())
