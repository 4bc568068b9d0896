"""The aggregates (views/aggregates/) through the engine, where their mutants survived.

Written against what survives the array rewrite (issue 15): events go in with
``Registry.apply``, answers come out of ``views.query.run`` and are compared with the plain
reference (tests/reference.py); snapshots are ``Registry.to_state`` / ``load_state``. The
aggregate contract (``AggSpec.new()``, ``merge``, ``to_state``) is used only where the contract
itself is the point: merge equals feeding both streams, state for state.
"""

from __future__ import annotations

import gc
import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from ingest.columnar import ChangeReader
from ingest.decode import Decoder
from tests import reference as ref
from tests.helpers import TABLE_MIN_LINES, ndjson
from tests.oracle.aggregates import TopK as OracleTop
from views import snapshot
from views.aggregates import (
    Aggregate,
    ApproxCountDistinct,
    ApproxPercentile,
    Count,
    CountDistinct,
    SortedMin,
    Sum,
    TopK,
)
from views.aggregates import Batch as AggBatch
from views.aggregates.base import grow
from views.aggregates.distinct import hashes
from views.aggregates.multiset import Exact
from views.batch import from_values
from views.config import ConfigError, parse
from views.hashing import hash_value
from views.query import Query, run
from views.registry import Batch, Registry
from views.sketches import DDSketch, HyperLogLog
from views.spec import KINDS

MINUTE = 60_000
T0 = 1_790_000_000_000 - 1_790_000_000_000 % MINUTE
SOURCES: dict[str, Any] = {
    "s": {"time": "ts"},
    # A change stream (Debezium over Kafka): removable aggregates and their stand-ins only.
    "c": {
        "from": "kafka",
        "format": "debezium",
        "topic": "t",
        "bootstrap": "127.0.0.1:9",
        "group": "g",
        "time": "ts",
    },
}


def registry(views: dict[str, str], **options: Any) -> Registry:
    config = parse(
        {"sources": SOURCES, "views": {n: {"sql": sql, **options} for n, sql in views.items()}}
    )
    return Registry(config.sources, config.views)


def restored(reg: Registry) -> Registry:
    """A new registry of the same definitions, loaded from ``reg``'s snapshot (the codec's
    bytes, as a restore reads them)."""
    sources = {name: state.spec for name, state in reg.sources.items()}
    fresh = Registry(sources, {name: view.spec for name, view in reg.views.items()})
    fresh.load_state(snapshot.decode(snapshot.encode(reg.to_state())))
    return fresh


def feed(
    reg: Registry,
    events: list[dict[str, Any]],
    rng: random.Random,
    columns: bool = False,
    source: str = "s",
    weights: list[int] | None = None,
    size: int | None = None,
) -> None:
    """``events`` in random-sized batches (or of ``size``): row batches, or (``columns``)
    NDJSON bodies read column-wise as the HTTP source reads large ones."""
    decoder = Decoder(reg.sources[source].spec, 1 << 20)
    i = 0
    while i < len(events):
        n = size or (
            rng.randrange(TABLE_MIN_LINES, 3 * TABLE_MIN_LINES) if columns else rng.randrange(1, 60)
        )
        chunk = events[i : i + n]
        position = reg.sources[source].positions.get("", 0) + 1
        table = decoder.columns(ndjson(chunk)) if columns else None
        assert table is not None or not columns or len(chunk) < TABLE_MIN_LINES
        if table is not None:
            reg.apply(Batch(source, [], position, columns=table))
        else:
            part = None if weights is None else weights[i : i + n]
            reg.apply(Batch(source, [dict(e) for e in chunk], position, weights=part))
        i += n


def answer(reg: Registry, view: str, **query: Any) -> list[dict[str, Any]]:
    result = run(reg.views[view], Query(limit=100_000, **query))
    names = [c.name for c in result.columns]
    return [dict(zip(names, row, strict=True)) for row in result.rows]


def stored_pair(reg: Registry, view: str, key: tuple[Any, ...]) -> int:
    """The pair id of group ``key`` in a view without a window (bucket 0 of its one part)."""
    slot = reg.views[view].keys.slot_of[key]
    (pair,) = reg.views[view].parts[""].pairs.find(np.array([0]), np.array([slot])).tolist()
    return int(pair)


def keyed(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(r[k] for k in keys): r for r in rows}


# -- every aggregate, both paths, across a restore -------------------------------------------

EVERY = """SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, count(x) AS cx, sum(x) AS total,
    avg(x) AS mean, min(x) AS lo, max(x) AS hi, count_distinct(u) AS users,
    approx_count_distinct(u) AS approx_users, approx_percentile(x, 0.25) AS q25,
    top_k(u, 3) AS top
    FROM s GROUP BY k, m"""


def orders(rng: random.Random, n: int, ints_only: bool = False) -> list[dict[str, Any]]:
    """Keys a, b, c, and "void" whose ``x`` is always NULL (met first: a group without values
    among groups with values)."""
    out = []
    for i in range(n):
        k = "void" if i < 20 else rng.choice(["a", "b", "c", "void"])
        x: Any = rng.choice(
            [rng.randrange(-500, 500), rng.randrange(1, 90), None]
            if ints_only
            else [round(rng.uniform(-50, 400), 2), rng.randrange(-500, 500), 0.5, None]
        )
        if k == "void":
            x = None
        e = {
            "ts": T0 + rng.randrange(6 * MINUTE),
            "k": k,
            "x": x,
            "u": f"u{int(rng.paretovariate(1.2)) % 80}",
        }
        if x is None and rng.random() < 0.5:
            del e["x"]
        out.append(e)
    return out


