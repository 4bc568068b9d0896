"""A query's order in numpy (the default order by time then keys; ``order_by`` on a count, sum
or avg) is the order the Python sort of the answers gives — ties in default order, nulls last,
keys of mixed types — against an independent reference: every group's answers, sorted in plain
Python with ``sort_key``."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.views.test_engine_oracle import SOURCES
from views import query as q
from views.config import parse
from views.query import Query, all_rows, run
from views.registry import Batch, Registry
from views.sketches import sort_key

SQL = (
    "SELECT k, j, tumble(ts, '1 minute') AS m, count(*) AS n, count(a) AS na, sum(a) AS total, "
    "avg(a) AS mean, max(a) AS hi, p90(a) AS p90, count_distinct(a) AS da, "
    "top_k(k, 2) AS top FROM s GROUP BY k, j, m"
)
BASE = 1_790_000_000_000


SMALL = [1, 2, 2, 3, 0.5, -1]  # every sum below 2**53: sums and avgs are ranked in numpy
HUGE = [*SMALL, 1e300, -1e300]  # sums past 2**53: ranked in Python (Sum.sort_values: None)


def registry(seed: int, values: list[float] = SMALL) -> Registry:
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": SQL}}})
    reg = Registry(config.sources, config.views)
    rng = random.Random(seed)
    for i in range(4):
        events: list[dict[str, Any]] = []
        for _ in range(400):
            event: dict[str, Any] = {
                "ts": BASE + rng.randrange(5) * 60_000 + rng.randrange(60_000),
                "k": rng.choice(["x", "y", None, 3, 2.5, True, "10"]),  # mixed types, nulls
                "j": rng.choice(["p", "q"]),
            }
            if event["k"] != "10" and rng.random() < 0.9:  # "10"'s groups: no values, null sums
                event["a"] = rng.choice(values)
            events.append(event)
        reg.apply(Batch("s", events, i + 1))
    return reg


def reference(reg: Registry, query: Query) -> list[tuple[Any, ...]]:
    """Every group's answers (all_rows), sorted and paged in plain Python."""
    names = ["k", "j", "m", "n", "na", "total", "mean", "hi", "p90", "da", "top"]
    rows = [(*key, start, *answers) for (start, key), answers in all_rows(reg.views["v"]).items()]
    rows.sort(key=lambda r: (sort_key(r[2]), sort_key(r[0]), sort_key(r[1])))
    if query.order_by is not None:
        at = names.index(query.order_by)
        present = [r for r in rows if r[at] is not None]
        present.sort(key=lambda r: sort_key(r[at]), reverse=query.descending)  # stable
        rows = present + [r for r in rows if r[at] is None]
    return rows[query.offset : query.offset + query.limit]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("order_by", [None, "n", "na", "total", "mean", "hi", "p90", "da"])
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("values", [SMALL, HUGE], ids=["small", "huge"])
def test_the_numpy_order_is_the_python_order(
    seed: int, order_by: str | None, descending: bool, values: list[float]
) -> None:
    reg = registry(seed, values)
    part = reg.views["v"].parts[""]
    ids = part.pairs.alive_ids()
    assert any(r[2] is None for r in all_rows(reg.views["v"]).values())  # null sums: last
    for index in (2, 3):  # total, mean: in numpy when small, in Python when huge
        assert (part.aggs[index].sort_values(ids) is None) == (values is HUGE)
    for offset, limit in ((0, 10), (7, 25), (0, 10_000)):
        query = Query(order_by=order_by, descending=descending, offset=offset, limit=limit)
        got = run(reg.views["v"], query).rows
        assert got == reference(reg, query), (order_by, descending, offset, limit)


def test_sums_beyond_two_to_the_53_are_sorted_as_exact_integers() -> None:
    """Two sums that round to one float are ordered by their exact values: such a column is not
    sorted as floats (Sum.sort_values answers None), but as the answers."""
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": SQL}}})
    reg = Registry(config.sources, config.views)
    big = 2**53
    events = [
        {"ts": BASE, "k": "a", "j": "p", "a": big},
        {"ts": BASE, "k": "a", "j": "p", "a": 2},  # 2**53 + 2
        {"ts": BASE, "k": "b", "j": "p", "a": big},
        {"ts": BASE, "k": "b", "j": "p", "a": 1},  # 2**53 + 1: the same float as 2**53
    ]
    reg.apply(Batch("s", events, 1))
    view = reg.views["v"]
    assert view.parts[""].aggs[2].sort_values(view.parts[""].pairs.alive_ids()) is None
    rows = run(view, Query(order_by="total")).rows
    assert [(r[0], r[5]) for r in rows] == [("b", big + 1), ("a", big + 2)]


