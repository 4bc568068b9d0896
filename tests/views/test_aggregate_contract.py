"""One contract for every aggregate (river's check suite is the model), on the array state: merge
equals feeding both streams, the buffers round-trip, add-then-remove returns to empty where
removal exists, merging never aliases the source, pairs stay apart, compaction keeps each pair's
answer, and results match a plain reference. And every class declares the facts the engine reads
from it (SQL names, result type, stand-in...), so an aggregate added to ``views.spec.KINDS``
cannot be forgotten somewhere.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from views.aggregates import Aggregate, Batch
from views.batch import from_values
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


def _fed(kind: str, xs: list[Any], pairs: int = 1, negate: bool = False) -> Aggregate:
    """An instance of ``pairs`` pairs, value i going to pair i % pairs, in batches of 700."""
    agg = _spec(kind).new()
    agg.resize(pairs)
    _feed(agg, xs, pairs, negate)
    return agg


def _feed(agg: Aggregate, xs: list[Any], pairs: int = 1, negate: bool = False) -> None:
    for start in range(0, len(xs), 700):
        chunk = xs[start : start + 700]
        group = np.arange(start, start + len(chunk)) % pairs
        agg.fold(Batch(np.arange(pairs), group, from_values(chunk), negate))


def _result(agg: Aggregate, pair: int = 0) -> Any:
    return agg.results(np.array([pair]))[0]


def _same_buffers(a: Aggregate, b: Aggregate) -> bool:
    x, y = a.buffers(), b.buffers()
    if set(x) != set(y):
        return False
    for name in x:
        if isinstance(x[name], np.ndarray):
            if not np.array_equal(x[name], y[name], equal_nan=x[name].dtype.kind == "f"):
                return False
        elif x[name] != y[name]:
            return False
    return True


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

    concrete = {c for c in subclasses(Aggregate) if not c.__dict__.get("abstract")}
    assert concrete == set(KINDS)


RESULT_TYPES = {"int", "number", "float", "array"}  # what views.spec.Column.type may say


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.kind)
def test_every_aggregate_declares_its_facts(cls: type[Aggregate]) -> None:
    assert AGGREGATES[cls.kind] is cls
    assert cls.result_type in RESULT_TYPES
    for fact in ("numeric_arg", "removable", "interned"):
        assert isinstance(getattr(cls, fact), bool), fact
    assert all(SQL_NAMES[name] is cls for name in cls.sql_names)
    assert bool(cls.sql_names) == bool(cls.sql_usage)  # callable from SQL iff the hint names it
    assert cls.sql_arity
    assert min(cls.sql_arity) >= 1
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
    _check(kind, _result(whole), CASES[kind][2](xs))

    # merge(a, b) == feeding both streams, for exact and approximate alike
    merged = _fed(kind, left)
    part = _fed(kind, right)
    before = _fed(kind, right)
    merged.absorb(part, np.array([0]), np.array([0]))
    _check(kind, _result(merged), CASES[kind][2](xs))
    if CASES[kind][3] == 0.0 or kind == "approx_percentile":
        assert _result(merged) == _result(whole)

    # merging never aliases: changing the target leaves the merged-in part as it was
    _feed(merged, xs[:1])
    assert _same_buffers(part, before)

    # the state round-trips through its buffers exactly
    restored = _spec(kind).new()
    restored.load(whole.buffers())
    assert _result(restored) == _result(whole)
    assert _same_buffers(restored, whole)

    # pairs stay apart; compaction keeps each kept pair's answer
    four = _fed(kind, xs, pairs=4)
    empty = _result(_spec(kind).new().empty(1))
    for p in range(4):
        if xs[p::4]:
            _check(kind, _result(four, p), CASES[kind][2](xs[p::4]))
        else:
            assert _result(four, p) == empty
    answers = four.results(np.array([3, 1]))
    four.take(np.array([1, 3]))
    assert four.results(np.array([1, 0])) == answers

    # removal: exact where offered (back to an empty pair)
    if whole.removable:
        _feed(whole, right, negate=True)
        if left:
            _check(kind, _result(whole), CASES[kind][2](left))
        _feed(whole, left, negate=True)
        assert _result(whole) == _result(_spec(kind).new().empty(1))


def test_sum_is_exact_whatever_the_order() -> None:
    xs = [1e16, 1.0, -1e16, 3.14, 1e-3] * 200
    forward = _fed("sum", xs)
    backward = _fed("sum", list(reversed(xs)))
    assert _result(forward) == _result(backward) == math.fsum(xs)
    assert statistics.fmean(xs) == _result(_fed("avg", xs))


def test_empty_aggregates_follow_sql() -> None:
    assert _result(_spec("count").new().empty(1)) == 0
    for kind in ("sum", "avg", "min", "max", "approx_percentile"):
        assert _result(_spec(kind).new().empty(1)) is None
    assert _result(_spec("top_k").new().empty(1)) == []
