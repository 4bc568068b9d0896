"""Compile the expression part of the SQL subset into small expression trees that evaluate two
ways: on one row (``node(row)``: the reference semantics, and the test oracle) and on a whole
batch at once (``node.on(columns)``: numpy and Arrow, what the engine runs). One definition, two
evaluators, and property tests that find them equal (tests/views/test_expr.py).

Semantics follow SQL where it matters for correctness: NULL (an absent field or JSON null)
propagates through arithmetic and comparisons, WHERE keeps a row only when its predicate is TRUE
(three-valued AND/OR/NOT), division by zero and non-finite results are NULL; values of different
types (a number and a string) are never equal, less or greater: the comparison is unknown.
Integer arithmetic is exact within int64; a result beyond it is computed as a float.

While compiling, every field used is given a type requirement ("number", "string", "bool" or
"scalar"); the ingest layer checks events against them, so a wrong type is a 400 naming the line
and the field instead of a silent NULL.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from views.batch import Columns, Vec

Row = dict[str, Any]
TYPES = ("number", "string", "bool", "scalar")
Truth = tuple[np.ndarray, np.ndarray]  # (true, known) per row: SQL's three values


class ExprError(ValueError):
    """An expression outside the supported subset, or a type conflict; the message says which."""


class Fields:
    """Type requirements collected while compiling one view (field -> type)."""

    def __init__(self, source: str, time_field: str) -> None:
        self.source = source
        self.time_field = time_field
        self.required: dict[str, str] = {}

    def require(self, field: str, kind: str) -> None:
        if field == self.time_field:
            if kind not in ("number", "scalar"):
                raise ExprError(
                    f"field '{field}' is the event-time field (epoch milliseconds), "
                    f"it cannot be used as a {kind}"
                )
            return
        current = self.required.get(field, "scalar")
        if current == "scalar" or current == kind:
            self.required[field] = kind if kind != "scalar" else current
        elif kind != "scalar":
            raise ExprError(f"field '{field}' is used both as a {current} and as a {kind}")

    def column(self, node: exp.Column) -> str:
        if node.table and node.table != self.source:
            raise ExprError(
                f"'{node.sql()}' refers to '{node.table}', but this view reads '{self.source}'"
            )
        return str(node.name)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparable(a: Any, b: Any) -> bool:
    if _number(a):
        return _number(b)
    return type(a) is type(b)


def literal(node: exp.Expression) -> Any:
    """The Python value of a literal node, or raise."""
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        text = str(node.this)
        return int(text) if text.lstrip("-").isdigit() else float(text)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return -literal(node.this)
    raise ExprError(f"'{node.sql()}' must be a literal value here")


def _is_literal(node: exp.Expression) -> bool:
    try:
        literal(node)
    except ExprError:
        return False
    return True


# -- values ------------------------------------------------------------------------------------


class Value:
    """An expression giving a value: ``node(row)`` for one row, ``node.on(cols)`` for a batch."""

    sql = ""

    def __call__(self, row: Row) -> Any:
        raise NotImplementedError

    def on(self, cols: Columns) -> Vec:
        raise NotImplementedError


class FieldValue(Value):
    def __init__(self, name: str) -> None:
        self.name = name
        self.sql = name

    def __call__(self, row: Row) -> Any:
        return row.get(self.name)

    def on(self, cols: Columns) -> Vec:
        return cols.column(self.name)


class Constant(Value):
    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self, row: Row) -> Any:
        return self.value

    def on(self, cols: Columns) -> Vec:
        n = len(cols)
        v = self.value
        if v is None:
            return Vec.nulls(n)
        ones = np.ones(n, bool)
        if isinstance(v, bool):
            return Vec("bool", np.full(n, v), ones)
        if isinstance(v, str):
            return Vec("string", pa.array([v] * n, pa.string()), ones)
        if isinstance(v, int) and not -(2**63) <= v < 2**63:
            v = float(v)
        return Vec("number", np.full(n, v, np.int64 if isinstance(v, int) else np.float64), ones)


class Negate(Value):
    def __init__(self, inner: Value) -> None:
        self.inner = inner

    def __call__(self, row: Row) -> Any:
        v = self.inner(row)
        return None if v is None else -v

    def on(self, cols: Columns) -> Vec:
        v = _numbers(self.inner.on(cols))
        if v.kind == "null":
            return v
        data = v.data
        if data.dtype == np.int64 and (data == -(2**63)).any():
            data = data.astype(np.float64)  # -(-2**63) is beyond int64
        return Vec("number", -data, v.valid)


def _numbers(v: Vec) -> Vec:
    """A number column as float or int64 (an object column of numbers becomes float64)."""
    if v.kind in ("number", "null"):
        return v
    if v.kind == "object":
        ok = v.valid & np.array([_number(x) for x in v.data], bool)
        data = np.array([float(x) if good else 0.0 for x, good in zip(v.data, ok, strict=True)])
        return Vec("number", data, ok)
    return Vec.nulls(len(v))  # strings and booleans are not numbers: NULL in arithmetic


_ROW_ARITH: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.Add: operator.add,
    exp.Sub: operator.sub,
    exp.Mul: operator.mul,
    exp.Div: operator.truediv,
    exp.Mod: operator.mod,
}


class Arith(Value):
    def __init__(self, kind: type[exp.Expression], left: Value, right: Value) -> None:
        self.kind, self.left, self.right = kind, left, right
        self.op = _ROW_ARITH[kind]

    def __call__(self, row: Row) -> Any:
        a, b = self.left(row), self.right(row)
        if a is None or b is None:
            return None
        try:
            result = self.op(a, b)
        except (ZeroDivisionError, OverflowError):
            return None
        if isinstance(result, float) and not math.isfinite(result):
            return None
        if isinstance(result, int) and not -(2**63) <= result < 2**63:
            return float(result)  # as the column evaluator: beyond int64, a float
        return result

    def on(self, cols: Columns) -> Vec:
        a, b = _numbers(self.left.on(cols)), _numbers(self.right.on(cols))
        if a.kind == "null" or b.kind == "null":
            return Vec.nulls(len(cols))
        valid = a.valid & b.valid
        x, y = a.data, b.data
        with np.errstate(all="ignore"):
            if self.kind in (exp.Div, exp.Mod):
                valid = valid & (y != 0)
                safe = np.where(y == 0, 1, y)
                out = x / safe if self.kind is exp.Div else np.mod(x, safe)
            else:
                out = _int_or_float(self.kind, x, y)
        if out.dtype.kind == "f":
            valid = valid & np.isfinite(out)
        return Vec("number", out, valid)


def _int_or_float(kind: type[exp.Expression], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x op y`` for + - *, in int64 when both are integers and nothing overflows, else float64
    (Python's ints never overflow; beyond int64 a result is a float, here and in ``__call__``)."""
    op = {exp.Add: np.add, exp.Sub: np.subtract, exp.Mul: np.multiply}[kind]
    if x.dtype == np.int64 and y.dtype == np.int64:
        approx = op(x.astype(np.float64), y.astype(np.float64))
        if not (np.abs(approx) >= 2.0**62).any():  # far from the edge: int64 is exact
            result: np.ndarray = op(x, y)
            return result
        exact = _ROW_ARITH[kind]  # Python ints: exact, never wrapping as int64 would
        exact_values = [exact(a, b) for a, b in zip(x.tolist(), y.tolist(), strict=True)]
        if all(-(2**63) <= v < 2**63 for v in exact_values):
            return np.array(exact_values, np.int64)
        return np.array([float(v) for v in exact_values], np.float64)
    out: np.ndarray = op(x.astype(np.float64), y.astype(np.float64))
    return out


