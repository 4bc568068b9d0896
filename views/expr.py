"""Compile the expression part of the SQL subset into plain Python closures.

Semantics follow SQL where it matters for correctness: NULL (an absent field or JSON null)
propagates through arithmetic and comparisons, WHERE keeps a row only when its predicate is TRUE
(three-valued AND/OR/NOT), division by zero and non-finite results are NULL.

While compiling, every field used is given a type requirement ("number", "string", "bool" or
"scalar"); the ingest layer checks events against them, so a wrong type is a 400 naming the line
and the field instead of a silent NULL.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from sqlglot import exp

Row = dict[str, Any]
Value = Callable[[Row], Any]
Predicate = Callable[[Row], bool | None]

TYPES = ("number", "string", "bool", "scalar")


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


_ARITH: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.Add: operator.add,
    exp.Sub: operator.sub,
    exp.Mul: operator.mul,
    exp.Div: operator.truediv,
    exp.Mod: operator.mod,
}

_COMPARE: dict[type[exp.Expression], Callable[[Any, Any], bool]] = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
}


def compile_value(node: exp.Expression, fields: Fields, kind: str = "scalar") -> Value:
    """A closure computing ``node`` for one row; ``kind`` is what the caller needs it to be."""
    if isinstance(node, exp.Paren):
        return compile_value(node.this, fields, kind)
    if isinstance(node, exp.Column):
        name = fields.column(node)
        fields.require(name, kind)
        return operator.methodcaller("get", name)
    if _is_literal(node):
        value = literal(node)
        if kind == "number" and value is not None and not _number(value):
            raise ExprError(f"'{node.sql()}' is not a number")
        return lambda row: value
    if isinstance(node, exp.Neg):
        inner = compile_value(node.this, fields, "number")
        return lambda row: None if (v := inner(row)) is None else -v
    op = _ARITH.get(type(node))
    if op is not None:
        left = compile_value(node.this, fields, "number")
        right = compile_value(node.expression, fields, "number")
        return _arith(op, left, right)
    raise ExprError(f"'{node.sql()}' is not supported in the view SQL subset (see README: SQL)")


def _arith(op: Callable[[Any, Any], Any], left: Value, right: Value) -> Value:
    def run(row: Row) -> Any:
        a = left(row)
        b = right(row)
        if a is None or b is None:
            return None
        try:
            result = op(a, b)
        except (ZeroDivisionError, OverflowError):
            return None
        if isinstance(result, float) and not math.isfinite(result):
            return None
        return result

    return run


def _comparable(a: Any, b: Any) -> bool:
    if _number(a):
        return _number(b)
    return type(a) is type(b)


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
    """A closure returning True / False / None (unknown) for one row."""
    if isinstance(node, exp.Paren):
        return compile_predicate(node.this, fields)
    if isinstance(node, exp.And | exp.Or):
        return _logic(node, fields)
    if isinstance(node, exp.Not):
        inner = compile_predicate(node.this, fields)
        return lambda row: None if (v := inner(row)) is None else not v
    compare = _COMPARE.get(type(node))
    if compare is not None:
        return _comparison(compare, node.this, node.expression, fields)
    if isinstance(node, exp.Is):
        if not isinstance(node.expression, exp.Null):
            raise ExprError(f"'{node.sql()}': only IS NULL / IS NOT NULL are supported")
        value = compile_value(node.this, fields)
        return lambda row: value(row) is None
    if isinstance(node, exp.In):
        return _membership(node, fields)
    if isinstance(node, exp.Between):
        low = exp.GTE(this=node.this, expression=node.args["low"])
        high = exp.LTE(this=node.this, expression=node.args["high"])
        return compile_predicate(exp.And(this=low, expression=high), fields)
    if isinstance(node, exp.Boolean):
        constant = bool(node.this)
        return lambda row: constant
    raise ExprError(
        f"'{node.sql()}' is not a supported condition; WHERE takes comparisons, AND/OR/NOT, "
        "IN (...), BETWEEN, IS [NOT] NULL"
    )


def _logic(node: exp.And | exp.Or, fields: Fields) -> Predicate:
    """Three-valued AND / OR: the decisive value (FALSE for AND, TRUE for OR) wins even over
    an unknown side; otherwise any unknown makes the whole unknown."""
    left = compile_predicate(node.this, fields)
    right = compile_predicate(node.expression, fields)
    decisive = isinstance(node, exp.Or)

    def run(row: Row) -> bool | None:
        a = left(row)
        if a is decisive:
            return decisive
        b = right(row)
        if b is decisive:
            return decisive
        return None if a is None or b is None else not decisive

    return run


def _comparison(
    compare: Callable[[Any, Any], bool], a: exp.Expression, b: exp.Expression, fields: Fields
) -> Predicate:
    left = compile_value(a, fields, _side_kind(a, b))
    right = compile_value(b, fields, _side_kind(b, a))

    def run(row: Row) -> bool | None:
        x = left(row)
        y = right(row)
        if x is None or y is None or not _comparable(x, y):
            return None
        return compare(x, y)

    return run


def _membership(node: exp.In, fields: Fields) -> Predicate:
    options = node.expressions
    if not options or not all(_is_literal(o) for o in options):
        raise ExprError(f"'{node.sql()}': IN takes a list of literal values")
    values = [literal(o) for o in options]
    kinds = {_side_kind(node.this, o) for o in options if literal(o) is not None}
    value = compile_value(node.this, fields, kinds.pop() if len(kinds) == 1 else "scalar")
    allowed = frozenset(v for v in values if v is not None)
    has_null = None in values

    def run(row: Row) -> bool | None:
        x = value(row)
        if x is None:
            return None
        if x in allowed and any(_comparable(x, v) and x == v for v in allowed):
            return True
        return None if has_null else False

    return run
