"""A registry's state through the snapshot codec and back: every view answers the same, a
detached source's parts (Kafka's, saved apart) stay out, and a part saved alone loads alone."""

from __future__ import annotations

import random

import pytest

from ingest.commit import Step
from views import snapshot
from views.config import parse
from views.query import all_rows
from views.registry import Batch, Registry

CONFIG = {
    "sources": {
        "s": {"time": "ts"},
        "k": {"time": "ts", "from": "kafka", "bootstrap": "x:1", "topic": "t", "group": "g"},
        "quiet": {"time": "ts"},
    },
    "views": {
        "v": {
            "sql": "SELECT c, tumble(ts, '1 minute') AS m, count(*) AS n, sum(x) AS t, "
            "p50(x) AS p, count_distinct(c) AS d, approx_count_distinct(x) AS a "
            "FROM s GROUP BY c, m"
        },
        "w": {"sql": "SELECT top_k(c, 3) AS top, count(*) AS n FROM s"},
        "kv": {"sql": "SELECT c, count(*) AS n, sum(x) AS t FROM k GROUP BY c"},
        "empty": {"sql": "SELECT count(*) AS n FROM quiet"},
    },
}


def filled() -> Registry:
    config = parse(CONFIG)
    registry = Registry(config.sources, config.views)
    rng = random.Random(1)
    for i in range(1, 6):
        events = [
            {
                "ts": 1_790_000_000_000 + rng.randrange(600_000),
                "c": rng.choice("abcd"),
                "x": rng.choice([rng.random(), rng.randrange(100)]),
            }
            for _ in range(200)
        ]
        registry.apply(Batch("s", events, i))
        registry.apply(Batch("k", [dict(e) for e in events], i, part="t:0"))
    return registry


def test_the_whole_state_round_trips_without_the_detached_parts() -> None:
    registry = filled()
    extra = {"position": 5, "receipts": {"key": {"at": 1}}}  # a log's fields ride along
    data = snapshot.encode(registry.to_state(extra, frozenset({"k"})))
    state = snapshot.decode(data)
    assert (state["position"], state["receipts"]) == (5, {"key": {"at": 1}})
    config = parse(CONFIG)
    again = Registry(config.sources, config.views)
    again.load_state(state)
    for name in ("v", "w", "empty"):
        assert all_rows(again.views[name]) == all_rows(registry.views[name]), name
        assert again.views[name].stats() == registry.views[name].stats()
    assert again.views["kv"].parts == {}  # saved apart, in its part file
    assert again.sources["s"].positions == registry.sources["s"].positions


def test_a_part_saved_alone_loads_alone() -> None:
    registry = filled()
    data = snapshot.encode(registry.part_state("k", "t:0"))
    config = parse(CONFIG)
    again = Registry(config.sources, config.views)
    again.load_part("k", "t:0", snapshot.decode(data))
    assert all_rows(again.views["kv"]) == all_rows(registry.views["kv"])
    assert again.sources["k"].positions == {"t:0": 5}


EVERY_KIND = """SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, count(x) AS cx,
    sum(x) AS total, avg(x) AS mean, min(x) AS lo, max(x) AS hi, count_distinct(u) AS d,
    approx_count_distinct(u) AS ad, p50(x) AS med, top_k(u, 3) AS top FROM s
    WHERE k <> 'skip' GROUP BY k, m"""


def test_a_part_without_pairs_restores_and_counts_on() -> None:
    """A part whose every event was filtered out, or whose buckets all expired, has no pairs:
    its (empty) arrays still restore, and the restored view goes on counting."""
    config = parse(
        {"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": EVERY_KIND, "grace": "1m"}}}
    )
    registry = Registry(config.sources, config.views)
    registry.apply(Batch("s", [{"ts": 1_790_000_000_000, "k": "skip", "x": 1, "u": "a"}], 1))
    assert registry.views["v"].stats()["pairs"] == 0
    assert registry.views["v"].part_counters("")["applied"] == 0
    again = Registry(config.sources, config.views)
    assert again.load_state(snapshot.decode(snapshot.encode(registry.to_state()))) == []
    assert again.views["v"].stats() == registry.views["v"].stats()
    event = {"ts": 1_790_000_000_001, "k": "a", "x": 2.5, "u": "b"}
    for target in (registry, again):
        target.apply(Batch("s", [dict(event)], 2))
    assert all_rows(again.views["v"]) == all_rows(registry.views["v"])
    fresh = Registry(config.sources, config.views)  # what the one event alone makes
    fresh.apply(Batch("s", [dict(event)], 2))
    assert all_rows(again.views["v"]) == all_rows(fresh.views["v"])
    assert len(all_rows(again.views["v"])) == 1


@pytest.mark.parametrize("by", ["registry", "step"])
def test_a_part_compacted_on_the_loop_is_not_moved_by_its_encoding(by: str) -> None:
    """A Kafka part file is encoded in a worker thread while queries are answered on the loop;
    ``compact_part`` (on the loop, first — the Kafka source calls it through its committer's
    step) leaves the thread's compaction nothing to renumber."""
    config = parse(
        {
            "sources": {"k": CONFIG["sources"]["k"]},
            "views": {
                "kv": {
                    "sql": "SELECT c, tumble(ts, '1 minute') AS m, count(*) AS n FROM k "
                    "GROUP BY c, m",
                    "retention": "10m",
                }
            },
        }
    )
    registry = Registry(config.sources, config.views)
    for i, minute in enumerate(range(12), start=1):  # retention drops the first minutes' pairs
        ts = 1_790_000_040_000 + minute * 60_000
        registry.apply(Batch("k", [{"ts": ts, "c": c} for c in "abc"], i, part="t:0"))
    part = registry.views["kv"].parts["t:0"]
    assert len(part.pairs.code_of) > len(part.pairs.ids)  # dead pairs: a compaction would move
    before = all_rows(registry.views["kv"])
    (registry if by == "registry" else Step(registry)).compact_part("k", "t:0")
    assert part.pairs.compact(force=True) is None  # what part_state's own compaction finds
    assert all_rows(registry.views["kv"]) == before
