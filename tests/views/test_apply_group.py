"""Small batches folded at once (``Registry.applying_group``, what the HTTP log does with a commit
group) against the same batches applied in turn (``Registry.apply``): on seeded random groups of
every shape — late events judged by the watermark after the batches before them, ``max_groups``
reached mid-group, retention between batches, ints in one batch and floats in the next (within
and beyond 2**53, read by arithmetic and not), NULLs and absent fields, change streams, several
sources in one group — the two must end in the same state, count for count and
array for array, and tell each batch the same (its watermark, and per view what it applied,
found late, folded, left unmatched)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest

from tests.views.test_engine_oracle import BASE, SOURCES, VIEWS, event
from views.aggregates import ApproxCountDistinct, ApproxPercentile, TopK
from views.aggregates.base import Batch as AggBatch
from views.batch import Joined, concat, from_rows, from_values
from views.config import parse
from views.query import all_rows
from views.registry import Applied, Batch, Registry
from views.values import Values
from views.view import View

GROUPED_VIEWS = {
    **VIEWS,
    "computed": {  # arithmetic on a field whose ints may widen to floats in a group
        "sql": "SELECT k, tumble(ts, '1 minute') AS m, sum(a * b) AS ab, sum(a) AS sa "
        "FROM s GROUP BY k, m",
        "grace": "10s",
        "retention": "2m",
    },
    "sketched": {  # top-k, HyperLogLog, DDSketch by key and minute, no max_groups in reach
        "sql": "SELECT k, tumble(ts, '1 minute') AS m, top_k(c, 2, 3) AS top, "
        "approx_count_distinct(a) AS ad, p90(b) AS p90, count_distinct(c) AS dc "
        "FROM s GROUP BY k, m",
        "grace": "45s",
    },
    "short": {  # retention as short as grace: buckets go between batches, at the edge
        "sql": "SELECT c, tumble(ts, '10 seconds') AS t, count(*) AS n, max(b) AS hi "
        "FROM s GROUP BY c, t",
        "grace": "20s",
        "retention": "20s",
    },
}
BIG = 2**53 + 1  # not a float64: an int column holding it cannot widen


def small(rng: random.Random, clock: int) -> list[dict[str, Any]]:
    """A request's worth of events: one to six, some late, some with an integer beyond 2**53,
    some with whole numbers as ints where other batches have floats."""
    out = []
    for _ in range(rng.choice([1, 1, 2, 3, 6])):
        e = event(rng, clock - rng.randrange(0, 150_000))
        roll = rng.random()
        if roll < 0.03:
            e["a"] = BIG
        elif roll < 0.3 and "a" in e and isinstance(e["a"], float):
            e["a"] = int(e["a"])  # this batch's a is int64, the next one's may be float64
        out.append(e)
    return out


def groups(seed: int) -> list[list[Batch]]:
    """Groups of batches, as a commit group holds them: mostly of source ``s`` (some with events
    exactly at and just past per_minute's late edge, judged by the watermark after the batches
    before them; some empty), some of the change stream ``cdc`` in between."""
    rng = random.Random(seed)
    clock = BASE
    position = {"s": 0, "cdc": 0}
    part = "" if seed % 2 else "s:1"  # HTTP's one part, or a named one (a group keeps its part)
    newest: int | None = None  # source s's watermark after the batches so far
    out = []
    for _ in range(rng.randrange(4, 12)):
        group = []
        for _ in range(rng.choice([1, 2, 5, 12, 30])):
            clock += rng.randrange(0, 20_000)
            if rng.random() < 0.1:
                rows = [event(rng, clock - rng.randrange(0, 60_000)) for _ in range(3)]
                weights = [1, 1, -1] if rng.random() < 0.5 else [1, -1, -1]
                position["cdc"] += 1
                group.append(Batch("cdc", rows, position["cdc"], part="t:0", weights=weights))
                continue
            position["s"] += 1
            events = small(rng, clock)
            if newest is not None and rng.random() < 0.3:  # at the late edges of per_minute
                for grace in (30_000, 45_000):  # (30 s) and sketched (45 s)
                    events += [event(rng, newest - grace), event(rng, newest - grace - 1)]
            if rng.random() < 0.05:
                events = []  # a body whose lines were all rejected
            newest = max(
                [e["ts"] for e in events] + ([] if newest is None else [newest]), default=None
            )
            batch = Batch("s", events, position["s"], part=part)
            if events and rng.random() < 0.15:  # a body read column-wise (a large one, over HTTP)
                batch = Batch("s", [], batch.position, part=part, columns=READER.columns(batch))
            group.append(batch)
        out.append(group)
    return out


def fresh() -> Registry:
    config = parse({"sources": SOURCES, "views": GROUPED_VIEWS})
    return Registry(config.sources, config.views)


READER = fresh()  # builds the column-wise batches (the fields the views read)


def copy(batch: Batch) -> Batch:
    events = [dict(e) for e in batch.events]
    weights = None if batch.weights is None else list(batch.weights)
    return Batch(batch.source, events, batch.position, [], batch.part, weights, batch.columns)


def sketches(view: View) -> dict[tuple[str, int, Any, int], Any]:
    """Every approximate aggregate's state per (part, bucket, key), by value: pair ids, and the
    order pairs were created in, are the engine's own business (a group creates a later batch's
    earlier buckets in time order, not batch order; answers read pairs in time and key order)."""
    out = {}
    for name, part in view.parts.items():
        for pair in part.pairs.alive_ids().tolist():
            one = np.array([pair])
            at = (
                name,
                int(part.pairs.starts(one)[0]),
                view.keys.keys[int(part.pairs.slots(one)[0])],
            )
            for index, aggregate in enumerate(part.aggs):
                if isinstance(aggregate, ApproxCountDistinct | ApproxPercentile):
                    out[(*at, index)] = aggregate.sketch(pair).to_state()
                elif isinstance(aggregate, TopK):
                    out[(*at, index)] = aggregate.summary(pair).to_state()
    return out


def both(seed: int) -> tuple[Registry, Registry, list[Applied], list[Applied]]:
    grouped, in_turn = fresh(), fresh()
    told_grouped: list[Applied] = []
    told_in_turn: list[Applied] = []
    for group in groups(seed):
        told_grouped += grouped.apply_group([copy(b) for b in group])
        told_in_turn += [in_turn.apply(copy(b)) for b in group]
    return grouped, in_turn, told_grouped, told_in_turn


def same(grouped: Registry, in_turn: Registry) -> None:
    for name, view in in_turn.views.items():
        mine = grouped.views[name]
        assert all_rows(mine) == all_rows(view), name
        assert mine.stats() == view.stats(), name
        # as JSON: an int kept as the int it was, not the float a joined column holds
        assert orjson.dumps(mine.late_events()) == orjson.dumps(view.late_events()), name
        assert sketches(mine) == sketches(view), name
        assert sorted(mine.parts) == sorted(view.parts), name
    for name, source in in_turn.sources.items():
        assert grouped.sources[name].to_state() == source.to_state(), name
    assert grouped.version == in_turn.version


@pytest.mark.parametrize("seed", range(30))
def test_a_group_applied_at_once_equals_its_batches_in_turn(seed: int) -> None:
    grouped, in_turn, told_grouped, told_in_turn = both(seed)
    assert told_grouped == told_in_turn
    same(grouped, in_turn)
    # What they hold goes on alike: more batches, in turn on both, with the state each group
    # left (exact multisets, sketches, pairs retention has still to drop).
    for group in groups(seed + 1000):
        for batch in group:
            assert grouped.apply(copy(batch)) == in_turn.apply(copy(batch))
    same(grouped, in_turn)


def test_groups_are_folded_at_once_and_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seeds above take both ways: views folding a group at once, and views that must take
    it in turn (``max_groups`` within reach, a change stream, an int beyond 2**53 widened, or a
    widened field multiplied) — and every policy fires while grouped."""
    outcome: dict[str, int] = {"at_once": 0, "in_turn": 0}
    original = View.apply_group

    def counting(view: View, *args: Any) -> Any:
        got = original(view, *args)
        outcome["at_once" if got is not None else "in_turn"] += 1
        return got

    monkeypatch.setattr(View, "apply_group", counting)
    merged = Registry._merged
    refused = {"merged": 0, "refused": 0}

    def merging(registry: Registry, run: list[Batch]) -> Any:
        got = merged(registry, run)
        refused["merged" if got is not None else "refused"] += 1
        return got

    monkeypatch.setattr(Registry, "_merged", merging)
    totals: dict[str, int] = {}
    for seed in range(12):
        grouped = fresh()
        for group in groups(seed):
            grouped.apply_group(group)
        for view in grouped.views.values():
            for counter, n in view.stats().items():
                totals[counter] = totals.get(counter, 0) + n
    assert outcome["at_once"] > 100, outcome
    assert outcome["in_turn"] > 50, outcome
    assert refused["merged"] > 20, refused
    assert refused["refused"] > 20, refused
    for counter in ("late", "overflow", "unmatched"):
        assert totals[counter] > 0, counter


