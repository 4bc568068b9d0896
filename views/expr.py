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
from sqlglot import exp

from views.batch import EXACT_INTEGERS, Columns, Vec, objects

Row = dict[str, Any]
TYPES = ("number", "string", "bool", "scalar")


class ExprError(ValueError):
    """An expression outside the supported subset, or a type conflict; the message says which."""


class Fields:
    """Type requirements collected while compiling one view (field -> type)."""

    def __init__(self, source: str, time_field: str) -> None:
        self.source = source
        self.time_field = time_field
        self.required: dict[str, str] = {}
        # Fields read by arithmetic (+ - * / %, negation): an integer there is computed in int64
        # when its whole column is, in float64 otherwise (``views.batch.concat`` reads this).
        self.computed: set[str] = set()

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

    def exact_as_floats(self, cols: Columns) -> bool:
        """Whether this gives the same on ``cols`` as on any split of its rows into batches in
        which some number columns are int64 (``cols`` has them as float64, every integer below
        2**53): true when each + - * on the way stays below 2**53, where float64 arithmetic on
        integers is exact (/ and % of the same operands give the same either way)."""
        return True

    def exact(self, cols: Columns) -> Vec:
        """``on``, except where int64 arithmetic overflows: ``on`` then makes the whole column
        float (what sums and the other aggregates read), while each row alone (``__call__``)
        keeps Python's exact ints and makes only its own beyond-int64 result a float. A
        comparison reads this, so that both agree row by row (2**61 - 1 < 2.0**61 is true)."""
        return self.on(cols)


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

    def exact_as_floats(self, cols: Columns) -> bool:
        return self.inner.exact_as_floats(cols)

    def exact(self, cols: Columns) -> Vec:
        v = self.inner.exact(cols)
        if v.kind == "number" and not (v.data.dtype == np.int64 and (v.data == -(2**63)).any()):
            return self.on(cols)
        if v.kind not in ("number", "object"):
            return self.on(cols)
        return objects([-x if _number(x) else None for x in v.values()])  # as each row alone


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
        return self._one(self.left(row), self.right(row))

    def exact_as_floats(self, cols: Columns) -> bool:
        if not (self.left.exact_as_floats(cols) and self.right.exact_as_floats(cols)):
            return False
        if self.kind in (exp.Div, exp.Mod):
            return True
        out = self.on(cols)
        return out.kind == "null" or bool((np.abs(out.data[out.valid]) < EXACT_INTEGERS).all())

    def exact(self, cols: Columns) -> Vec:
        a, b = self.left.exact(cols), self.right.exact(cols)
        if a.kind == "number" and b.kind == "number":
            out = self.on(cols)
            wrapped = a.data.dtype == np.int64 and b.data.dtype == np.int64
            if not (wrapped and out.data.dtype == np.float64 and self.kind is not exp.Div):
                return out  # int64 held every result (or floats were asked for anyway)
        elif "object" not in (a.kind, b.kind):
            return self.on(cols)
        return objects(
            [
                self._one(x, y) if _number(x) and _number(y) else None
                for x, y in zip(a.values(), b.values(), strict=True)
            ]
        )

    def _one(self, a: Any, b: Any) -> Any:
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
    if isinstance(node, exp.Neg) or type(node) in _ROW_ARITH:
        fields.computed.update(fields.column(c) for c in node.find_all(exp.Column))
    if isinstance(node, exp.Neg):
        return Negate(compile_value(node.this, fields, "number"))
    if type(node) in _ROW_ARITH:
        left = compile_value(node.this, fields, "number")
        right = compile_value(node.expression, fields, "number")
        return Arith(type(node), left, right)
    raise ExprError(f"'{node.sql()}' is not supported in the view SQL subset (see README: SQL)")
