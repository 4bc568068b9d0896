"""The columnar engine against the per-event oracle (``tests/oracle``): seeded random batches of
every shape the engine distinguishes — NULLs and absent fields, ints and floats mixed, late events,
``max_groups`` overflow, retention, tumble / hop / no window, WHERE with IN and IS NOT NULL,
expression arguments, change streams with retractions (matched and not) — and the two must agree:
every (bucket, key)'s answers, every counter, and the sketches state for state (HyperLogLog
registers, DDSketch bins, Space-Saving counters)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pytest

from tests.oracle.aggregates import ApproxCountDistinct as OracleHll
from tests.oracle.aggregates import ApproxPercentile as OracleDd
from tests.oracle.aggregates import TopK as OracleTop
from tests.oracle.view import OracleView
from views import retract
from views.aggregates import ApproxCountDistinct, ApproxPercentile, CountDistinct, TopK
from views.config import parse
from views.query import all_rows
from views.registry import Batch, Registry
from views.view import View

BASE = 1_790_000_000_000
SOURCES = {
    "s": {"time": "ts", "fields": {"k": "string", "c": "string"}},
    "cdc": {
        "from": "kafka",
        "format": "debezium",
        "bootstrap": "x:1",
        "topic": "t",
        "group": "g",
        "time": "ts",
        "fields": {"k": "string"},
    },
}
VIEWS = {
    "per_minute": {
        "sql": "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, count(a) AS na, "
        "sum(a) AS total, avg(a) AS mean, min(a) AS lo, max(a) AS hi, "
        "count_distinct(c) AS dc, approx_count_distinct(c) AS ac, p90(a) AS p90, "
        "top_k(c, 3, 4) AS top FROM s WHERE a IS NOT NULL OR c IN ('x', 'y') GROUP BY k, m",
        "grace": "30s",
        "retention": "5m",
        "max_groups": 4,
    },
    "rolling": {
        "sql": "SELECT hop(ts, '3 minutes', '1 minute') AS w, sum(a - b) AS diff, "
        "count(*) AS n, max(a * 2) AS top2, count_distinct(c) AS dc FROM s WHERE k <> 'k0' "
        "GROUP BY w",
        "grace": "1h",
    },
    "rolling_keys": {  # hop windows by panes (every aggregate merges exactly), overflowing
        "sql": "SELECT k, hop(ts, '2 minutes', '30 seconds') AS w, count(*) AS n, sum(a) AS s, "
        "avg(a) AS mean, min(b) AS lo FROM s GROUP BY k, w",
        "grace": "1h",
        "max_groups": 5,
    },
    "all_time": {
        "sql": "SELECT c, count(*) AS n, sum(b) AS total, approx_count_distinct(a) AS ad, "
        "p50(b) AS med FROM s GROUP BY c",
        "max_groups": 3,
    },
    "changes": {
        "sql": "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, sum(a) AS total, "
        "min(a) AS lo, max(a) AS hi, p50(a) AS med, count_distinct(a) AS da FROM cdc "
        "GROUP BY k, m",
        "grace": "1m",
    },
    "changes_rolling": {  # retractions over hop windows, and into __other__ past max_groups
        "sql": "SELECT k, hop(ts, '2 minutes', '1 minute') AS w, count(*) AS n, "
        "max(a) AS hi, min(a) AS lo FROM cdc GROUP BY k, w",
        "grace": "1h",
        "max_groups": 3,
    },
    "changes_keyless": {  # retractions in a view grouped by its window alone
        "sql": "SELECT tumble(ts, '1 minute') AS m, count(*) AS n, max(a) AS hi FROM cdc "
        "GROUP BY m",
        "grace": "1h",
    },
}


def event(rng: random.Random, t: int) -> dict[str, Any]:
    out: dict[str, Any] = {"ts": t}
    for name, options in (
        ("k", [f"k{i}" for i in range(7)]),
        ("c", ["x", "y", "z", "w", None]),
    ):
        if rng.random() < 0.9:
            out[name] = rng.choice(options)
    for name in ("a", "b"):
        roll = rng.random()
        if roll < 0.1:
            out[name] = None
        elif roll < 0.8:
            out[name] = rng.choice([rng.randrange(-50, 50), round(rng.uniform(-100, 100), 2)])
    return out


def batches(seed: int) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    clock = BASE
    newest: int | None = None
    out = []
    for _ in range(rng.randrange(3, 9)):
        clock += rng.randrange(0, 200_000)
        size = rng.choice([1, 5, 60, 300])
        events = [event(rng, clock - rng.randrange(0, 120_000)) for _ in range(size)]
        if newest is not None:  # exactly at per_minute's edge (grace 30 s), and just before it
            events += [event(rng, newest - 30_000), event(rng, newest - 30_001)]
        newest = max([e["ts"] for e in events] + ([newest] if newest is not None else []))
        out.append(events)
    return out


def changes(seed: int) -> list[tuple[list[dict[str, Any]], list[int]]]:
    """Change batches: rows added, some retracted later (same batch or later), and on odd seeds
    some retracted that never were (unmatched), in order. Even seeds are a consistent stream, as
    Debezium sends: their batches take the vectorised path, including keys a batch both adds
    and retracts."""
    rng = random.Random(seed)
    unmatched = 0.4 if seed % 2 else 0.35
    live: list[dict[str, Any]] = []
    out = []
    for _ in range(rng.randrange(3, 7)):
        rows, weights = [], []
        for _ in range(rng.choice([3, 20, 80])):
            roll = rng.random()
            if live and roll < 0.35:
                row = live.pop(rng.randrange(len(live)))
                rows.append(row)
                weights.append(-1)
            elif roll < unmatched:
                rows.append(event(rng, BASE + rng.randrange(0, 300_000)))
                weights.append(-1)  # never added: unmatched
            else:
                row = event(rng, BASE + rng.randrange(0, 300_000))
                live.append(row)
                rows.append(row)
                weights.append(1)
        out.append((rows, weights))
    return out


def feed(seed: int) -> tuple[Registry, dict[str, OracleView]]:
    config = parse({"sources": SOURCES, "views": VIEWS})
    registry = Registry(config.sources, config.views)
    oracle = {
        n: OracleView(s, config.sources[s.source].time_field) for n, s in config.views.items()
    }
    marks: dict[str, int | None] = {"s": None, "cdc": None}
    for i, events in enumerate(batches(seed), start=1):
        _oracle_batch(oracle, registry, "s", [dict(e) for e in events], None, marks)
        registry.apply(Batch("s", [dict(e) for e in events], i))
    for i, (rows, weights) in enumerate(changes(seed), start=1):
        _oracle_batch(oracle, registry, "cdc", [dict(r) for r in rows], weights, marks)
        registry.apply(Batch("cdc", [dict(r) for r in rows], i, part="t:0", weights=weights))
    return registry, oracle


def _oracle_batch(
    oracle: dict[str, OracleView],
    registry: Registry,
    source: str,
    events: list[dict[str, Any]],
    weights: list[int] | None,
    marks: dict[str, int | None],
) -> None:
    part = "t:0" if source == "cdc" else ""
    before = marks[source]
    for view in oracle.values():
        if view.spec.source == source:
            view.apply(events, before, part, weights)
    newest = max(e["ts"] for e in events)
    marks[source] = newest if before is None else max(before, newest)
    for view in oracle.values():
        if view.spec.source == source:
            view.expire(marks[source], part)


@pytest.mark.parametrize("seed", range(40))
def test_engine_equals_the_per_event_oracle(seed: int) -> None:
    assert_equal(*feed(seed))


@pytest.mark.parametrize("recent", [1, 10**9], ids=["folded", "recent"])
def test_distinct_counts_equal_the_oracle_with_recent_entries_folded_or_not(
    recent: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exact distinct count's values and a HyperLogLog's sparse hashes keep recent entries
    (``Multiset``) merged into the main ones at nearly every apply, or at none: the answers
    are the oracle's either way, retractions included, and the sketches' states the reference
    implementation's (the default, 4,096, leaves every test's state in the recent entries)."""
    monkeypatch.setattr(CountDistinct, "recent", recent)
    monkeypatch.setattr(ApproxCountDistinct, "recent", recent)
    levels = Counter[str]()
    for seed in range(10):
        registry, oracle = feed(seed)
        assert_equal(registry, oracle)
        assert_sketches(registry, oracle)
        for view in registry.views.values():
            for part in view.parts.values():
                for agg in part.aggs:
                    held = {CountDistinct: "set", ApproxCountDistinct: "sparse"}.get(type(agg))
                    if held is not None:
                        multiset = getattr(agg, held)
                        levels[f"{held} main"] += len(multiset._key) > 0
                        levels[f"{held} recent"] += multiset._recent_entries() > 0
    for held in ("set", "sparse"):  # answered from main entries (merged in), or recent ones
        assert levels[f"{held} {'main' if recent == 1 else 'recent'}"] > 0