def test_ints_widen_to_floats_only_where_exact() -> None:
    """An int64 column and a float64 one join as floats while every integer is exactly a
    float64, every + - * on them stays below 2**53 and no number in a view's SQL is beyond it;
    otherwise the batches go in turn."""
    registry = fresh()

    def pair(a: Any, b: Any, other: float = 1.5) -> list[Batch]:
        return [
            Batch("s", [{"ts": BASE, "k": "k1", "a": a, "b": b}], 1),
            Batch("s", [{"ts": BASE + 1, "k": "k1", "a": other, "b": 2}], 2),
        ]

    merged = registry._merged(pair(3, 2))  # "computed": a * b = 6, far below 2**53
    assert merged is not None
    assert merged[0].column("a").data.dtype == np.float64
    assert registry._merged(pair(2**27, 2**26 - 1)) is not None  # 2**53 - 2**27: exact
    assert registry._merged(pair(2**27, 2**26 + 1)) is None  # a * b beyond 2**53
    assert registry._merged(pair(BIG, 2)) is None  # BIG itself is not a float64
    # Past 2**53 on a row that was a float anyway would not change, but the check does not tell
    # rows apart: it asks for all of them below 2**53 and sends the group in turn.
    assert registry._merged(pair(3, 2, other=2.0**60)) is None
    literal = {"sql": "SELECT k, count(*) AS n FROM s WHERE b < 9007199254740993 GROUP BY k"}
    config = parse({"sources": SOURCES, "views": {"literal": literal}})
    strict = Registry(config.sources, config.views)
    assert strict._merged(pair(3, 2)) is not None  # b: int64 in both, nothing widens
    assert strict._merged(pair(3, 2.5)) is None  # b widens, compared with a number past 2**53
    assert strict._merged(pair(3, 2.0)) is None  # 2.0 is a float: b widens all the same
    # Arithmetic in the WHERE alone (no aggregate reads a or b): its results count too.
    where = {"sql": "SELECT k, count(*) AS n FROM s WHERE a * b > 3 GROUP BY k"}
    config = parse({"sources": SOURCES, "views": {"where": where}})
    filtered = Registry(config.sources, config.views)
    assert filtered._merged(pair(2**27, 2**26 - 1)) is not None
    assert filtered._merged(pair(2**27, 2**26 + 1)) is None  # a * b beyond 2**53


