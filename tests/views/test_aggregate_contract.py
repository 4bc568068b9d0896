"""One contract for every aggregate (river's check suite is the model): merge equals feeding both
streams, state round-trips through JSON, add-then-remove returns to empty where removal exists,
merging never aliases the source, and results match a plain reference. And every class declares
the facts the engine reads from it (SQL names, result type, stand-in...), so an aggregate added to
``views.spec.KINDS`` cannot be forgotten somewhere (its columnar fold: tests/views/test_columns.py).
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from views.aggregates import Aggregate, NotRemovable
from views.spec import AGGREGATES, KINDS, SQL_NAMES, AggSpec, SourceSpec
from views.sql import SqlError, compile_view

Reference = Callable[[list[Any]], Any]


def _top(xs: list[Any]) -> list[dict[str, Any]]:
    ranked = sorted(Counter(xs).items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    return [{"value": v, "count": c} for v, c in ranked]


def _exact_quantile(xs: list[float]) -> float:
    return sorted(xs)[math.floor(0.9 * (len(xs) - 1))]


# kind -> (params, value generator, reference, relative tolerance of the stated bound)
CASES: dict[str, tuple[dict[str, Any], str, Reference, float]] = {
    "count": ({}, "number", len, 0.0),
    "sum": (
        {},
        "number",
        lambda xs: math.fsum(xs) if any(isinstance(x, float) for x in xs) else sum(xs),
        0.0,
    ),
    "avg": ({}, "number", lambda xs: math.fsum(xs) / len(xs), 0.0),
    "min": ({}, "number", min, 0.0),
    "max": ({}, "number", max, 0.0),
    "count_distinct": ({}, "label", lambda xs: len(set(xs)), 0.0),
    "approx_count_distinct": ({}, "label", lambda xs: len(set(xs)), 0.025),
    "approx_percentile": ({"q": 0.9}, "number", _exact_quantile, 0.01),
    "top_k": ({"k": 5, "capacity": 500}, "label", _top, 0.0),
    "sorted_min": ({}, "number", min, 0.0),
    "sorted_max": ({}, "number", max, 0.0),
    "sorted_percentile": ({"q": 0.9}, "number", _exact_quantile, 0.0),
}


def _values(kind: str, rng: random.Random, n: int, ints_only: bool) -> list[Any]:
    if kind == "label":
        return [f"v{int(rng.paretovariate(0.8)) % 2000}" for _ in range(n)]
    if ints_only:
        return [rng.randrange(-1000, 10**6) for _ in range(n)]
    return [
        rng.choice([rng.uniform(-1e3, 1e6), rng.randrange(-1000, 1000), 0.1, 1e-7])
        for _ in range(n)
    ]


def _spec(kind: str) -> AggSpec:
    return AggSpec("x", kind, kind, None, CASES[kind][0])


def _fed(kind: str, xs: list[Any]) -> Aggregate:
    agg = _spec(kind).new()
    for x in xs:
        agg.add(x)
    return agg


def _check(kind: str, got: Any, expected: Any) -> None:
    rel = CASES[kind][3]
    if rel == 0.0:
        assert got == expected
    else:
        assert abs(got - expected) <= rel * abs(expected) + 1e-9, (got, expected)


def test_every_aggregate_has_a_case() -> None:
    assert set(CASES) == set(AGGREGATES)


def test_every_aggregate_class_is_listed() -> None:
    def subclasses(cls: type[Aggregate]) -> set[type[Aggregate]]:
        return {s for c in cls.__subclasses__() for s in (c, *subclasses(c))}

    assert subclasses(Aggregate) == set(KINDS)


RESULT_TYPES = {"int", "number", "float", "array"}  # what views.spec.Column.type may say


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.kind)
def test_every_aggregate_declares_its_facts(cls: type[Aggregate]) -> None:
    assert AGGREGATES[cls.kind] is cls
    assert cls.result_type in RESULT_TYPES
    for fact in ("numeric_arg", "removable", "columnar"):
        assert isinstance(getattr(cls, fact), bool), fact
    assert all(SQL_NAMES[name] is cls for name in cls.sql_names)
    assert bool(cls.sql_names) == bool(cls.sql_usage)  # callable from SQL iff the hint names it
    assert cls.sql_arity
    assert min(cls.sql_arity) >= 1
    if cls.columnar:
        assert cls.fold_columns is not Aggregate.fold_columns, "columnar without a fold"
    stand_in = cls.stand_in
    if stand_in is not None:  # an exact twin that answers like the class it replaces
        assert not cls.removable
        assert stand_in in KINDS
        assert stand_in.removable
        assert stand_in.stand_in is None
        assert stand_in.shown == cls.kind
        assert stand_in.numeric_arg == cls.numeric_arg
    if not cls.sql_names:  # only reachable as a stand-in, and shown as what it stands in for
        assert [c for c in KINDS if c.stand_in is cls] == [AGGREGATES[cls.shown]]
    else:
        assert cls.shown == cls.kind


SOURCES = {
    "s": SourceSpec("s", "ts"),
    "changes": SourceSpec("changes", "ts", kind="kafka", format="debezium"),
}


def _call(name: str, arity: int) -> str:
    return f"{name}(x{', 1' * (arity - 1)})"  # 1 is a valid k, capacity and quantile


@pytest.mark.parametrize(
    ("cls", "name", "arity"),
    [(c, n, a) for c in KINDS for n in c.sql_names for a in c.sql_arity],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "kind", str(v)),
)
def test_sql_compiles_every_aggregate_by_its_declared_names(
    cls: type[Aggregate], name: str, arity: int
) -> None:
    sql = f"SELECT {_call(name, arity)} AS a FROM s"
    spec = compile_view("v", sql, SOURCES)
    assert [a.kind for a in spec.aggs] == [cls.kind]
    assert (spec.columns[0].type, spec.columns[0].aggregate) == (cls.result_type, cls.shown)
    assert spec.requirements["x"] == ("number" if cls.numeric_arg else "scalar")
    # On a change stream: the class itself, its stand-in, or a refusal naming it.
    sql = sql.replace("FROM s", "FROM changes")
    if not cls.removable and cls.stand_in is None:
        with pytest.raises(SqlError, match=f"{cls.kind} cannot forget a value exactly"):
            compile_view("v", sql, SOURCES)
        return
    first, _hidden_row_count = compile_view("v", sql, SOURCES).aggs
    assert first.kind == (cls.stand_in or cls).kind
    assert first.cls.removable
    assert compile_view("v", sql, SOURCES).columns[0].aggregate == cls.kind


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("ints_only", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_contract(kind: str, ints_only: bool, seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([1, 2, 50, 3000])
    xs = _values(CASES[kind][1], rng, n, ints_only)
    cut = rng.randrange(len(xs) + 1)
    left, right = xs[:cut], xs[cut:]

    whole = _fed(kind, xs)
    _check(kind, whole.result(), CASES[kind][2](xs))

    # merge(a, b) == feeding both streams, for exact and approximate alike
    merged = _fed(kind, left)
    part = _fed(kind, right)
    before = orjson.dumps(part.to_state())
    merged.merge(part)
    _check(kind, merged.result(), CASES[kind][2](xs))
    if CASES[kind][3] == 0.0 or kind == "approx_percentile":
        assert merged.result() == whole.result()

    # merging never aliases: changing the target leaves the merged-in part as it was
    merged.add(xs[0])
    assert orjson.dumps(part.to_state()) == before

    # state is JSON-able and round-trips exactly
    state = orjson.loads(orjson.dumps(whole.to_state()))
    restored = _spec(kind).from_state(state)
    assert restored.result() == whole.result()
    assert orjson.dumps(restored.to_state()) == orjson.dumps(whole.to_state())

    # removal: exact where offered, refused where not
    if whole.removable:
        for x in right:
            whole.remove(x)
        if left:
            _check(kind, whole.result(), CASES[kind][2](left))
        for x in left:
            whole.remove(x)
        assert whole.to_state() == _spec(kind).new().to_state()
    else:
        with pytest.raises(NotRemovable):
            whole.remove(xs[0])


def test_sum_is_exact_whatever_the_order() -> None:
    xs = [1e16, 1.0, -1e16, 3.14, 1e-3] * 200
    forward = _fed("sum", xs)
    backward = _fed("sum", list(reversed(xs)))
    assert forward.result() == backward.result() == math.fsum(xs)
    assert statistics.fmean(xs) == _fed("avg", xs).result()


def test_empty_aggregates_follow_sql() -> None:
    assert _spec("count").new().result() == 0
    for kind in ("sum", "avg", "min", "max", "approx_percentile"):
        assert _spec(kind).new().result() is None
    assert _spec("top_k").new().result() == []