def figures(xs: list[Any]) -> dict[str, Any]:
    """The exact figures of a group's non-null values, as the views name them."""
    return {
        "cx": len(xs),
        "total": ref.fsum_or_none(xs),
        "mean": ref.avg(xs),
        "lo": min(xs, default=None),
        "hi": max(xs, default=None),
    }


def every_expected(events: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    out = {}
    timed = [{**e, "_ts": e["ts"]} for e in events]  # the reference's event-time field
    for (start, k), rows in ref.group(timed, lambda e: True, ["k"], ref.tumble(MINUTE)).items():
        xs, users = ref.values(rows, "x"), ref.values(rows, "u")
        out[(k, start)] = {
            "k": k,
            "m": start,
            "n": len(rows),
            **figures(xs),
            "users": len(set(users)),
            "approx_users": len(set(users)),  # HyperLogLog is exact below 256 values
            "q25": ref.Approx(ref.lower_quantile(xs, 0.25), 0.01),
            "top": ref.top(users, 3),
        }
    return out


@pytest.mark.parametrize("columns", [False, True], ids=["rows", "columns"])
@pytest.mark.parametrize("seed", range(2))
def test_every_aggregate_matches_the_reference_across_a_restore(columns: bool, seed: int) -> None:
    rng = random.Random(seed)
    events = orders(rng, 9000 if columns else 1500)
    half = len(events) // 2
    whole = registry({"v": EVERY}, grace="1h")
    feed(whole, events, rng, columns)
    first = registry({"v": EVERY}, grace="1h")
    feed(first, events[:half], rng, columns)
    again = restored(first)
    assert answer(again, "v") == answer(first, "v")
    feed(again, events[half:], rng, columns)  # restored state keeps counting
    expected = every_expected(events)
    for reg in (whole, again, restored(whole)):
        got = keyed(answer(reg, "v"), "k", "m")
        assert got.keys() == expected.keys()
        for key, row in expected.items():
            assert got[key] == row, key


def test_the_column_reader_and_the_row_decoder_reach_the_same_answers_exactly() -> None:
    """count, count_distinct, min, max, integer sums and the sketches (same hashes, same bins,
    also at the edge of DDSketch's zero band): a body read column-wise and the same events
    decoded row by row answer exactly alike, sketches included, and so does a restore."""
    sql = """SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, count_distinct(u) AS users,
        min(i) AS lo, max(i) AS hi, sum(i) AS total, p50(x) AS med,
        approx_count_distinct(u) AS approx_users FROM s GROUP BY k, m"""
    rng = random.Random(5)
    events = orders(rng, 3 * TABLE_MIN_LINES, ints_only=True)
    edges = [1e-12, -1e-12, 1e-13, -1e-13, 0, 0.0, 2e-12, -2e-12, -3.5, 1.0, -1.0, None]
    for e in events:
        e["i"] = e.pop("x", None)
        e["x"] = rng.choice([*edges, round(rng.uniform(-100, 100), 3)])
    by_rows, by_columns = registry({"v": sql}, grace="1h"), registry({"v": sql}, grace="1h")
    half = len(events) // 2
    for chunk in (events[:half], events[half:]):  # the second batch folds into existing groups
        feed(by_rows, chunk, rng)
        feed(by_columns, chunk, rng, columns=True)
    assert answer(by_columns, "v") == answer(by_rows, "v")
    assert answer(restored(by_columns), "v") == answer(by_rows, "v")
    timed = [{**e, "_ts": e["ts"]} for e in events]
    expected = ref.group(timed, lambda e: True, ["k"], ref.tumble(MINUTE))
    got = keyed(answer(by_rows, "v"), "k", "m")
    assert got.keys() == {(k, start) for start, k in expected}
    for (start, k), rows in expected.items():
        ints = ref.values(rows, "i")
        row = got[(k, start)]
        assert (row["n"], row["lo"], row["hi"]) == (
            len(rows),
            min(ints, default=None),
            max(ints, default=None),
        )
        assert row["total"] == (sum(ints) if ints else None)
        assert row["users"] == row["approx_users"] == len(set(ref.values(rows, "u")))


def test_top_k_of_one_batch_keeps_the_most_frequent_whatever_its_capacity() -> None:
    """A batch's exact counts, cut to the capacity by count then value: one batch read
    column-wise answers exactly, even with more distinct values than the capacity. Ties are
    broken by value, not by the order Arrow happens to meet them."""
    rng = random.Random(7)
    values = [f"v{i:03d}" for i in range(400)]  # 400 values once each
    values += [v for v in ("w3", "w2", "w1", "w0") for _ in range(5)]  # four ties at 6
    values += ["z"] * 9
    values = values[::-1] * 6  # met in reverse order: z first, v000 last
    for k, capacity in ((1, 1), (3, 3), (3, 5), (6, 50)):
        reg = registry({"v": f"SELECT top_k(u, {k}, {capacity}) AS top FROM s"})
        events = [{"ts": T0 + i, "u": v} for i, v in enumerate(values)]
        feed(reg, events, rng, columns=True, size=len(events))
        assert answer(reg, "v") == [{"top": ref.top(values, k)}], (k, capacity)


@pytest.mark.parametrize("columns", [False, True])
def test_top_k_summaries_that_evict_across_batches_are_the_scalar_summary(columns: bool) -> None:
    """Two groups, a capacity of 3, a few dozen values: every batch's merge evicts entries, and
    each group's stored summary must be the scalar Space-Saving fed the same batches — entry for
    entry, counts and errors, nothing evicted left behind (a store that kept a group's old
    entries beside its new ones answered the same top-k on the suite's data)."""
    rng = random.Random(11)
    values = [
        f"u{rng.randrange(40) if rng.random() < 0.7 else rng.randrange(5)}" for _ in range(900)
    ]
    events = [{"ts": T0 + i, "k": "ab"[i % 2], "u": v} for i, v in enumerate(values)]
    reg = registry({"v": "SELECT k, top_k(u, 2, 3) AS top FROM s GROUP BY k"})
    size = 3 * TABLE_MIN_LINES if columns else 37
    oracles = {k: OracleTop(k=2, capacity=3) for k in "ab"}
    for start in range(0, len(events), size):
        chunk = events[start : start + size]
        feed(reg, chunk, rng, columns=columns, size=len(chunk))
        for e in chunk:
            oracles[str(e["k"])].add(e["u"])
        for oracle in oracles.values():
            oracle.end_batch()
    part = reg.views["v"].parts[""]
    (aggregate,) = part.aggs
    assert isinstance(aggregate, TopK)
    assert len(aggregate.pair) <= 2 * 3  # at most the capacity per group
    for k, oracle in oracles.items():
        pair = stored_pair(reg, "v", (k,))
        assert aggregate.summary(pair).to_state() == oracle.sketch.to_state(), k
        assert len(oracle.sketch.counts) == 3


@pytest.mark.parametrize("kind", [Count, Sum])
def test_a_snapshot_holds_the_pairs_in_use_not_the_arrays_spare_room(
    kind: type[Aggregate],
) -> None:
    """Arrays grow by half again (``grow``) so that adding pairs batch by batch stays cheap; what
    is saved is the ``size`` pairs in use, never the spare room: a snapshot's bytes follow the
    pairs. Read back, the state answers the same."""
    aggregate = kind()
    for size in (5, 17, 18, 40):  # capacity 16, 24, 24, 40: spare room but at the last
        aggregate.resize(size)
    batch = AggBatch(np.array([3, 39]), np.array([0, 1, 1]), from_values([2, 5, 7]))
    aggregate.fold(batch)
    saved = aggregate.buffers()
    arrays = [v for v in saved.values() if isinstance(v, np.ndarray)]
    assert arrays
    assert [len(v) for v in arrays] == [40] * len(arrays)
    aggregate.resize(41)  # capacity 60
    grown = [v for v in aggregate.buffers().values() if isinstance(v, np.ndarray)]
    assert [len(v) for v in grown] == [41] * len(grown)
    again = kind()
    again.load(snapshot.decode(snapshot.encode(saved)))
    ids = np.array([3, 39, 0])
    expected = [1, 2, 0] if kind is Count else [2, 12, None]
    assert aggregate.results(ids) == expected
    assert again.results(ids) == expected


def test_grow_keeps_values_and_dtype_and_grows_by_half_again() -> None:
    """``grow``'s contract (views/aggregates/base.py): values and dtype kept, the new entries
    ``fill``; by at least half again and to 16 at least, so that pairs added a batch at a time
    are copied O(1) times each (a capacity of exactly ``size`` copied every array at every new
    pair); an array long enough already is the same array."""
    floats = np.array([1.5, -2.5])
    grown = grow(floats, 3)  # an int fill into a float array: still floats
    assert grown.dtype == np.float64
    assert grown.tolist() == [1.5, -2.5] + [0.0] * 14
    assert grow(grown, 16) is grown
    assert len(grow(np.zeros(0, np.int64), 1)) == 16
    assert len(grow(np.zeros(16, np.int64), 17)) == 24
    assert len(grow(np.zeros(100, np.int64), 101)) == 150
    assert len(grow(np.zeros(100, np.int64), 400)) == 400
    wide = grow(np.ones((2, 3), np.int64), 5, fill=-1)
    assert wide.shape == (16, 3)
    assert wide[:2].tolist() == [[1, 1, 1]] * 2
    assert (wide[2:] == -1).all()
    copies, array = 0, np.zeros(0, np.int64)
    for size in range(1, 10_001):  # a pair a batch
        if len(array) < size:
            copies += len(array)
        array = grow(array, size)
    assert copies < 3 * 10_000


def test_integer_sums_beyond_int64_stay_exact_in_a_large_body() -> None:
    """Integers beyond 2**53 in a body large enough for the column reader: it leaves them to the
    row decoder (float64 would round them), and the sum stays the exact integer."""
    rng = random.Random(3)
    events: list[dict[str, Any]] = [
        {"ts": T0 + i, "k": "a", "x": rng.randrange(1 << 60, 1 << 62) * rng.choice([1, -1, 1])}
        for i in range(TABLE_MIN_LINES + 10)
    ]
    reg = registry({"v": "SELECT k, sum(x) AS total, count(x) AS n FROM s GROUP BY k"})
    body = ndjson(events)
    decoder = Decoder(reg.sources["s"].spec, 1 << 20)
    assert decoder.columns(body) is None
    decoded = decoder.decode(body)
    assert decoded.errors == []
    reg.apply(Batch("s", decoded.events, 1))
    total = sum(e["x"] for e in events)
    assert answer(reg, "v") == [{"k": "a", "total": total, "n": len(events)}]


# -- snapshots of what the engine keeps per value --------------------------------------------


def test_count_distinct_of_mixed_types_snapshots_and_restores() -> None:
    rng = random.Random(9)
    pool: list[Any] = ["a", "b", "10", 10, 3, 2.5, True, False, -1, "True"]
    events = [{"ts": T0 + i, "k": i % 2, "u": rng.choice(pool)} for i in range(400)]
    reg = registry({"v": "SELECT k, count_distinct(u) AS d, count(*) AS n FROM s GROUP BY k"})
    feed(reg, events, rng)
    expected = [
        {"k": k, "d": len({e["u"] for e in events if e["k"] == k}), "n": 200} for k in (0, 1)
    ]
    assert answer(reg, "v", order_by="k") == expected
    assert answer(restored(reg), "v", order_by="k") == expected


# -- change streams: exact, removable stand-ins ----------------------------------------------

CHANGES = """SELECT k, count(*) AS n, count(x) AS cx, sum(x) AS total, avg(x) AS mean,
    min(x) AS lo, max(x) AS hi, p50(x) AS med, count_distinct(x) AS d FROM c GROUP BY k"""


def changes(
    rng: random.Random, n: int
) -> tuple[list[dict[str, Any]], list[int], Counter[str], int]:
    """Inserts, deletes of earlier inserts and deletes of rows never inserted (a value no row
    of its group holds); the rows alive at the end (as JSON texts), and how many deletes match
    nothing."""
    events: list[dict[str, Any]] = []
    weights: list[int] = []
    alive: Counter[str] = Counter()
    bogus = 0
    for i in range(n):
        roll = rng.random()
        if roll < 0.05:
            events.append({"ts": T0 + i, "k": rng.choice(["a", "b"]), "x": 1000 + i})
            weights.append(-1)
            bogus += 1
            continue
        if alive and roll < 0.4:
            row = rng.choice(sorted(alive.elements()))
            alive[row] -= 1
            events.append(orjson.loads(row))
            weights.append(-1)
            continue
        k = rng.choice(["a", "b", "nulls"])
        x = None if k == "nulls" else rng.choice([rng.randrange(-40, 40), 0.5, -2.25, None])
        e = {"ts": T0 + i, "k": k, "x": x}
        alive[orjson.dumps(e).decode()] += 1
        events.append(e)
        weights.append(1)
    return events, weights, alive, bogus


@pytest.mark.parametrize("seed", range(3))
def test_change_streams_answer_what_is_left_after_retractions(seed: int) -> None:
    """A delete that matches nothing is counted and skipped whole: no aggregate of its group
    forgets anything, even those that could (count, sum) before one that cannot refuses."""
    rng = random.Random(seed)
    events, weights, alive, bogus = changes(rng, 600)
    reg = registry({"v": CHANGES})
    feed(reg, events, rng, source="c", weights=weights)
    rows = [orjson.loads(text) for text in alive.elements()]
    expected = {}
    for (_, k), group in ref.group(rows, lambda e: True, ["k"], None).items():
        xs = ref.values(group, "x")
        expected[(k,)] = {
            "k": k,
            "n": len(group),
            **figures(xs),
            "med": ref.lower_quantile(xs, 0.5),
            "d": len(set(xs)),
        }
    for got_reg in (reg, restored(reg)):
        got = keyed(answer(got_reg, "v"), "k")
        assert got.keys() == expected.keys()
        for key, row in expected.items():
            assert got[key] == pytest.approx(row), key
    assert reg.views["v"].counter("unmatched") == bogus > 0


# -- parameters ------------------------------------------------------------------------------


def test_the_extreme_quantiles_are_the_minimum_and_the_maximum() -> None:
    sql = """SELECT approx_percentile(x, 0) AS q0, approx_percentile(x, 1) AS q1,
        min(x) AS lo, max(x) AS hi FROM s"""
    rng = random.Random(4)
    events = [{"ts": T0 + i, "x": rng.uniform(1, 1000)} for i in range(500)]
    reg = registry({"v": sql})
    feed(reg, events, rng)
    (row,) = answer(reg, "v")
    xs = [e["x"] for e in events]
    assert (row["lo"], row["hi"]) == (min(xs), max(xs))
    assert row["q0"] == ref.Approx(min(xs), 0.01)
    assert row["q1"] == ref.Approx(max(xs), 0.01)


def test_top_k_is_exact_while_its_default_capacity_holds_every_value() -> None:
    """Default capacity: 100 k, at least 100. Rare values first, so that a smaller summary
    would have evicted them and over-counted the late heavy hitters."""
    rng = random.Random(6)
    for k, distinct in ((1, 100), (2, 200), (5, 500)):
        rare = [f"r{i}" for i in range(distinct - k)]
        values = rare + [f"r{i}" for i in range(0, len(rare), 2)] + [f"h{j}" for j in range(k)] * 3
        events = [{"ts": T0 + i, "u": v} for i, v in enumerate(values)]
        reg = registry({"v": f"SELECT top_k(u, {k}) AS top FROM s"})
        feed(reg, events, rng)
        assert answer(reg, "v") == [{"top": ref.top(values, k)}], k


def test_top_k_with_a_capacity_is_exact_up_to_it() -> None:
    values = [f"r{i}" for i in range(149)] + ["h"] * 2 + ["r0"]
    rng = random.Random(2)
    reg = registry({"v": "SELECT top_k(u, 2, 150) AS top FROM s"})
    feed(reg, [{"ts": T0 + i, "u": v} for i, v in enumerate(values)], rng)
    assert answer(reg, "v") == [{"top": ref.top(values, 2)}]


@pytest.mark.parametrize(
    ("call", "accepted"),
    [
        ("top_k(u, 1)", True),
        ("top_k(u, 1000)", True),
        ("top_k(u, 3, 3)", True),
        ("top_k(u, 3, 100000)", True),
        ("top_k(u, 0)", False),
        ("top_k(u, 1001)", False),
        ("top_k(u, 2.5)", False),
        ("top_k(u, 3, 2)", False),
        ("top_k(u, 3, 100001)", False),
        ("top_k(u, 3, 10.5)", False),
        ("approx_percentile(x, 0)", True),
        ("approx_percentile(x, 1)", True),
        ("approx_percentile(x, 1.01)", False),
        ("approx_percentile(x, -0.01)", False),
    ],
)
def test_aggregate_parameters_are_checked_at_definition(call: str, accepted: bool) -> None:
    sql = f"SELECT {call} AS a FROM s"
    if accepted:
        registry({"v": sql})
        return
    if call.startswith("top_k"):
        words = "k must be a whole number from 1 to 1000"
        if call.count(",") == 2 and call.split(",")[1].strip() == "3":
            words = "capacity must be a whole number from k to 100000"
    else:
        words = "the quantile must be between 0 and 1"
    with pytest.raises(ConfigError, match=re.escape(f"): {words}") + "$"):
        registry({"v": sql})


@pytest.mark.parametrize("big", [2.0**53, 2.0**53 + 2, 2.0**54 - 2, 2.0**60])
def test_whole_floats_from_2_to_the_53_on_answer_their_exact_value(big: float) -> None:
    """JSON has one number type: whole floats below 2**53 are answered as integers; larger
    ones keep their exact value: min and max the floats they are, a sum (kept exactly, as an
    integer times a power of two) the exact integer."""
    rng = random.Random(14)
    sql = "SELECT sum(x) AS total, min(x) AS lo, max(x) AS hi FROM s"
    below = registry({"v": sql})
    feed(below, [{"ts": T0, "x": 2.0**53 - 1}], rng)
    above = registry({"v": sql})
    feed(above, [{"ts": T0, "x": big}], rng)
    for value in answer(below, "v")[0].values():
        assert (type(value), value) == (int, 2**53 - 1)
    (row,) = answer(above, "v")
    assert [(type(v), v) for v in row.values()] == [(int, int(big)), (float, big), (float, big)]


# -- the contract, where it is the point -----------------------------------------------------

EVERY_KIND = """SELECT k, count(*) AS n, sum(x) AS total, avg(x) AS mean, min(x) AS lo,
    max(x) AS hi, count_distinct(u) AS users, approx_count_distinct(u) AS approx_users,
    approx_percentile(x, 0.5) AS med, top_k(u, 3) AS top FROM s GROUP BY k"""


@pytest.mark.parametrize("n", [40, 2000])
def test_partitions_merged_by_a_query_answer_as_one_stream(n: int) -> None:
    """Every aggregate's merge (``absorb``, what a query does across partitions) leaves the
    state of feeding both streams into one: the answers are exactly the same, sketches
    included, and top_k is exact while its capacity holds every value."""
    rng = random.Random(n)
    events = [
        {
            "ts": T0 + i,
            "k": rng.choice("ab"),
            "x": rng.choice([rng.randrange(-50, 50), rng.uniform(-5, 5), None]),
            "u": f"v{rng.randrange(max(n // 40, 2))}",
        }
        for i in range(n)
    ]
    one, split = registry({"v": EVERY_KIND}), registry({"v": EVERY_KIND})
    cut = rng.randrange(1, n)
    one.apply(Batch("s", [dict(e) for e in events], 1, part="p0"))
    split.apply(Batch("s", [dict(e) for e in events[:cut]], 1, part="p0"))
    split.apply(Batch("s", [dict(e) for e in events[cut:]], 1, part="p1"))
    assert len(split.views["v"].parts) == 2
    merged = keyed(answer(split, "v"), "k")
    assert merged == keyed(answer(one, "v"), "k")
    for k, row in merged.items():
        us = [e["u"] for e in events if (e["k"],) == k]
        xs = [e["x"] for e in events if (e["k"],) == k and e["x"] is not None]
        assert (row["n"], row["users"], row["top"]) == (len(us), len(set(us)), ref.top(us, 3))
        assert (row["lo"], row["hi"]) == (min(xs), max(xs))


# -- declaring an aggregate class ------------------------------------------------------------


class Declare:
    """Declares aggregate classes for a test; they are gone again afterwards."""

    def __init__(self) -> None:
        self.made: list[type[Aggregate]] = []

    def __call__(self, name: str, parent: type[Aggregate], body: dict[str, Any]) -> type[Aggregate]:
        cls = type(name, (parent,), body)
        assert issubclass(cls, Aggregate)
        self.made.append(cls)
        return cls


def _subclasses(cls: type[Aggregate]) -> set[type[Aggregate]]:
    return {s for c in cls.__subclasses__() for s in (c, *_subclasses(c))}


@pytest.fixture
def declare() -> Iterator[Declare]:
    """``Aggregate``'s subclasses are the engine's own (tests/views/test_aggregate_contract.py
    checks that list): the classes a test declares must not outlive it."""
    made = Declare()
    yield made
    made.made.clear()
    gc.collect()
    assert not [c for c in _subclasses(Aggregate) if c.__module__ == __name__]


def test_a_new_aggregate_must_declare_its_kind_and_result_type(declare: Declare) -> None:
    for body in ({"result_type": "int"}, {"kind": "k"}):
        with pytest.raises(
            TypeError, match=r"^aggregate Bad must declare its kind and result_type$"
        ):
            declare("Bad", Aggregate, body)
    assert declare.made == []


def test_a_new_aggregate_inherits_no_facts_about_itself(declare: Declare) -> None:
    """A subclass is another aggregate: unless it says so, it is not callable from SQL, shows
    its own kind and has no stand-in — but may share its parent's result type and arity."""
    plain = declare("Plain", Aggregate, {"kind": "plain", "result_type": "int"})
    assert (plain.sql_names, plain.sql_usage, plain.shown, plain.stand_in) == (
        (),
        "",
        "plain",
        None,
    )
    for parent in KINDS:
        child = declare("Child", parent, {"kind": "child"})
        assert child.sql_names == ()
        assert child.sql_usage == ""
        assert child.shown == "child"
        assert child.stand_in is None
        assert child.result_type == parent.result_type
        assert child.sql_arity == parent.sql_arity
    own = declare(
        "Own",
        Aggregate,
        {
            "kind": "own",
            "result_type": "int",
            "sql_names": ("own",),
            "sql_usage": "own(x)",
            "shown": "count",
            "stand_in": plain,
        },
    )
    assert (own.sql_names, own.sql_usage, own.shown, own.stand_in) == (
        ("own",),
        "own(x)",
        "count",
        plain,
    )


def test_sums_are_exact_whatever_the_batching() -> None:
    """Huge and tiny floats that cancel: the reference is math.fsum over every value."""
    rng = random.Random(8)
    pool = [4e15, -4e15, 1.0, 1e-3, 3.14, -2.5, 7]  # under 2**53: read column-wise
    events = [{"ts": T0 + i, "x": rng.choice(pool)} for i in range(TABLE_MIN_LINES * 2)]
    for columns in (False, True):
        reg = registry({"v": "SELECT sum(x) AS total, avg(x) AS mean FROM s"})
        feed(reg, events, rng, columns)
        xs = [e["x"] for e in events]
        assert answer(reg, "v") == [{"total": math.fsum(xs), "mean": math.fsum(xs) / len(xs)}]


def test_approx_distinct_of_ones_after_trues_counts_each_value_once() -> None:
    """True == 1 as a dict key, but not as a value (they hash apart, as SQL tells them apart):
    a column of booleans must not leave its hashes for a column of integers to reuse. Column
    path first, then the row path, into the same groups, as a WAL replay or a small batch does."""
    sql = "SELECT approx_count_distinct(flag) AS flags, approx_count_distinct(n) AS ns FROM s"
    rng = random.Random(13)
    events = [{"ts": T0 + i, "flag": i % 2 == 0, "n": i % 3} for i in range(TABLE_MIN_LINES)]
    reg = registry({"v": sql})
    feed(reg, events, rng, columns=True, size=len(events))
    feed(reg, [{"ts": T0, "flag": False, "n": 1}, {"ts": T0, "flag": True, "n": 0}], rng)
    assert answer(reg, "v") == [{"flags": 2, "ns": 3}]


# -- found by the columnar engine's mutation run -----------------------------------------------


def test_shared_machinery_declared_abstract_needs_no_kind(declare: Declare) -> None:
    """``abstract = True`` marks a base of several aggregates (``Exact``): it declares no kind
    of its own, and its subclasses still must."""
    machinery = declare("Machinery", Exact, {"abstract": True})
    assert not hasattr(machinery, "kind")
    one = declare("One", machinery, {"kind": "one", "result_type": "int"})
    assert (one.kind, one.shown, one.sql_names) == ("one", "one", ())
    with pytest.raises(TypeError, match=r"^aggregate Two must declare its kind and result_type$"):
        declare("Two", machinery, {"result_type": "int"})


@pytest.mark.parametrize("dense_first", [False, True], ids=["sparse-first", "dense-first"])
def test_approx_distinct_merges_dense_partitions_with_a_sparse_one(dense_first: bool) -> None:
    """Partitions past HyperLogLog's sparse limit (256 distinct values) merged at query time
    with each other and with one still exact: the registers of all, as if one stream had fed
    them all (the same estimate, exactly), whichever partition the query meets first."""
    sql = "SELECT k, approx_count_distinct(u) AS d, count(*) AS n FROM s GROUP BY k"
    many = [{"ts": T0 + i, "k": "a", "u": f"m{i}"} for i in range(3000)]
    # "b" first: its entries come before "a"'s in the merged sparse state
    few = [{"ts": T0, "k": "b", "u": "only"}]
    few += [{"ts": T0 + i, "k": "a", "u": f"f{i}"} for i in range(40)]
    parts = [many[:1500], many[1500:], few]
    if not dense_first:
        parts.reverse()
    split, one = registry({"v": sql}), registry({"v": sql})
    for position, events in enumerate(parts, start=1):
        # A query merges parts in name order: named so that it meets them in this list's order
        # (the sparse one first: its group is made dense in the merge, entries and all).
        split.apply(Batch("s", [dict(e) for e in events], position, part=f"p{position}"))
    one.apply(Batch("s", [dict(e) for e in many + few], 1))
    merged = answer(split, "v", order_by="k")
    assert merged == answer(one, "v", order_by="k")
    assert [(r["k"], r["n"]) for r in merged] == [("a", 3040), ("b", 1)]
    assert merged[1]["d"] == 1
    assert abs(merged[0]["d"] - 3040) <= 0.02 * 3040


def test_a_pairs_sketch_is_the_scalar_sketch_of_its_values() -> None:
    """``sketch(pair)`` (what the oracle tests compare) for a dense pair — the first one, whose
    register row is 0 — and a sparse one: the scalar HyperLogLog of the same values."""
    sql = "SELECT k, approx_count_distinct(u) AS d FROM s GROUP BY k"
    reg = registry({"v": sql})
    events = [{"ts": T0 + i, "k": "a", "u": f"u{i}"} for i in range(1000)]
    events += [{"ts": T0, "k": "b", "u": f"u{i}"} for i in range(5)]
    reg.apply(Batch("s", [dict(e) for e in events], 1))
    view = reg.views["v"]
    part = view.parts[""]
    (aggregate,) = part.aggs
    assert isinstance(aggregate, ApproxCountDistinct)
    for pair in part.pairs.alive_ids().tolist():
        key = view.keys.keys[int(part.pairs.slots(np.array([pair]))[0])]
        expected = HyperLogLog()
        for e in events:
            if (e["k"],) == key:
                expected.add(str(e["u"]))
        assert aggregate.sketch(pair).to_state() == expected.to_state(), key
    assert len(part.pairs.alive_ids()) == 2


def test_approx_distinct_keeps_its_dense_pairs_when_retention_compacts_the_part() -> None:
    """Retention drops an old bucket; the snapshot compacts the part (pairs renumbered, register
    rows kept for the pairs that stay — the first dense pair's row is 0): the restored view
    answers the newer bucket as a view that only ever saw it."""
    sql = """SELECT k, tumble(ts, '1 minute') AS m, approx_count_distinct(u) AS d FROM s
        GROUP BY k, m"""
    newer = [{"ts": T0 + MINUTE + i, "k": "a", "u": f"n{i}"} for i in range(1000)]
    newer += [{"ts": T0 + MINUTE, "k": "b", "u": f"n{i}"} for i in range(700)]
    older = [{"ts": T0 + i, "k": "a", "u": f"o{i}"} for i in range(10)]
    # m0 ends at T0 + 1m: it goes once the watermark reaches T0 + 3m, m1 not before T0 + 4m
    late = [{"ts": T0 + 3 * MINUTE + 30_000, "k": "c", "u": "x"}]
    options = {"grace": "2m", "retention": "2m"}
    reg, alone = registry({"v": sql}, **options), registry({"v": sql}, **options)
    for position, events in enumerate((newer, older, late), start=1):
        reg.apply(Batch("s", [dict(e) for e in events], position))
    for position, events in enumerate((newer, late), start=1):
        alone.apply(Batch("s", [dict(e) for e in events], position))
    expected = answer(alone, "v", order_by="k")
    assert [(r["k"], r["m"]) for r in expected] == [
        ("a", T0 + MINUTE),
        ("b", T0 + MINUTE),
        ("c", T0 + 3 * MINUTE),
    ]
    assert answer(reg, "v", order_by="k") == expected
    assert answer(restored(reg), "v", order_by="k") == expected
    assert abs(expected[0]["d"] - 1000) <= 20


@pytest.mark.parametrize("cls", [CountDistinct, SortedMin], ids=lambda c: c.kind)
def test_missing_counts_repeats_of_a_value_within_one_batch(cls: type[Aggregate]) -> None:
    """The contract's ``missing(batch)``: per row, whether taking it off would take a value the
    pair does not hold — the n-th retraction of a value in one batch needs n of it, per pair
    (rows in any order; NULL rows take nothing off)."""
    aggregate = cls()
    aggregate.resize(3)
    held: list[tuple[int, int | None]] = [(0, 5), (0, 5), (0, 7), (1, 5), (2, 9)]
    aggregate.fold(
        AggBatch(
            np.array([0, 1, 2]),
            np.array([p for p, _ in held]),
            from_values([v for _, v in held]),
        )
    )
    asked: list[tuple[int, int | None]] = [(1, 5), (0, 5), (2, 7), (0, 7), (0, 5)]
    asked += [(1, 5), (0, 5), (0, None), (0, 7), (2, 9)]
    batch = AggBatch(
        np.array([0, 1, 2]),
        np.array([p for p, _ in asked]),
        from_values([v for _, v in asked]),
        negate=True,
    )
    expected = []
    remaining = Counter(held)
    for pair_value in asked:
        if pair_value[1] is None:
            expected.append(False)
            continue
        expected.append(remaining[pair_value] == 0)
        remaining[pair_value] -= remaining[pair_value] > 0
    assert expected == [False, False, True, False, False, True, True, False, True, False]
    missing = aggregate.missing(batch)
    assert missing.dtype == bool  # a mask, to index rows with
    assert missing.tolist() == expected


def test_a_change_stream_takes_off_zero_whatever_its_sign() -> None:
    """-0.0 is 0.0 (SQL and JSON numbers alike): a delete whose before-image says -0.0 finds the
    0.0 a row added, in the exact multiset behind min and the median on a change stream. The
    fetch is read column-wise (Arrow keeps the sign of zero; the row decoder's ints do not)."""
    sql = "SELECT k, min(x) AS lo, p50(x) AS med, count(*) AS n FROM c GROUP BY k"
    reg = registry({"v": sql})

    def change(op: str, row: dict[str, Any]) -> bytes:
        image = {"before": row} if op == "d" else {"after": row}
        return orjson.dumps({"op": op, **image})

    values = [change("c", {"ts": T0, "k": "a", "x": 0.0})]
    values += [change("c", {"ts": T0 + i, "k": "a", "x": 2.5}) for i in range(1, 70)]
    values.append(change("d", {"ts": T0 + 70, "k": "a", "x": -0.0}))
    read = ChangeReader(Decoder(reg.sources["c"].spec, 1 << 20).reader).read(values)
    assert read is not None  # read column-wise
    columns, weights = read
    assert weights.tolist() == [1] * 70 + [-1]
    reg.apply(Batch("c", [], 1, columns=columns, weights=weights))
    assert reg.views["v"].counter("unmatched") == 0
    assert answer(reg, "v") == [{"k": "a", "lo": 2.5, "med": 2.5, "n": 69}]


@pytest.mark.parametrize("cls", [Count, Sum], ids=lambda c: c.kind)
def test_a_count_or_a_sum_can_always_take_a_value_off(cls: type[Aggregate]) -> None:
    """The contract's ``missing(batch)`` of aggregates that keep no values: no row is missing,
    as a boolean mask over the batch's rows."""
    aggregate = cls()
    aggregate.resize(2)
    batch = AggBatch(np.array([0, 1]), np.array([0, 1, 1]), from_values([1, 2, None]), negate=True)
    missing = aggregate.missing(batch)
    assert missing.dtype == bool
    assert missing.tolist() == [False, False, False]


def test_the_percentile_sketch_bins_edges_as_the_scalar_ddsketch() -> None:
    """Exact powers of gamma (a bin's edge, where the log ratio is a whole number up to rounding)
    and +-MIN_INDEXABLE (the zero band's edge): the array sketch of the pair is the scalar
    DDSketch of the same values, bin for bin."""
    gamma, edge = DDSketch.GAMMA, DDSketch.MIN_INDEXABLE
    xs = [gamma**k for k in range(-40, 400, 7)] + [edge, -edge, edge, 2 * edge, -3.5]
    xs += [-(gamma**k) for k in range(3, 90, 11)]
    reg = registry({"v": "SELECT p50(x) AS med FROM s"})
    reg.apply(Batch("s", [{"ts": T0 + i, "x": x} for i, x in enumerate(xs)], 1))
    part = reg.views["v"].parts[""]
    (aggregate,) = part.aggs
    assert isinstance(aggregate, ApproxPercentile)
    expected = DDSketch()
    for x in xs:
        expected.add(x)
    (pair,) = part.pairs.alive_ids().tolist()
    assert aggregate.sketch(pair).to_state() == expected.to_state()
    assert answer(reg, "v") == [{"med": expected.quantile(0.5)}]


@pytest.mark.parametrize("extra", [1, 300])
def test_two_pairs_past_the_percentile_sketchs_bins_in_one_batch_each_fold_as_the_scalar(
    extra: int,
) -> None:
    """Two groups each pass MAX_BINS bins in one batch (by one bin, and by 300): the second
    group's lowest bins are found after the first's were folded (its entries moved by it), and
    each group's sketch is the scalar DDSketch of its values, bin for bin (found by a review: the
    runs were computed once, before the first fold). The store holds nothing queued after the
    apply."""
    gamma = DDSketch.GAMMA
    xs = {
        k: [gamma ** (i + 0.5) * (1 + n) for i in range(DDSketch.MAX_BINS + extra)]
        for n, k in enumerate("ab")
    }
    events = [{"ts": T0 + i, "k": k, "x": x} for k in "ab" for i, x in enumerate(xs[k])]
    random.Random(3).shuffle(events)
    reg = registry({"v": "SELECT k, p50(x) AS med, p99(x) AS p99 FROM s GROUP BY k"})
    reg.apply(Batch("s", events, 1))
    part = reg.views["v"].parts[""]
    for aggregate in part.aggs:  # before any read: the apply merged what it queued
        assert isinstance(aggregate, ApproxPercentile)
        assert not aggregate.positive._queued
        assert not aggregate.negative._queued
    rows = {r["k"]: r for r in answer(reg, "v")}
    for k in "ab":
        expected = DDSketch()
        for x in xs[k]:
            expected.add(x)
        assert len(expected.positive) == DDSketch.MAX_BINS  # the scalar folded as well
        pair = stored_pair(reg, "v", (k,))
        for aggregate in part.aggs:
            assert isinstance(aggregate, ApproxPercentile)
            assert aggregate.sketch(pair).to_state() == expected.to_state(), k
        assert (rows[k]["med"], rows[k]["p99"]) == (expected.quantile(0.5), expected.quantile(0.99))


@pytest.mark.parametrize(
    "values",
    [
        ["a", None, "b", "a"],
        [True, None, False, True],
        [1, None, -7, 2**40, 2**60 + 1],  # past 2**53: not the float it would round to
        [1.5, None, -0.0, 1e300],
        [1, "1", True, None, 2.5, 2**70],  # mixed: an "object" column
    ],
    ids=["string", "bool", "int", "float", "object"],
)
def test_distinct_hashes_every_kind_of_column_as_the_value_hash_does(values: list[Any]) -> None:
    """``approx_count_distinct`` registers what ``views.hashing.hash_value`` says of each valid
    value, whatever the column's kind: a bool is not the number 1, a mixed column's string "1"
    is not the int 1 — the sketch state a restart, a merge or another member must agree on."""
    column = from_values(values)
    assert hashes(column).tolist() == [hash_value(v) for v in values if v is not None]


def test_pairs_densified_in_one_batch_each_get_their_own_sketch() -> None:
    """One batch takes several pairs past the sparse limit at once (each gets a register row of
    its own), one to exactly the limit (still sparse) and one a value past it: every pair's
    sketch is the scalar HyperLogLog of its own values."""
    limit = HyperLogLog.SPARSE_MAX
    sql = "SELECT k, approx_count_distinct(u) AS d FROM s GROUP BY k"
    reg = registry({"v": sql})
    sizes = {"a": 1000, "b": 700, "c": limit, "d": limit + 1, "e": 3}
    events = [{"ts": T0, "k": k, "u": f"{k}{i}"} for k, n in sizes.items() for i in range(n)]
    reg.apply(Batch("s", [dict(e) for e in events], 1))
    view = reg.views["v"]
    part = view.parts[""]
    (aggregate,) = part.aggs
    assert isinstance(aggregate, ApproxCountDistinct)
    dense = 0
    for pair in part.pairs.alive_ids().tolist():
        (key,) = view.keys.keys[int(part.pairs.slots(np.array([pair]))[0])]
        expected = HyperLogLog()
        for i in range(sizes[key]):
            expected.add(f"{key}{i}")
        assert aggregate.sketch(pair).to_state() == expected.to_state(), key
        dense += int(aggregate.dense[pair] >= 0)
    assert dense == 3  # the premise: a, b and d went dense in the one batch; c did not
    # a dense pair's exact values leave the sparse set: it holds c's and e's only (bounded)
    assert len(aggregate.sparse) == sizes["c"] + sizes["e"]
    answers = {r[0]: r[1] for r in run(view, Query(limit=10)).rows}
    assert (answers["c"], answers["e"]) == (limit, 3)  # exact while sparse