def test_columns_join_only_when_one_column_holds_each() -> None:
    ints = from_rows([{"ts": 1, "x": 1, "s": "a"}], "ts", ["x", "s"])
    floats = from_rows([{"ts": 2, "x": 2.5}], "ts", ["x", "s"])
    strings = from_rows([{"ts": 3, "x": "three"}], "ts", ["x", "s"])
    joined = concat([ints, floats])
    assert joined is not None
    cols, widened = joined
    assert widened == {"x"}
    assert cols.column("x").values() == [1.0, 2.5]
    assert cols.column("s").values() == ["a", None]  # a NULL-only column joins any kind
    assert cols.time.tolist() == [1, 2]
    assert concat([ints, ints]) is not None
    assert concat([ints, ints])[1] == set()  # type: ignore[index]
    assert concat([ints, strings]) is None


@pytest.mark.parametrize("seed", range(20))
def test_top_k_folds_batches_at_once_as_in_turn(seed: int) -> None:
    """Space-Saving's state depends on how rows are batched: ``fold_batches`` must leave what
    ``fold`` of each batch in turn leaves — here with a value repeated within a batch for one
    pair, and more distinct values than the summary's capacity."""
    rng = random.Random(seed)
    at_once, in_turn = TopK(Values(), k=2, capacity=3), TopK(Values(), k=2, capacity=3)
    n = rng.choice([1, 2, 4])  # pairs: with one, each batch's rows of it lie side by side
    pairs = np.arange(n)
    rows: list[tuple[int, Any]] = []
    ends = []
    for _ in range(rng.randrange(2, 7)):
        batch = [
            (rng.randrange(n), rng.choice([*"aaaabbbccdefghij", None]))
            for _ in range(rng.randrange(1, 40))
        ]
        for aggregate in (at_once, in_turn):
            aggregate.resize(n)
        values = from_values([v for _, v in batch])
        in_turn.fold(AggBatch(pairs, np.array([p for p, _ in batch]), values))
        rows += batch
        ends.append(len(rows))
    batch_of = np.searchsorted(np.array(ends), np.arange(len(rows)), "right")
    values = from_values([v for _, v in rows])
    at_once.fold_batches(AggBatch(pairs, np.array([p for p, _ in rows]), values), batch_of)
    for pair in range(n):
        assert at_once.summary(pair).to_state() == in_turn.summary(pair).to_state(), pair


EARLY = BASE - 60 * 365 * 86_400_000  # ~1960: negative epoch milliseconds


def one(ts: int, k: str = "k1") -> dict[str, Any]:
    return {"ts": ts, "k": k, "a": 1, "b": 2, "c": "x"}