def assert_equal(registry: Registry, oracle: dict[str, OracleView]) -> None:
    for name, expected in oracle.items():
        view = registry.views[name]
        got = all_rows(view)
        assert set(got) == set(expected.rows()), name
        for at, answers in expected.rows().items():
            assert got[at] == answers, (name, at)
        stats = view.stats()
        counters = expected.counters()
        assert {c: stats[c] for c in counters} == counters, name


@pytest.mark.parametrize("seed", range(12))
def test_pairs_read_in_place_answer_byte_for_byte_as_merged(seed: int) -> None:
    """A query whose groups are the stored pairs reads them in place (views.query.Stored);
    every aggregate, the approximate ones too, answers exactly as through the merge."""
    registry, _ = feed(seed)
    for name, view in registry.views.items():
        in_place, merged = all_rows(view), all_rows(view, in_place=False)
        assert set(in_place) == set(merged), name
        for at, answers in merged.items():
            assert orjson.dumps(in_place[at]) == orjson.dumps(answers), (name, at)


@pytest.mark.parametrize("seed", range(12))
def test_sketch_states_equal_the_reference_implementations(seed: int) -> None:
    assert_sketches(*feed(seed))


def assert_sketches(registry: Registry, oracle: dict[str, OracleView]) -> None:
    for name in ("per_minute", "all_time"):
        view = registry.views[name]
        expected = {
            (s, k): aggs
            for p in oracle[name].parts.values()
            for s, groups in p.buckets.items()
            for k, aggs in groups.items()
        }
        part = view.parts[""]
        for pair in part.pairs.alive_ids().tolist():
            one = np.array([pair])
            at = (int(part.pairs.starts(one)[0]), view.keys.keys[int(part.pairs.slots(one)[0])])
            for mine, theirs in zip(part.aggs, expected[at], strict=True):
                if isinstance(mine, ApproxCountDistinct):
                    assert isinstance(theirs, OracleHll)
                    assert mine.sketch(pair).to_state() == theirs.sketch.to_state()
                elif isinstance(mine, ApproxPercentile):
                    assert isinstance(theirs, OracleDd)
                    assert mine.sketch(pair).to_state() == theirs.sketch.to_state()
                elif isinstance(mine, TopK):
                    assert isinstance(theirs, OracleTop)
                    assert mine.summary(pair).to_state() == theirs.sketch.to_state()


