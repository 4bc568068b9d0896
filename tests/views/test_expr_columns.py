"""The two evaluators of every expression agree: a whole batch at once (``node.on(columns)``,
what the engine runs) equals one row at a time (``node(row)``, the reference semantics), on
random rows with NULLs, absent fields, ints and floats mixed, strings, booleans and mixed types."""

from __future__ import annotations

import math
from typing import Any

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st

from views.batch import from_rows
from views.expr import Fields, compile_value
from views.predicates import compile_predicate

PREDICATES = [
    "a > 1",
    "a = b",
    "a <> 2.5",
    "a <= b AND s = 'x'",
    "a < 0 OR s IN ('x', 'y')",
    "NOT (a >= b)",
    "a IN (1, 2, 2.5)",
    "a IN (1, NULL)",
    "s IN ('x', NULL)",
    "s NOT IN ('x')",
    "a BETWEEN -1 AND 2",
    "a IS NULL",
    "s IS NOT NULL AND a IS NOT NULL",
    "f = TRUE",
    "f IN (TRUE)",
    "m = 'x'",
    "m = 1",
    "m IN ('x', 1)",
    "a + b > 1",
    "a * b - 1 < a / b",
    "a % b = 0",
    "-a > b",
    "s < 'y'",
    "TRUE",
    "ts > 5",
]
VALUES = ["a + b", "a - b", "a * b", "a / b", "a % b", "-a", "a * 2 + 1.5", "ts - a"]

NUMBER = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 1)),
    st.integers(2**61, 2**62),  # near int64's edge: products overflow into floats
)
ROW = st.fixed_dictionaries(
    {"ts": st.integers(0, 10)},
    optional={
        "a": NUMBER,
        "b": NUMBER,
        "s": st.one_of(st.none(), st.sampled_from(["x", "y", "z", ""])),
        "f": st.one_of(st.none(), st.booleans()),
        "m": st.one_of(st.none(), st.sampled_from(["x", 1, 2.0, True])),
    },
)
NAMES = ("ts", "a", "b", "s", "f", "m")


def _as_columns_read_them(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as a column holds them: a number field with any decimal in the batch is a float
    column, so its integers are floats too (the same value below 2**53; the documented rule)."""
    out = [dict(r) for r in rows]
    for name in ("a", "b"):
        if any(isinstance(r.get(name), float) for r in rows):
            for r in out:
                if isinstance(r.get(name), int) and not isinstance(r.get(name), bool):
                    r[name] = float(r[name])
    return out


def _same(x: Any, y: Any) -> bool:
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, float) or isinstance(y, float):
        return math.isclose(x, y, rel_tol=1e-12)
    return bool(x == y)


@settings(max_examples=150, deadline=None)
@pytest.mark.parametrize("sql", PREDICATES)
@given(rows=st.lists(ROW, min_size=1, max_size=12))
def test_predicates_agree_row_and_column(sql: str, rows: list[dict[str, Any]]) -> None:
    node = compile_predicate(sqlglot.parse_one(sql), Fields("s", "ts"))
    true, known = node.on(from_rows(rows, "ts", NAMES))
    expected = [node(r) for r in _as_columns_read_them(rows)]
    got = [bool(t) if k else None for t, k in zip(true.tolist(), known.tolist(), strict=True)]
    assert got == expected


@settings(max_examples=150, deadline=None)
@pytest.mark.parametrize("sql", VALUES)
@given(rows=st.lists(ROW, min_size=1, max_size=12))
def test_values_agree_row_and_column(sql: str, rows: list[dict[str, Any]]) -> None:
    node = compile_value(sqlglot.parse_one(sql), Fields("s", "ts"), "number")
    got = node.on(from_rows(rows, "ts", NAMES)).values()
    expected = [node(r) for r in _as_columns_read_them(rows)]
    assert all(_same(g, e) for g, e in zip(got, expected, strict=True)), (got, expected)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("a * b - 1 < a / b", [True, False]),  # 2**61 - 1 < 2.0**61; row 2 overflows int64
        ("-a > b", [False, True]),  # -(2**61 + 1) > -(2**61 + 1) is false; 2**63 > 2**61
    ],
)
def test_a_row_beyond_int64_does_not_make_its_neighbours_floats(
    sql: str, expected: list[bool]
) -> None:
    """Found by the property above (Hypothesis): int64 arithmetic that overflows on one row made
    the whole column float for the comparison, so 2**61 - 1 became 2.0**61 on another row."""
    if "/" in sql:
        rows = [{"ts": 0, "a": 2**61, "b": 1}, {"ts": 0, "a": 2**61, "b": 2**61}]
    else:  # the second row's -a is beyond int64
        rows = [{"ts": 0, "a": 2**61 + 1, "b": -(2**61 + 1)}, {"ts": 0, "a": -(2**63), "b": 2**61}]
    node = compile_predicate(sqlglot.parse_one(sql), Fields("s", "ts"))
    true, known = node.on(from_rows(rows, "ts", NAMES))
    assert [node(r) for r in rows] == expected
    assert true.tolist() == expected
    assert known.all()
