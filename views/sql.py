"""The view SQL subset → ``ViewSpec``.

Supported (anything else is refused with a message naming the construct)::

    SELECT <key field> | tumble(<time>, '<size>') AS w | hop(<time>, '<size>', '<slide>') AS w
           | <aggregate>(...) AS name, ...
    FROM <source>
    [WHERE <condition>]
    GROUP BY <every key and window of the SELECT list>

Aggregates: count(*), count(x), sum(x), avg(x), min(x), max(x), count_distinct(x) (also spelled
count(DISTINCT x)), approx_count_distinct(x), approx_percentile(x, q) and p1..p99(x), and
top_k(x, k [, capacity]). Arguments of sum/avg/min/max/percentiles may be arithmetic (price * qty).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from views.aggregates import Aggregate
from views.batch import EXACT_INTEGERS
from views.durations import parse_duration
from views.expr import ExprError, Fields, compile_value, literal
from views.predicates import compile_predicate
from views.spec import KINDS, SQL_NAMES, AggSpec, Column, SourceSpec, ViewSpec, WindowSpec

_PERCENTILE = re.compile(r"^p(\d{1,2})$")


class SqlError(ValueError):
    """A view's SQL is outside the subset; the message names the offending part."""


def compile_view(
    name: str,
    sql: str,
    sources: dict[str, SourceSpec],
    *,
    retention: int | None = None,
    grace: int = 0,
    max_groups: int = 100_000,
) -> ViewSpec:
    try:
        return _compile(name, sql, sources, retention, grace, max_groups)
    except ExprError as err:
        raise SqlError(str(err)) from None


def _parse(sql: str) -> exp.Select:
    try:
        statements = sqlglot.parse(sql)
    except ParseError as err:
        first = err.errors[0] if err.errors else {}
        where = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
        raise SqlError(f"SQL does not parse{where}: {first.get('description', err)}") from None
    if len(statements) != 1 or statements[0] is None:
        raise SqlError("write exactly one SELECT statement")
    tree = statements[0]
    if not isinstance(tree, exp.Select):
        raise SqlError(f"only SELECT is supported, got {tree.key.upper()}")
    for part in ("having", "order", "limit", "offset", "joins", "with_", "qualify", "windows"):
        if tree.args.get(part):
            raise SqlError(f"{part.upper().rstrip('_')} is not supported in a view")
    if tree.args.get("distinct"):
        raise SqlError("SELECT DISTINCT is not supported; use GROUP BY")
    return tree


def _source(tree: exp.Select, sources: dict[str, SourceSpec]) -> SourceSpec:
    from_ = tree.args.get("from_") or tree.args.get("from")
    table = from_.this if from_ is not None else None
    if not isinstance(table, exp.Table) or table.args.get("db"):
        raise SqlError("FROM must name one source, e.g. FROM orders")
    source = sources.get(str(table.name))
    if source is None:
        known = ", ".join(sorted(sources)) or "none defined"
        raise SqlError(f"FROM {table.name}: no such source (sources: {known})")
    return source


def _compile(
    name: str,
    sql: str,
    sources: dict[str, SourceSpec],
    retention: int | None,
    grace: int,
    max_groups: int,
) -> ViewSpec:
    tree = _parse(sql)
    source = _source(tree, sources)
    fields = Fields(source.name, source.time_field)
    keys: list[str] = []
    window: WindowSpec | None = None
    aggs: list[AggSpec] = []
    columns: list[Column] = []
    grouped_exprs: dict[str, str] = {}  # normalised SQL of a non-aggregate item -> output name
    for item in tree.expressions:
        alias = str(item.alias) if isinstance(item, exp.Alias) else None
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Column):
            field = fields.column(node)
            fields.require(field, "scalar")
            out = alias or field
            keys.append(field)
            columns.append(Column(out, _key_type(source, field), "key"))
            grouped_exprs[node.sql()] = out
        elif isinstance(node, exp.Anonymous) and str(node.name).lower() in ("tumble", "hop"):
            if window is not None:
                raise SqlError("a view can have only one time window")
            if alias is None:
                raise SqlError(f"name the window with AS, e.g. {node.sql()} AS minute")
            window = _window(node, alias, source)
            columns.append(Column(alias, "timestamp", "window", sql=node.sql()))
            grouped_exprs[node.sql()] = alias
        elif isinstance(node, exp.Star):
            raise SqlError("SELECT * is not supported; list the keys and aggregates")
        else:
            aggregate = _aggregate(node, alias, fields, source)
            aggs.append(aggregate)
            cls = aggregate.cls
            columns.append(
                Column(
                    aggregate.name,
                    cls.result_type,
                    "aggregate",
                    aggregate=cls.shown,
                    sql=aggregate.sql,
                )
            )
    names = [c.name for c in columns]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise SqlError(f"column name '{duplicate}' is used twice")
    if not aggs:
        raise SqlError("a view needs at least one aggregate, e.g. count(*) AS n")
    _check_group_by(tree, grouped_exprs)
    where = None
    where_fields: tuple[str, ...] = ()
    if tree.args.get("where") is not None:
        where = compile_predicate(tree.args["where"].this, fields)
        where_fields = tuple(
            sorted({fields.column(c) for c in tree.args["where"].find_all(exp.Column)})
        )
    if source.retracting:  # a hidden row count: a group vanishes when its last row is retracted
        aggs.append(AggSpec("__rows", "count", "count(*)", None))
    normalised = tree.sql(normalize=True)
    return ViewSpec(
        name=name,
        source=source.name,
        sql=sql.strip(),
        fingerprint=hashlib.sha256(normalised.encode()).hexdigest()[:16],
        keys=tuple(keys),
        window=window,
        aggs=tuple(aggs),
        columns=tuple(columns),
        where=where,
        where_fields=where_fields,
        requirements=dict(fields.required),
        computed=frozenset(fields.computed),
        big_numbers=any(
            not n.is_string and abs(literal(n)) > EXACT_INTEGERS for n in tree.find_all(exp.Literal)
        ),
        retention=retention,
        grace=grace,
        max_groups=max_groups,
        retracting=source.retracting,
    )