def test_the_random_batches_reach_every_policy() -> None:
    """The generators above are not idle: over the seeds, events are late, keys overflow into
    __other__, buckets expire, retractions go unmatched and groups vanish."""
    totals: dict[str, int] = {}
    for seed in range(40):
        registry, _ = feed(seed)
        for view in registry.views.values():
            for counter, n in view.stats().items():
                totals[counter] = totals.get(counter, 0) + n
    assert totals["late"] > 0
    assert totals["overflow"] > 0
    assert totals["unmatched"] > 0
    assert np.isfinite(totals["pairs"])


def test_hop_windows_take_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hop windows by panes (rows folded per slide-sized pane, panes absorbed into windows) and
    window by window are both compared with the oracle above."""
    taken: list[bool] = []
    panes = View._fold_panes

    def recording(view: View, *args: Any) -> bool:
        answer = panes(view, *args)
        if view.spec.window is not None and view.spec.window.kind == "hop":
            taken.append(answer)
        return answer

    monkeypatch.setattr(View, "_fold_panes", recording)
    for seed in range(40):
        feed(seed)
    assert True in taken
    assert False in taken


def test_the_random_change_batches_take_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of applying a change batch are compared with the oracle above: the vectorised
    one (adds, then retractions) and the sequential one, row by row. Among the vectorised: a
    batch retracting rows it added itself, of a key new to the view."""
    outcomes: list[tuple[bool, bool]] = []  # (vectorised, retracts a key new to the part)
    clean = retract._clean

    def recording(view: Any, cols: Any, rows: Any, weights: Any, part: Any) -> bool:
        answer = clean(view, cols, rows, weights, part)
        slots = view.keys.lookup(retract._tuples(view, cols, rows[weights < 0]))
        new = bool(((slots < 0) | ~part.alive(np.maximum(slots, 0))).any())
        outcomes.append((answer, new))
        return answer

    monkeypatch.setattr(retract, "_clean", recording)
    for seed in range(40):
        feed(seed)
    assert (True, True) in outcomes
    assert (False, True) in outcomes or (False, False) in outcomes