def test_the_python_ranking_is_still_what_a_column_without_sort_values_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Python ranking stays the fallback of ``order_by`` (a column without sort_values):
    with sort_values turned off for every column, the same answers."""
    reg = registry(1)
    queries = [Query(order_by=c, descending=d) for c in ("n", "total", "hi") for d in (False, True)]
    fast = [run(reg.views["v"], query).rows for query in queries]
    monkeypatch.setattr(q.Grouped, "sortable", lambda self, name, rows: None)
    assert [run(reg.views["v"], query).rows for query in queries] == fast


def test_an_avg_over_a_negative_count_is_ranked_as_its_answer() -> None:
    """A change stream's retraction of a value its group never had leaves n = -1 (nothing checks
    it for a plain sum): the answer is total / n, and so is its rank."""
    config = parse(
        {
            "sources": {"cdc": SOURCES["cdc"]},  # the oracle tests' change stream
            "views": {
                "v": {
                    "sql": "SELECT k, count(*) AS n, sum(a) AS total, avg(a) AS mean "
                    "FROM cdc GROUP BY k"
                }
            },
        }
    )
    reg = Registry(config.sources, config.views)
    rows = [
        {"ts": BASE, "k": "x"},
        {"ts": BASE, "k": "x"},
        {"ts": BASE, "k": "y", "a": 1},
        {"ts": BASE, "k": "x", "a": 4},
    ]
    reg.apply(Batch("cdc", rows, 1, part="t:0", weights=[1, 1, 1, -1]))
    view = reg.views["v"]
    answers = {r[0]: r[3] for r in run(view, Query()).rows}
    assert answers == {"x": 4.0, "y": 1.0}  # x: -4 / -1
    for descending in (False, True):
        got = [r[0] for r in run(view, Query(order_by="mean", descending=descending)).rows]
        assert got == sorted(answers, key=answers.__getitem__, reverse=descending)


def test_groups_read_in_place_under_group_by_keep_their_own_pairs() -> None:
    """group_by one key where each (time, k) is one stored pair: read in place, and each group
    is answered from its own pair though the stored order (by slot) is not the output order."""
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": SQL}}})
    reg = Registry(config.sources, config.views)
    t0 = BASE - BASE % 60_000  # a minute's start
    t1 = t0 + 60_000
    events = [
        {"ts": t0, "k": "a", "j": "p"},
        {"ts": t0, "k": "b", "j": "p"},
        *({"ts": t1, "k": "a", "j": "q"} for _ in range(3)),
        {"ts": t1, "k": "b", "j": "p"},
    ]
    reg.apply(Batch("s", events, 1))
    rows = run(reg.views["v"], Query(group_by=("k",))).rows
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("a", t0, 1),
        ("b", t0, 1),
        ("a", t1, 3),
        ("b", t1, 1),
    ]


@pytest.mark.parametrize("order_by", ["n", "na", "total", "mean", "hi", "p90", "da"])
def test_ordering_no_groups_at_all_answers_no_rows(order_by: str) -> None:
    """A filter that matches nothing, then order_by on any aggregate: no rows, no error (the
    numpy ranking of an empty selection takes no maximum of nothing)."""
    reg = registry(2)
    query = Query(order_by=order_by, descending=True, filters={"j": frozenset({"none"})})
    assert run(reg.views["v"], query).rows == []
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": SQL}}})
    empty = Registry(config.sources, config.views)  # no event yet
    assert run(empty.views["v"], Query(order_by=order_by)).rows == []


def test_sums_whose_floats_are_two_to_the_53_are_ranked_by_their_exact_values() -> None:
    """2**53 + 1 rounds to the float 2**53: two such sums tie as floats, not as answers. The
    float ranking takes only sums strictly below 2**53; these are ranked as the exact ints."""
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": SQL}}})
    reg = Registry(config.sources, config.views)
    big = 2**53
    events = [
        {"ts": BASE, "k": "a", "j": "p", "a": big + 1},  # the float 2**53, the int one more
        {"ts": BASE, "k": "b", "j": "p", "a": big},
    ]
    reg.apply(Batch("s", events, 1))
    view = reg.views["v"]
    assert view.parts[""].aggs[2].sort_values(view.parts[""].pairs.alive_ids()) is None
    rows = run(view, Query(order_by="total")).rows
    assert [(r[0], r[5]) for r in rows] == [("b", big), ("a", big + 1)]
