"""WHERE conditions: predicate trees that evaluate one row (``node(row)``, the reference) or a
whole batch (``node.on(columns)`` → true and known masks: SQL's three values), compiled from the
SQL subset by ``compile_predicate``. Values inside them are ``views.expr`` trees."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from views.batch import Columns, Vec
from views.expr import (
    ExprError,
    Fields,
    Row,
    Value,
    _comparable,
    _is_literal,
    _number,
    compile_value,
    literal,
)

Truth = tuple[np.ndarray, np.ndarray]  # (true, known) per row: SQL's three values


class Predicate:
    """An expression giving TRUE / FALSE / NULL: ``node(row)`` or ``node.on(cols)`` →
    ``(true, known)`` masks."""

    def __call__(self, row: Row) -> bool | None:
        raise NotImplementedError

    def on(self, cols: Columns) -> Truth:
        raise NotImplementedError

    def values(self) -> list[Value]:
        """The values it compares or tests (``Value.exact_as_floats`` reads them)."""
        return []

    def mask(self, cols: Columns) -> np.ndarray:
        """The rows a WHERE keeps: those where the predicate is TRUE."""
        true, known = self.on(cols)
        out: np.ndarray = true & known
        return out


class Logic(Predicate):
    """Three-valued AND / OR: the decisive value (FALSE for AND, TRUE for OR) wins even over an
    unknown side; otherwise any unknown makes the whole unknown."""

    def __init__(self, is_or: bool, left: Predicate, right: Predicate) -> None:
        self.is_or, self.left, self.right = is_or, left, right

    def values(self) -> list[Value]:
        return self.left.values() + self.right.values()

    def __call__(self, row: Row) -> bool | None:
        decisive = self.is_or
        a = self.left(row)
        if a is decisive:
            return decisive
        b = self.right(row)
        if b is decisive:
            return decisive
        return None if a is None or b is None else not decisive

    def on(self, cols: Columns) -> Truth:
        at, ak = self.left.on(cols)
        bt, bk = self.right.on(cols)
        if self.is_or:
            decided = (at & ak) | (bt & bk)
            return decided, decided | (ak & bk)
        decided = (~at & ak) | (~bt & bk)  # a known FALSE on either side
        return ~decided & ak & bk, decided | (ak & bk)


class Not(Predicate):
    def __init__(self, inner: Predicate) -> None:
        self.inner = inner

    def values(self) -> list[Value]:
        return self.inner.values()

    def __call__(self, row: Row) -> bool | None:
        v = self.inner(row)
        return None if v is None else not v

    def on(self, cols: Columns) -> Truth:
        true, known = self.inner.on(cols)
        return ~true & known, known


class IsNull(Predicate):
    def __init__(self, value: Value) -> None:
        self.value = value

    def values(self) -> list[Value]:
        return [self.value]

    def __call__(self, row: Row) -> bool | None:
        return self.value(row) is None

    def on(self, cols: Columns) -> Truth:
        v = self.value.on(cols)
        return ~v.valid, np.ones(len(cols), bool)


class Always(Predicate):
    def __init__(self, constant: bool) -> None:
        self.constant = constant

    def __call__(self, row: Row) -> bool | None:
        return self.constant

    def on(self, cols: Columns) -> Truth:
        n = len(cols)
        return np.full(n, self.constant), np.ones(n, bool)


_ROW_COMPARE: dict[type[exp.Expression], Callable[[Any, Any], bool]] = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
}
_ARROW_COMPARE = {
    exp.EQ: pc.equal,
    exp.NEQ: pc.not_equal,
    exp.LT: pc.less,
    exp.LTE: pc.less_equal,
    exp.GT: pc.greater,
    exp.GTE: pc.greater_equal,
}


class Compare(Predicate):
    def __init__(self, kind: type[exp.Expression], left: Value, right: Value) -> None:
        self.kind, self.left, self.right = kind, left, right
        self.op = _ROW_COMPARE[kind]

    def values(self) -> list[Value]:
        return [self.left, self.right]

    def __call__(self, row: Row) -> bool | None:
        x, y = self.left(row), self.right(row)
        if x is None or y is None or not _comparable(x, y):
            return None
        return self.op(x, y)

    def on(self, cols: Columns) -> Truth:
        a, b = self.left.exact(cols), self.right.exact(cols)
        n = len(cols)
        if "object" in (a.kind, b.kind):
            return _rowwise(self, a, b)
        if a.kind != b.kind or a.kind == "null":  # different types: never comparable
            return np.zeros(n, bool), np.zeros(n, bool)
        known = a.valid & b.valid
        if a.kind == "string":
            result = _ARROW_COMPARE[self.kind](a.data, b.data)
            return np.asarray(result.fill_null(False)) & known, known
        return _numbers_compared(self.op, a.data, b.data) & known, known


def _numbers_compared(op: Callable[[Any, Any], Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``op`` over two columns. numpy compares an int64 with a float64 as two floats, which is
    wrong beyond 2**53 (2**61 - 1 < 2.0**61 is true); those rows are compared in Python."""
    out = np.asarray(op(x, y), bool)
    if x.dtype.kind != y.dtype.kind and x.dtype.kind in "iuf" and y.dtype.kind in "iuf":
        ints = x if x.dtype.kind in "iu" else y
        for i in np.flatnonzero(np.abs(ints.astype(np.float64)) >= 2.0**53).tolist():
            out[i] = op(x[i].item(), y[i].item())
    return out