def _key_type(source: SourceSpec, field: str) -> str:
    return source.declared.get(field, "scalar")


def _window(node: exp.Anonymous, alias: str, source: SourceSpec) -> WindowSpec:
    kind = str(node.name).lower()
    args = node.expressions
    expected = 2 if kind == "tumble" else 3
    usage = "tumble(ts, '1 minute')" if kind == "tumble" else "hop(ts, '1 hour', '5 minutes')"
    if len(args) != expected:
        raise SqlError(f"{node.sql()}: {kind} takes {expected} arguments, e.g. {usage}")
    if not isinstance(args[0], exp.Column) or str(args[0].name) != source.time_field:
        raise SqlError(
            f"{node.sql()}: the first argument must be the source's time field "
            f"'{source.time_field}'"
        )
    try:
        sizes = [parse_duration(str(literal(a))) for a in args[1:]]
    except (ExprError, ValueError) as err:
        raise SqlError(f"{node.sql()}: {err}") from None
    size, slide = sizes[0], sizes[-1]
    if kind == "hop" and (slide > size or size % slide):
        raise SqlError(f"{node.sql()}: the slide must divide the size (and not exceed it)")
    return WindowSpec(alias, "tumble" if kind == "tumble" else "hop", size, slide)


def _check_group_by(tree: exp.Select, grouped: dict[str, str]) -> None:
    group = tree.args.get("group")
    listed: set[str] = set()
    for node in group.expressions if group is not None else []:
        text = node.sql()
        name = grouped.get(text) or (text if text in grouped.values() else None)
        if name is None:
            raise SqlError(f"GROUP BY {text}: not a key or window of the SELECT list")
        listed.add(name)
    missing = [n for n in grouped.values() if n not in listed]
    if missing:
        raise SqlError(f"{', '.join(missing)} must be in GROUP BY (every non-aggregate column is)")


def _aggregate(
    node: exp.Expression, alias: str | None, fields: Fields, source: SourceSpec
) -> AggSpec:
    cls, arg_node, params = _classify(node)
    if alias is None:
        raise SqlError(f"name the aggregate with AS, e.g. {node.sql()} AS total")
    if source.retracting and not cls.removable:
        if cls.stand_in is None:
            raise SqlError(
                f"{node.sql()}: source '{source.name}' is a change stream (format "
                f"'{source.format}') whose updates and deletes retract rows, and {cls.kind} "
                "cannot forget a value exactly; use count_distinct, or count per key"
            )
        cls = cls.stand_in
    need = "number" if cls.numeric_arg else "scalar"
    arg = compile_value(arg_node, fields, need) if arg_node is not None else None
    bare = arg_node.this if isinstance(arg_node, exp.Paren) else arg_node
    field = fields.column(bare) if isinstance(bare, exp.Column) else None
    return AggSpec(alias, cls.kind, node.sql(), arg, params, field)


def _classify(
    node: exp.Expression,
) -> tuple[type[Aggregate], exp.Expression | None, dict[str, Any]]:
    """(aggregate class, argument node, constructor params) for a SELECT item."""
    if isinstance(node, exp.Count):  # count(*), count(DISTINCT x), count(x)
        if isinstance(node.this, exp.Star):
            return SQL_NAMES["count"], None, {}
        if isinstance(node.this, exp.Distinct):
            inner = node.this.expressions
            if len(inner) != 1:
                raise SqlError(f"{node.sql()}: count(DISTINCT ...) takes one expression")
            return SQL_NAMES["count_distinct"], inner[0], {}
        return SQL_NAMES["count"], node.this, {}
    if isinstance(node, exp.Anonymous):  # a function sqlglot does not know: ours, by name
        fname = str(node.name).lower()
        args = node.expressions
        match = _PERCENTILE.match(fname)
        if match and len(args) == 1 and int(match.group(1)) >= 1:
            return SQL_NAMES["approx_percentile"], args[0], {"q": int(match.group(1)) / 100}
        cls = SQL_NAMES.get(fname)
        if cls is not None and len(args) in cls.sql_arity:
            return cls, args[0], _params(node, cls, args[1:])
    elif isinstance(node, exp.Func):  # sqlglot parsed it (sum, avg, ...): the names it answers to
        for name in type(node).sql_names():
            cls = SQL_NAMES.get(name.lower())
            if cls is not None:
                if node.args.get("expressions"):  # sqlglot reads min(a, b) as a variadic min
                    raise SqlError(f"{node.sql()}: {name.lower()} takes one argument")
                return cls, node.this, {}
    hint = ", ".join(c.sql_usage for c in KINDS if c.sql_usage)
    raise SqlError(f"'{node.sql()}' is not a supported aggregate or key; use one of: {hint}")


def _params(
    node: exp.Expression, cls: type[Aggregate], args: list[exp.Expression]
) -> dict[str, Any]:
    numbers = [_number_arg(node, arg) for arg in args]
    try:
        return cls.sql_params(numbers)
    except ValueError as err:
        raise SqlError(f"{node.sql()}: {err}") from None


def _number_arg(node: exp.Expression, arg: exp.Expression) -> float:
    try:
        value = literal(arg)
    except ExprError:
        value = None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise SqlError(f"{node.sql()}: '{arg.sql()}' must be a number")
    return value
