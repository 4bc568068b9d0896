"""SQL three-valued logic and NULL propagation in compiled expressions."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import sqlglot

from views.expr import Fields, compile_value
from views.predicates import compile_predicate

TRUTH: list[bool | None] = [True, False, None]


def _sql_and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _sql_or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _pred(sql: str) -> Any:
    return compile_predicate(sqlglot.parse_one(sql), Fields("s", "ts"))


def _as_field(v: bool | None) -> Any:
    return {True: 1, False: 0, None: None}[v]


@pytest.mark.parametrize(("a", "b"), list(itertools.product(TRUTH, TRUTH)))
def test_and_or_not_truth_tables(a: bool | None, b: bool | None) -> None:
    row = {"a": _as_field(a), "b": _as_field(b)}
    assert _pred("a = 1 AND b = 1")(row) is _sql_and(a, b)
    assert _pred("a = 1 OR b = 1")(row) is _sql_or(a, b)
    assert _pred("NOT a = 1")(row) is (None if a is None else not a)


def test_null_propagation_and_membership() -> None:
    value = compile_value(sqlglot.parse_one("price * qty - 1"), Fields("s", "ts"), "number")
    assert value({"price": 2.5, "qty": 2}) == 4.0
    assert value({"price": None, "qty": 2}) is None
    assert value({"qty": 2}) is None
    ratio = compile_value(sqlglot.parse_one("a / b"), Fields("s", "ts"), "number")
    assert ratio({"a": 1, "b": 0}) is None
    assert _pred("x IN (1, 2)")({"x": 2}) is True
    assert _pred("x IN (1, 2)")({"x": 3}) is False
    assert _pred("x IN (1, NULL)")({"x": 3}) is None  # as in SQL: unknown, so filtered out
    assert _pred("x IN (1, 2)")({"x": True}) is False  # booleans are not numbers
    assert _pred("x BETWEEN 1 AND 3")({"x": 3}) is True
    assert _pred("x IS NULL")({}) is True
    assert _pred("x IS NOT NULL")({"x": 0}) is True
    assert _pred("s = 'a'")({"s": 1}) is None  # mismatched types never compare equal