# -- predicates --------------------------------------------------------------------------------


class Predicate:
    """An expression giving TRUE / FALSE / NULL: ``node(row)`` or ``node.on(cols)`` →
    ``(true, known)`` masks."""

    def __call__(self, row: Row) -> bool | None:
        raise NotImplementedError

    def on(self, cols: Columns) -> Truth:
        raise NotImplementedError

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

    def __call__(self, row: Row) -> bool | None:
        v = self.inner(row)
        return None if v is None else not v

    def on(self, cols: Columns) -> Truth:
        true, known = self.inner.on(cols)
        return ~true & known, known


class IsNull(Predicate):
    def __init__(self, value: Value) -> None:
        self.value = value

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

    def __call__(self, row: Row) -> bool | None:
        x, y = self.left(row), self.right(row)
        if x is None or y is None or not _comparable(x, y):
            return None
        return self.op(x, y)

    def on(self, cols: Columns) -> Truth:
        a, b = self.left.on(cols), self.right.on(cols)
        n = len(cols)
        if "object" in (a.kind, b.kind):
            return _rowwise(self, a, b)
        if a.kind != b.kind or a.kind == "null":  # different types: never comparable
            return np.zeros(n, bool), np.zeros(n, bool)
        known = a.valid & b.valid
        if a.kind == "string":
            result = _ARROW_COMPARE[self.kind](a.data, b.data)
            return np.asarray(result.fill_null(False)) & known, known
        return np.asarray(self.op(a.data, b.data), bool) & known, known


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


# -- compiling ---------------------------------------------------------------------------------


def compile_value(node: exp.Expression, fields: Fields, kind: str = "scalar") -> Value:
    """``node`` as a ``Value``; ``kind`` is what the caller needs it to be."""
    if isinstance(node, exp.Paren):
        return compile_value(node.this, fields, kind)
    if isinstance(node, exp.Column):
        name = fields.column(node)
        fields.require(name, kind)
        return FieldValue(name)
    if _is_literal(node):
        value = literal(node)
        if kind == "number" and value is not None and not _number(value):
            raise ExprError(f"'{node.sql()}' is not a number")
        return Constant(value)
    if isinstance(node, exp.Neg):
        return Negate(compile_value(node.this, fields, "number"))
    if type(node) in _ROW_ARITH:
        left = compile_value(node.this, fields, "number")
        right = compile_value(node.expression, fields, "number")
        return Arith(type(node), left, right)
    raise ExprError(f"'{node.sql()}' is not supported in the view SQL subset (see README: SQL)")


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