@pytest.mark.parametrize(
    "events",
    [
        # an empty batch (every line rejected), then times before 1970, the last one late
        [[], [one(EARLY - 30_001)], [one(EARLY)], [one(EARLY - 120_000, "k2")]],
        # no watermark before any batch of the group: nothing can be late
        [[], [one(EARLY), one(EARLY - 3_600_000, "k2")]],
        # a watermark of exactly 0 (1970-01-01T00:00:00Z): the 30 s and 45 s edges just on time
        [[one(0)], [one(-30_000), one(-45_000, "k2")], [one(-45_001, "k3")]],
    ],
)
def test_a_group_judges_lateness_from_no_watermark_and_from_zero(
    events: list[list[dict[str, Any]]],
) -> None:
    """A partition's first batches have no watermark to be late against, whatever their times
    (negative epoch milliseconds too), and a watermark of 0 is one."""
    group = [
        Batch("s", batch, i, [] if batch else [{"line": 1, "text": "{}"}])
        for i, batch in enumerate(events, start=1)
    ]
    grouped, in_turn = fresh(), fresh()
    told = grouped.apply_group([copy(b) for b in group])
    assert told == [in_turn.apply(copy(b)) for b in group]
    same(grouped, in_turn)


def test_a_joined_batchs_events_are_each_batchs_own() -> None:
    """Where a column widened, a batch's ints are ints in its events (a view's late events),
    in the order asked."""
    ints = from_rows([{"ts": 1, "x": 1}, {"ts": 2, "x": 2}], "ts", ["ts", "x"])
    floats = from_rows([{"ts": 3, "x": 2.5}], "ts", ["ts", "x"])
    joined = concat([ints, floats])
    assert joined is not None
    cols = Joined(joined[0].time, joined[0].fields, lambda: [ints, floats], np.array([2, 3]))
    assert orjson.dumps(cols.rows([2, 0, 1])) == orjson.dumps(
        [{"ts": 3, "x": 2.5}, {"ts": 1, "x": 1}, {"ts": 2, "x": 2}]
    )
    assert orjson.dumps(joined[0].rows([0])) == orjson.dumps([{"ts": 1, "x": 1.0}])


def test_retention_between_a_groups_batches_frees_room_only_at_each_batchs_watermark() -> None:
    """A view with ``max_groups`` within reach takes a group's batches in turn, with expiry after
    each at the watermark *that batch* reached: the bucket holding the two groups allowed is
    still kept when the last batch's new key arrives (folded into the overflow), and dropped
    only after it. Expiring at the group's final watermark one batch early would have made room
    for the new key instead."""
    views = {
        "capped": {
            "sql": "SELECT k, tumble(ts, '10 seconds') AS t, count(*) AS n FROM s GROUP BY k, t",
            "grace": "5s",
            "retention": "10s",
            "max_groups": 2,
        }
    }
    config = parse({"sources": SOURCES, "views": views})
    grouped, in_turn = (Registry(config.sources, config.views) for _ in range(2))
    full = [one(BASE + 1_000, "k1"), one(BASE + 1_000, "k2")]  # both groups allowed, one bucket
    group = [Batch("s", [one(BASE + 2_000, "k1")], 2), Batch("s", [one(BASE + 100_000, "k3")], 3)]
    for registry in (grouped, in_turn):
        registry.apply(Batch("s", full, 1))
    told = grouped.apply_group([copy(b) for b in group])
    assert told == [in_turn.apply(copy(b)) for b in group]
    view = in_turn.views["capped"]
    assert view.stats()["overflow"] == 1  # k3 arrived while k1 and k2 were still held
    assert [a.views["capped"].overflow for a in told] == [0, 1]
    same(grouped, in_turn)


def test_a_group_of_two_sources_folds_each_into_its_own_views() -> None:
    """A commit group interleaves requests to several sources: each source's batches are
    joined apart, in their order, into that source's views alone."""
    sources = {name: {"time": "ts", "fields": {"k": "string"}} for name in ("s", "t")}
    views = {
        name: {"sql": f"SELECT k, count(*) AS n, sum(a) AS sa FROM {name} GROUP BY k"}
        for name in ("s", "t")
    }
    config = parse({"sources": sources, "views": views})
    grouped, in_turn = (Registry(config.sources, config.views) for _ in range(2))
    group = [
        Batch(name, [one(BASE + i, f"k{i % 3}") for _ in range(i + 1)], i // 2 + 1)
        for i, name in enumerate("ststst")
    ]
    told = grouped.apply_group([copy(b) for b in group])
    assert told == [in_turn.apply(copy(b)) for b in group]
    same(grouped, in_turn)
    # s took requests 0, 2 and 4: one k0, three k2, five k1 (a = 1 in each event)
    expected = {(0, ("k0",)): [1, 1], (0, ("k2",)): [3, 3], (0, ("k1",)): [5, 5]}
    assert all_rows(grouped.views["s"]) == expected