def _rowwise(node: Compare, a: Vec, b: Vec) -> Truth:
    """A comparison involving a column of mixed types: value by value, as the row evaluator."""
    results = []
    for x, y in zip(a.values(), b.values(), strict=True):
        results.append(None if x is None or y is None or not _comparable(x, y) else node.op(x, y))
    return _truth(results)


def _truth(results: list[bool | None]) -> Truth:
    true = np.array([r is True for r in results], bool)
    known = np.array([r is not None for r in results], bool)
    return true, known


class In(Predicate):
    def __init__(self, value: Value, options: list[Any]) -> None:
        self.value = value
        self.allowed = frozenset(v for v in options if v is not None)
        self.has_null = None in options

    def values(self) -> list[Value]:
        return [self.value]

    def __call__(self, row: Row) -> bool | None:
        return self._one(self.value(row))

    def on(self, cols: Columns) -> Truth:
        v = self.value.on(cols)
        n = len(cols)
        if v.kind == "object":
            return _truth([self._one(x) for x in v.values()])
        if v.kind == "null":
            return np.zeros(n, bool), np.zeros(n, bool)
        hit = self._hits(v)
        # Not in the list: FALSE, or unknown when the list holds a NULL.
        return hit & v.valid, v.valid & (hit | (not self.has_null))

    def _one(self, x: Any) -> bool | None:
        if x is None:
            return None
        if x in self.allowed and any(_comparable(x, v) and x == v for v in self.allowed):
            return True
        return None if self.has_null else False

    def _hits(self, v: Vec) -> np.ndarray:
        if v.kind == "string":
            texts = [o for o in self.allowed if isinstance(o, str)]
            hits = pc.is_in(v.data, value_set=pa.array(texts, pa.string()))
            return np.asarray(hits.fill_null(False))
        if v.kind == "bool":
            flags = [o for o in self.allowed if isinstance(o, bool)]
            return np.isin(v.data, np.array(flags, bool))
        numbers = [o for o in self.allowed if _number(o)]
        return np.isin(v.data, np.array(numbers, np.float64)) if numbers else np.zeros(len(v), bool)


def _side_kind(node: exp.Expression, other: exp.Expression) -> str:
    """Infer what a column compared with a literal must be (``status = 'paid'`` → string)."""
    if _is_literal(other):
        value = literal(other)
        if isinstance(value, str):
            return "string"
        if isinstance(value, bool):
            return "bool"
        if _number(value):
            return "number"
    return "scalar"


def compile_predicate(node: exp.Expression, fields: Fields) -> Predicate:
    if isinstance(node, exp.Paren):
        return compile_predicate(node.this, fields)
    if isinstance(node, exp.And | exp.Or):
        left = compile_predicate(node.this, fields)
        right = compile_predicate(node.expression, fields)
        return Logic(isinstance(node, exp.Or), left, right)
    if isinstance(node, exp.Not):
        return Not(compile_predicate(node.this, fields))
    if type(node) in _ROW_COMPARE:
        a, b = node.this, node.expression
        first = compile_value(a, fields, _side_kind(a, b))
        second = compile_value(b, fields, _side_kind(b, a))
        return Compare(type(node), first, second)
    if isinstance(node, exp.Is):
        if not isinstance(node.expression, exp.Null):
            raise ExprError(f"'{node.sql()}': only IS NULL / IS NOT NULL are supported")
        return IsNull(compile_value(node.this, fields))
    if isinstance(node, exp.In):
        return _membership(node, fields)
    if isinstance(node, exp.Between):
        low = exp.GTE(this=node.this, expression=node.args["low"])
        high = exp.LTE(this=node.this, expression=node.args["high"])
        return compile_predicate(exp.And(this=low, expression=high), fields)
    if isinstance(node, exp.Boolean):
        return Always(bool(node.this))
    raise ExprError(
        f"'{node.sql()}' is not a supported condition; WHERE takes comparisons, AND/OR/NOT, "
        "IN (...), BETWEEN, IS [NOT] NULL"
    )


def _membership(node: exp.In, fields: Fields) -> Predicate:
    options = node.expressions
    if not options or not all(_is_literal(o) for o in options):
        raise ExprError(f"'{node.sql()}': IN takes a list of literal values")
    values = [literal(o) for o in options]
    kinds = {_side_kind(node.this, o) for o in options if literal(o) is not None}
    value = compile_value(node.this, fields, kinds.pop() if len(kinds) == 1 else "scalar")
    return In(value, values)
