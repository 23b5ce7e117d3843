"""marking.statements: constants and LIMITs written into the SQL text, and nothing else."""
from __future__ import annotations

import pytest
from sqlalchemy import String, column, select, table
from sqlalchemy.dialects import postgresql, sqlite

from marking.statements import constant, one_of, written_limit

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


@pytest.mark.parametrize("dialect", [postgresql.psycopg.dialect(), sqlite.dialect()], ids=["postgresql", "sqlite"])
def test_a_written_limit_and_constant_are_in_the_text_not_parameters(dialect):
    compiled = (select(T.c.slot).where(T.c.slot == constant(T.c.slot, "first")).limit(written_limit(1))
                .compile(dialect=dialect))
    assert "'first'" in compiled.string and "LIMIT 1" in compiled.string
    # (SQLite's compiler adds an OFFSET parameter of 0 to any expression LIMIT)
    assert "first" not in compiled.params.values() and 1 not in compiled.params.values()


@pytest.mark.parametrize("bad", [0, -1, 1.0, "1", True, None])
def test_a_written_limit_takes_positive_ints_only(bad):
    with pytest.raises(ValueError):
        written_limit(bad)


@pytest.mark.parametrize("bad", ["it's", "Open", "", 3])
def test_a_constant_takes_lower_case_identifiers_only(bad):
    with pytest.raises(ValueError):
        constant(T.c.slot, bad)
