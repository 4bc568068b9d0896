"""The view and registry policies (views/view.py, views/registry.py) against a plain model.

``Model`` is an independent, obvious implementation of the written policies (views/view.py's
docstring): the WHERE, late events judged by the partition's watermark before the batch, the
``max_groups`` cap folding new keys into ``__other__``, retention, retractions that find their
group (or ``__other__``) or count as unmatched, several partitions merged by queries. Seeded
random batches go through ``Registry.apply``; answers (``views.query.run``), counters, the
effects ``apply`` returns and what survives a snapshot or a partition hand-over are compared
with the model's. Nothing here reads aggregate internals.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest

import views.view
from ingest.decode import Decoder
from views import snapshot
from views.config import parse
from views.grouping import pack
from views.query import Query, run
from views.registry import Batch, Registry, StateMismatch

MINUTE = 60_000
T0 = 1_790_000_000_000 - 1_790_000_000_000 % MINUTE
OTHER = "__other__"
KAFKA = {"from": "kafka", "topic": "t", "bootstrap": "127.0.0.1:9", "group": "g", "time": "ts"}
SOURCES = {"s": KAFKA, "c": {**KAFKA, "format": "debezium"}}


@dataclass
class Shape:
    """One view's definition, as SQL and as what the model needs to know of it."""

    keys: tuple[str, ...]
    window: int | None
    grace: int = 0
    retention: int | None = None
    max_groups: int = 100_000
    source: str = "s"

    def sql(self) -> str:
        select = [*self.keys]
        group = [*self.keys]
        if self.window is not None:
            select.append(f"tumble(ts, '{self.window // MINUTE} minutes') AS m")
            group.append("m")
        select += ["count(*) AS n", "sum(x) AS total"]
        where = "WHERE status <> 'void' OR x > 5" if self.source == "s" else ""
        by = f"GROUP BY {', '.join(group)}" if group else ""
        return f"SELECT {', '.join(select)} FROM {self.source} {where} {by}"

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sql": self.sql(), "max_groups": self.max_groups}
        if self.window is not None and self.grace:
            out["grace"] = f"{self.grace // 1000}s"
            if self.retention is not None:
                out["retention"] = f"{self.retention // MINUTE}m"
        return out

    def passes(self, e: dict[str, Any]) -> bool:
        """The WHERE in SQL's three-valued logic: NULL is not true."""
        if self.source != "s":
            return True
        status, x = e.get("status"), e.get("x")
        if status is not None and status != "void":
            return True
        return x is not None and x > 5


@dataclass
class PartModel:
    # (start, key) -> the rows that went in (+1) and the retractions applied to it (-1)
    groups: dict[tuple[int, tuple[Any, ...]], list[tuple[int, dict[str, Any]]]] = field(
        default_factory=dict
    )
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("applied", "late", "overflow", "unmatched", "out_of_range"), 0
        )
    )
    late: list[tuple[dict[str, Any], int | None]] = field(default_factory=list)
    watermark: int | None = None

    def alive(self) -> set[tuple[Any, ...]]:
        return {key for _, key in self.groups}


class Model:
    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.parts: dict[str, PartModel] = {}
        self.other = tuple(OTHER for _ in shape.keys)

    def apply(self, part_name: str, events: list[dict[str, Any]], weights: list[int]) -> None:
        shape = self.shape
        part = self.parts.setdefault(part_name, PartModel())
        before = part.watermark
        for e, w in zip(events, weights, strict=True):
            if not shape.passes(e):
                continue
            key = tuple(e.get(k) for k in shape.keys)
            start = 0
            if shape.window is not None:
                if before is not None and e["ts"] < before - shape.grace:
                    part.counters["late"] += 1
                    part.late.append((e, before))
                    continue
                start = e["ts"] // shape.window * shape.window
            part.counters["applied"] += 1
            if w > 0:
                self.group(part, start, key).append((1, e))
            else:
                self.retract(part, start, key, e)
        newest = max((e["ts"] for e in events), default=None)
        if newest is not None:
            part.watermark = newest if before is None else max(before, newest)
        if shape.window is not None and shape.retention is not None:
            assert part.watermark is not None
            for start, key in list(part.groups):
                if start + shape.window <= part.watermark - shape.retention:
                    del part.groups[(start, key)]

    def group(
        self, part: PartModel, start: int, key: tuple[Any, ...]
    ) -> list[tuple[int, dict[str, Any]]]:
        if (start, key) in part.groups:
            return part.groups[(start, key)]
        alive = part.alive()
        if key not in alive and len(alive - {self.other}) >= self.shape.max_groups:
            part.counters["overflow"] += 1
            key = self.other
        return part.groups.setdefault((start, key), [])

    def retract(self, part: PartModel, start: int, key: tuple[Any, ...], e: dict[str, Any]) -> None:
        rows = part.groups.get((start, key))
        in_bucket = any(s == start for s, _ in part.groups)
        if rows is None and in_bucket and key not in part.alive():
            key = self.other
            rows = part.groups.get((start, key))
        if rows is None:
            part.counters["unmatched"] += 1
            return
        # The group's figures lose the row's values, whether or not it was the one that held
        # them (a row folded into __other__ while its key is alive again); at no rows, it goes.
        rows.append((-1, e))
        if sum(sign for sign, _ in rows) == 0:
            del part.groups[(start, key)]

    def rows(self, parts: list[str] | None = None) -> list[tuple[Any, ...]]:
        merged: dict[tuple[Any, ...], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        for name, part in self.parts.items():
            if parts is None or name in parts:
                for (start, key), rows in part.groups.items():
                    merged[(*key, start)] += rows
        out = []
        for (*group_key, start), rows in merged.items():
            xs = [sign * e["x"] for sign, e in rows if e.get("x") is not None]
            n = sum(sign for sign, e in rows if e.get("x") is not None)
            total: Any = None
            if n:
                total = sum(xs) if all(isinstance(x, int) for x in xs) else math.fsum(xs)
            window = () if self.shape.window is None else (start,)
            out.append((*group_key, *window, sum(sign for sign, _ in rows), total))
        return sorted(out, key=repr)


def present(event: dict[str, Any]) -> dict[str, Any]:
    """A late event as kept: its fields, NULL ones left out (absent and null mean the same)."""
    return {k: v for k, v in event.items() if v is not None}


def registry(shapes: dict[str, Shape], keep: int = 1000) -> Registry:
    config = parse({"sources": SOURCES, "views": {name: s.options() for name, s in shapes.items()}})
    return Registry(config.sources, config.views, keep=keep)


def rows(reg: Registry, view: str) -> list[tuple[Any, ...]]:
    return sorted(run(reg.views[view], Query(limit=100_000)).rows, key=repr)


def event(rng: random.Random, ts: int, keys: list[Any]) -> dict[str, Any]:
    e: dict[str, Any] = {
        "ts": ts,
        "k": rng.choice(keys),
        "j": rng.choice(["x", "y", None]),
        "status": rng.choice(["paid", "void", None]),
        "x": rng.choice([rng.randrange(-20, 30), rng.randrange(1, 9) / 4, None]),
    }
    return {k: v for k, v in e.items() if v is not None or rng.random() < 0.5}


SHAPES = {
    "late_and_retention": Shape(("k",), 2 * MINUTE, grace=45_000, retention=4 * MINUTE),
    "capped": Shape(("k", "j"), MINUTE, grace=600_000, max_groups=5),
    "capped_and_retained": Shape(("k",), MINUTE, grace=30_000, retention=2 * MINUTE, max_groups=3),
    "no_window": Shape(("j",), None, max_groups=2),
    "no_keys": Shape((), MINUTE, grace=0),
}


def batches(
    rng: random.Random, n: int, keys: list[Any], start: int = T0
) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    clock = {"p0": start, "p1": start + 3 * MINUTE}
    for _ in range(n):
        part = rng.choice(sorted(clock))
        clock[part] += rng.randrange(0, 50_000)
        size = rng.choice([1, 3, rng.randrange(1, 40)])
        spread = rng.choice([1, 30_000, 200_000])
        events = [event(rng, clock[part] - rng.randrange(spread), keys) for _ in range(size)]
        out.append((part, events))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_the_policies_match_a_plain_model(seed: int) -> None:
    rng = random.Random(seed)
    reg = registry(SHAPES, keep=5)
    models = {name: Model(shape) for name, shape in SHAPES.items()}
    keys = ["a", "b", "c", "d", "e", "f", "g", None]
    for position, (part, events) in enumerate(batches(rng, 120, keys), start=1):
        before = {name: dict(m.parts.get(part, PartModel()).counters) for name, m in models.items()}
        watermark = models["no_keys"].parts.get(part, PartModel()).watermark
        applied = reg.apply(Batch("s", [dict(e) for e in events], position, part=part))
        for name, model in models.items():
            model.apply(part, events, [1] * len(events))
            after = model.parts[part].counters
            effect = applied.views[name]
            counted = (effect.applied, effect.late, effect.overflow, effect.unmatched)
            assert (*counted, effect.out_of_range) == tuple(
                after[c] - before[name][c]
                for c in ("applied", "late", "overflow", "unmatched", "out_of_range")
            ), (name, position)
        assert applied.watermark == watermark
    for name, model in models.items():
        view = reg.views[name]
        assert rows(reg, name) == model.rows(), name
        for part_name, kept in model.parts.items():
            assert view.part_counters(part_name) == kept.counters, (name, part_name)
        assert view.counter("late") == sum(len(p.late) for p in model.parts.values())
        assert (
            view.late_events()
            == [  # the newest ``keep`` per part
                {"event": present(e), "watermark": w, "grace": SHAPES[name].grace, "part": p}
                for p, kept in model.parts.items()
                for e, w in kept.late[-5:]
            ]
        ), name
        groups = set().union(*(p.alive() for p in model.parts.values()))
        starts = {s for p in model.parts.values() for s, _ in p.groups}
        assert view.stats() == {
            "groups": len(groups),
            "buckets": len(starts),
            "parts": len(model.parts),
            "pairs": sum(len(p.groups) for p in model.parts.values()),
            **{
                c: sum(p.counters[c] for p in model.parts.values())
                for c in model.parts["p0"].counters
            },
        }, name
    assert view.part_counters("nowhere") == dict.fromkeys(
        ("applied", "late", "overflow", "unmatched", "out_of_range"), 0
    )


CHANGES = {
    "changes": Shape(("k",), MINUTE, grace=120_000, retention=5 * MINUTE, max_groups=3, source="c"),
    "changes_whole": Shape(("k",), None, max_groups=2, source="c"),
}


@pytest.mark.parametrize("seed", range(3))
def test_retractions_match_a_plain_model(seed: int) -> None:
    """Rows retracted from their group, from ``__other__`` when they were folded into it, or
    counted as unmatched when their group is gone; a group whose last row goes disappears."""
    rng = random.Random(seed)
    reg = registry(CHANGES)
    models = {name: Model(shape) for name, shape in CHANGES.items()}
    sent: dict[str, list[dict[str, Any]]] = {"p0": [], "p1": []}
    keys = ["a", "b", "c", "d", "e"]
    for position, (part, events) in enumerate(batches(rng, 150, keys), start=1):
        weights = []
        for i, e in enumerate(events):
            roll = rng.random()
            if sent[part] and roll < 0.4:  # retract a row sent earlier instead
                events[i] = sent[part].pop(rng.randrange(len(sent[part])))
                weights.append(-1)
            elif roll < 0.45:  # or one never sent (a stream joined mid-way)
                events[i] = {**e, "k": "never"}
                weights.append(-1)
            else:
                sent[part].append(e)
                weights.append(1)
        applied = reg.apply(
            Batch("c", [dict(e) for e in events], position, part=part, weights=weights)
        )
        for name, model in models.items():
            counted = dict(model.parts.get(part, PartModel()).counters)
            model.apply(part, events, weights)
            effect = applied.views[name]
            assert (
                effect.unmatched == model.parts[part].counters["unmatched"] - counted["unmatched"]
            )
    for name, model in models.items():
        assert rows(reg, name) == model.rows(), name
        assert reg.views[name].counter("unmatched") > 0, "a seed that never hit the rule"
        alive = set().union(*(p.alive() for p in model.parts.values()))
        assert reg.views[name].stats()["groups"] == len(alive), name


def test_state_survives_a_snapshot_and_partitions_move_with_their_own() -> None:
    rng = random.Random(11)
    reg = registry(SHAPES, keep=5)
    models = {name: Model(shape) for name, shape in SHAPES.items()}
    for position, (part, events) in enumerate(batches(rng, 60, ["a", "b", "c", None]), start=1):
        reg.apply(Batch("s", [dict(e) for e in events], position, part=part))
        for model in models.values():
            model.apply(part, events, [1] * len(events))
    restored = registry(SHAPES, keep=5)
    assert restored.load_state(snapshot.decode(snapshot.encode(reg.to_state()))) == []
    for name, model in models.items():
        assert rows(restored, name) == model.rows(), name
        assert restored.views[name].stats() == reg.views[name].stats()
        assert restored.views[name].late_events() == reg.views[name].late_events()
    source = reg.sources["s"]
    assert restored.sources["s"].positions == source.positions
    assert restored.sources["s"].watermarks == source.watermarks
    assert (restored.sources["s"].accepted, restored.sources["s"].rejected) == (
        source.accepted,
        source.rejected,
    )
    # ... and goes on exactly as the original would: group references, the cap, retention and
    # the late events kept all carry over.
    newest = max(reg.sources["s"].watermarks.values())  # and later in time: old buckets expire
    later = batches(random.Random(12), 40, ["a", "d", "e", None], start=newest)
    for position, (part, events) in enumerate(later, start=100):
        for target in (reg, restored):
            target.apply(Batch("s", [dict(e) for e in events], position, part=part))
        for model in models.values():
            model.apply(part, events, [1] * len(events))
    for name, model in models.items():
        assert rows(restored, name) == rows(reg, name) == model.rows(), name
        assert restored.views[name].stats() == reg.views[name].stats(), name
        assert restored.views[name].late_events() == reg.views[name].late_events(), name

    # Partition p1 moves to another process: it takes its state, position and watermark.
    moved = snapshot.decode(snapshot.encode(reg.part_state("s", "p1")))
    assert (moved["source"], moved["part"]) == ("s", "p1")  # a part file says what it holds
    assert (moved["position"], moved["watermark"]) == (
        source.positions["p1"],
        source.watermarks["p1"],
    )
    version = reg.sources["s"].version
    reg.drop_part("s", "p1")
    assert reg.sources["s"].version > version
    assert "p1" not in reg.sources["s"].positions
    assert "p1" not in reg.sources["s"].watermarks
    reg.drop_part("s", "never-seen")  # nothing to drop: no error
    other = registry(SHAPES, keep=5)
    versions = [other.sources["s"].version]
    assert other.load_part("s", "p1", moved) == []
    versions.append(other.sources["s"].version)
    other.drop_part("s", "p1")
    versions.append(other.sources["s"].version)
    assert other.load_part("s", "p1", moved) == []
    versions.append(other.sources["s"].version)
    assert versions == sorted(set(versions))  # every change is a new version (answer caches)
    assert other.sources["s"].positions == {"p1": source_position(moved)}
    assert other.sources["s"].watermarks == {"p1": moved["watermark"]}
    for name, model in models.items():
        assert rows(reg, name) == model.rows(["p0"]), name
        assert rows(other, name) == model.rows(["p1"]), name
        assert other.views[name].part_counters("p1") == model.parts["p1"].counters


def source_position(state: dict[str, Any]) -> int:
    position = state["position"]
    assert isinstance(position, int)
    return position


def test_changed_or_new_definitions_are_refused_or_start_empty() -> None:
    old = {"v": Shape(("k",), MINUTE), "gone": Shape((), None)}
    reg = registry(old)
    reg.apply(Batch("s", [{"ts": T0, "k": "a", "x": 1}], 1, part="p0"))
    state = snapshot.decode(snapshot.encode(reg.to_state()))
    part = snapshot.decode(snapshot.encode(reg.part_state("s", "p0")))
    changed = registry({"v": Shape(("k", "j"), MINUTE), "gone": Shape(("j",), None)})
    with pytest.raises(StateMismatch) as caught:
        changed.load_state(state)
    assert str(caught.value) == (
        "view(s) v, gone changed their SQL since the snapshot was taken; restore the old "
        "definition, or give the new one a new name (it starts empty)"
    )
    with pytest.raises(StateMismatch) as caught:
        changed.load_part("s", "p0", part)
    assert str(caught.value) == (
        "view(s) v, gone changed their SQL since partition p0 was saved; restore the definition "
        "or rename the view"
    )
    grown = registry({**old, "new": Shape(("j",), None)})
    grown.apply(Batch("s", [{"ts": T0, "j": "x", "x": 9}], 1, part="p0"))  # p0 held this here
    version = grown.sources["s"].version
    assert grown.load_part("s", "p0", part) == ["view new is new for p0: it counts from here on"]
    assert grown.sources["s"].version > version
    assert rows(grown, "v") == rows(reg, "v")
    assert rows(grown, "new") == []  # the part's old state goes with it
    # A member that never held p0 (the usual hand-over): built aside first (as a worker thread
    # does while queries go on), then swapped in at once.
    fresh = registry({**old, "new": Shape(("j",), None)})
    built = fresh.build_part("s", "p0", part)
    assert rows(fresh, "v") == []  # built, not installed: queries still see the state before
    assert fresh.install_part(built) == ["view new is new for p0: it counts from here on"]
    assert rows(fresh, "v") == rows(reg, "v")
    # and its next save (a periodic one) has the new view's empty state for p0
    saved = snapshot.decode(snapshot.encode(fresh.part_state("s", "p0")))
    assert snapshot.encode(saved["views"]["v"]) == snapshot.encode(part["views"]["v"])
    assert len(saved["views"]["new"]["keys"]) == 0
    shrunk = registry({"v": old["v"], "new": Shape(("j",), None)})
    version = shrunk.sources["s"].version
    assert shrunk.load_state(state) == [
        "view new is new: it counts events from now on",
        "view gone is no longer defined: its state was dropped",
    ]
    assert shrunk.sources["s"].version > version
    assert rows(shrunk, "v") == rows(reg, "v")
    assert rows(shrunk, "new") == []


def test_a_source_counts_what_it_accepted_and_rejected_and_keeps_the_newest_rejects() -> None:
    reg = registry({"v": Shape(("k",), None)}, keep=2)
    seen: list[Batch] = []
    reg.observers.append(seen.append)
    rejects = [{"line": i, "reason": "bad"} for i in range(3)]
    first = Batch("s", [{"ts": T0, "k": "a"}] * 4, 7, rejects, part="p0")
    second = Batch("s", [{"ts": T0 - 5, "k": "b"}], 8, rejects[:1], part="p0")
    only_rejects = Batch("s", [], 9, rejects[1:2], part="p0")  # every line invalid, skipped
    for batch in (first, second, only_rejects):
        reg.apply(batch)
    source = reg.sources["s"]
    assert (source.accepted, source.rejected) == (5, 5)
    assert list(source.rejected_events) == [rejects[0], rejects[1]]
    assert source.positions == {"p0": 9}
    assert source.watermarks == {"p0": T0}  # an older batch never moves it back
    assert seen == [first, second, only_rejects]
    assert (source.version, reg.version) == (3, 3)
    state = snapshot.decode(snapshot.encode(reg.to_state(extra={"position": 9})))
    assert state["position"] == 9
    assert state["sources"]["s"]["counters"] == [5, 5]
    again = registry({"v": Shape(("k",), None)}, keep=2)
    again.load_state(state)
    assert list(again.sources["s"].rejected_events) == [rejects[0], rejects[1]]
    detached = reg.to_state(detached=frozenset({"s"}))
    assert "positions" not in detached["sources"]["s"]
    assert "parts" not in detached["views"]["v"]
    # A snapshot whose source saves its partitions apart (Kafka) loads without them.
    apart = registry({"v": Shape(("k",), None)}, keep=2)
    apart.load_state(snapshot.decode(snapshot.encode(detached)))
    assert (apart.sources["s"].positions, apart.sources["s"].watermarks) == ({}, {})
    assert apart.sources["s"].accepted == 5
    assert rows(apart, "v") == []


def test_retention_keeps_a_bucket_until_it_ends_exactly_retention_before_the_watermark() -> None:
    """retention = 2m, 1-minute buckets: the bucket [s, s + 1m) goes once s + 1m <= watermark -
    2m, that is at the watermark s + 3m, and not a millisecond earlier."""
    shape = Shape(("k",), MINUTE, grace=60_000, retention=2 * MINUTE)
    reg = registry({"v": shape})
    reg.apply(Batch("s", [{"ts": T0, "k": "a", "x": 9}], 1))
    reg.apply(Batch("s", [{"ts": T0 + 3 * MINUTE - 1, "k": "b", "x": 9}], 2))
    assert [r[:2] for r in rows(reg, "v")] == [("a", T0), ("b", T0 + 2 * MINUTE)]
    reg.apply(Batch("s", [{"ts": T0 + 3 * MINUTE, "k": "b", "x": 9}], 3))
    assert [r[:2] for r in rows(reg, "v")] == [("b", T0 + 2 * MINUTE), ("b", T0 + 3 * MINUTE)]
    assert reg.views["v"].stats()["groups"] == 1


def test_a_batch_read_column_wise_lands_in_its_own_partition() -> None:
    shape = Shape(("k",), MINUTE, grace=600_000)
    reg = registry({"v": shape})
    body = b"".join(orjson.dumps({"ts": T0 + i, "k": "a", "x": 9}) + b"\n" for i in range(2000))
    columns = Decoder(reg.sources["s"].spec, 1 << 20).columns(body)
    assert columns is not None  # read column-wise
    reg.apply(Batch("s", [], 1, part="p3", columns=columns))
    assert list(reg.views["v"].parts) == ["p3"]
    assert reg.views["v"].part_counters("p3")["applied"] == 2000
    assert reg.sources["s"].watermarks == {"p3": T0 + 1999}


def _arrays_bytes(root: object) -> int:
    """The bytes of every numpy array reachable from ``root`` through attributes, lists and
    dicts, each array once: an independent count of what ``View.nbytes`` reports."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            total += item.nbytes
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif hasattr(item, "__dict__"):
            stack.extend(vars(item).values())
    return total


def test_the_state_bytes_reported_add_up_over_partitions() -> None:
    """``View.nbytes`` (``state_bytes`` in /v1/status): nothing for no state, the bytes of the
    arrays its parts hold, and a second partition holding the same pairs costs as much again."""
    reg = registry({"v": Shape(("k",), MINUTE)})
    view = reg.views["v"]
    assert view.nbytes() == 0
    batch = [{"ts": T0 + i * MINUTE, "k": f"k{i % 5}", "x": i} for i in range(40)]
    reg.apply(Batch("s", batch, 1, part="p0"))
    one = view.nbytes()
    assert one > 0
    parts = view.parts["p0"]
    assert one == _arrays_bytes([parts.pairs, parts.aggs])
    reg.apply(Batch("s", batch, 1, part="p1"))
    assert view.nbytes() == 2 * one


def test_overflow_counts_every_window_of_a_folded_event_as_a_whole_number() -> None:
    """A hop window puts each event in size/slide windows: past max_groups, each of them is an
    overflow, counted as an integer (it is shown in /v1/views)."""
    config = parse(  # the Shapes here are tumbling: a hop view written out
        {
            "sources": SOURCES,
            "views": {
                "h": {
                    "sql": "SELECT k, hop(ts, '3 minutes', '1 minute') AS w, count(*) AS n "
                    "FROM s GROUP BY k, w",
                    "max_groups": 1,
                }
            },
        }
    )
    hop = Registry(config.sources, config.views)
    events = [{"ts": T0 + i, "k": k, "x": 1} for i, k in enumerate("aabbb")]
    hop.apply(Batch("s", events, 1, part="p0"))
    overflow = hop.views["h"].counter("overflow")
    assert overflow == 3 * 3  # b's three events, each in three windows
    assert isinstance(overflow, int)


def test_retractions_taken_one_by_one_leave_every_hop_window_of_their_row() -> None:
    """A batch whose retractions must go in order (one retracts a row not there yet: the running
    count would go below zero) is applied row by row; a row in a hop window is in size/slide
    windows, and its retraction leaves each of them."""
    config = parse(
        {
            "sources": SOURCES,
            "views": {
                "h": {
                    "sql": "SELECT k, hop(ts, '3 minutes', '1 minute') AS w, count(*) AS n, "
                    "sum(x) AS total FROM c GROUP BY k, w"
                }
            },
        }
    )
    hop = Registry(config.sources, config.views)
    a, b = {"ts": T0, "k": "a", "x": 5}, {"ts": T0, "k": "b", "x": 1}
    hop.apply(Batch("c", [dict(a), dict(b)], 1, part="p0", weights=[1, 1]))
    # the first retraction (a row never inserted) empties a's windows; the second finds none
    stray = {**a, "x": 7}
    applied = hop.apply(Batch("c", [stray, dict(a)], 2, part="p0", weights=[-1, -1]))
    assert applied.views["h"].unmatched == 3  # a's row, in each of its three windows
    assert [(k, n, total) for k, _, n, total in rows(hop, "h")] == [("b", 1, 1)] * 3


@pytest.mark.parametrize("fails", [1, 2])
def test_hop_panes_fold_the_same_when_their_codes_do_not_pack(
    fails: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hop window folds each row once into its pane, then panes into windows; both steps pack
    two columns into one int64 code, and when a span is too wide to pack (no batch of a test's
    size is) they fall back: the first to folding every window directly, the second to sorting
    both columns. Either fallback gives the state packing gives."""
    config = parse(
        {
            "sources": SOURCES,
            "views": {
                "h": {
                    "sql": "SELECT k, hop(ts, '4 minutes', '1 minute') AS w, count(*) AS n, "
                    "sum(x) AS total FROM s GROUP BY k, w"
                }
            },
        }
    )
    rng = random.Random(fails)
    events = [
        {"ts": T0 + rng.randrange(10 * MINUTE), "k": rng.choice("abc"), "x": rng.randrange(100)}
        for _ in range(400)
    ]
    packed = Registry(config.sources, config.views)
    packed.apply(Batch("s", [dict(e) for e in events], 1, part="p0"))
    real = pack
    calls = {"n": 0}

    def pack_failing_on_call(columns: list[np.ndarray]) -> np.ndarray | None:
        calls["n"] += 1
        return None if calls["n"] == fails else real(columns)

    monkeypatch.setattr(views.view, "pack", pack_failing_on_call)
    fallback = Registry(config.sources, config.views)
    fallback.apply(Batch("s", [dict(e) for e in events], 1, part="p0"))
    assert calls["n"] >= fails  # the fallback was taken
    assert rows(fallback, "h") == rows(packed, "h")
    assert len(rows(packed, "h")) > 3 * 4  # several keys, each in many windows


def test_tumbling_pairs_are_placed_the_same_when_their_codes_do_not_pack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``_place`` packs (bucket, key slot) into one code to find each row's pair; a span too
    wide to pack (no batch of real event times is) falls back to sorting both columns, which
    must place every row in the same pair."""
    config = parse(
        {
            "sources": SOURCES,
            "views": {
                "t": {
                    "sql": "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, sum(x) AS total "
                    "FROM s GROUP BY k, m",
                    "grace": "1h",
                }
            },
        }
    )
    rng = random.Random(11)
    events = [
        {"ts": T0 + rng.randrange(30 * MINUTE), "k": rng.choice("abcd"), "x": rng.randrange(50)}
        for _ in range(300)
    ]
    packed = Registry(config.sources, config.views)
    packed.apply(Batch("s", [dict(e) for e in events], 1, part="p0"))
    calls = {"n": 0}

    def never_packs(columns: list[np.ndarray]) -> None:
        calls["n"] += 1

    monkeypatch.setattr(views.view, "pack", never_packs)
    fallback = Registry(config.sources, config.views)
    fallback.apply(Batch("s", [dict(e) for e in events], 1, part="p0"))
    assert calls["n"] >= 1  # the fallback was taken
    assert rows(fallback, "t") == rows(packed, "t")
    assert len(rows(packed, "t")) > 4 * 20  # four keys, each in most of the 30 minutes


def test_an_avg_beside_the_sum_of_the_same_field_keeps_no_state_of_its_own() -> None:
    """``avg(x)`` next to ``sum(x)`` reads the sum's state (one copy: the 84 bytes a pair of
    benchmarks/README): the view's aggregates hold exactly the bytes of the sum alone, and the
    mean is the sum over the count, against plain Python."""
    rng = random.Random(11)
    events: list[dict[str, Any]] = [
        {"ts": T0 + i, "k": rng.choice("abc"), "x": rng.randint(-50, 50)} for i in range(500)
    ]
    alone = "SELECT k, sum(x) AS s FROM s GROUP BY k"
    beside = "SELECT k, sum(x) AS s, avg(x) AS m FROM s GROUP BY k"
    config = parse(
        {"sources": {"s": {"time": "ts"}}, "views": {"a": {"sql": alone}, "b": {"sql": beside}}}
    )
    registry = Registry(config.sources, config.views)
    registry.apply(Batch("s", [dict(e) for e in events], 1))
    held = {
        name: sum(a.nbytes() for a in view.parts[""].aggs) for name, view in registry.views.items()
    }
    assert held["b"] == held["a"] > 0
    rows = run(registry.views["b"], Query(order_by="k")).rows
    expected: list[tuple[Any, ...]] = []
    for k in sorted({str(e["k"]) for e in events}):
        xs = [int(e["x"]) for e in events if e["k"] == k]
        expected.append((k, sum(xs), pytest.approx(sum(xs) / len(xs), rel=1e-15)))
    assert [tuple(r) for r in rows] == expected


def test_a_partitions_first_batch_of_nothing_but_rejected_lines_expires_nothing() -> None:
    """A batch whose every line was rejected (``on_error=skip``) is applied as no events: the
    partition has no watermark yet, so a windowed view with a retention has nothing to expire —
    the batch is counted, the position moves, and the next batch applies as usual."""
    sql = "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n FROM s GROUP BY k, m"
    config = parse(
        {"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": sql, "retention": "1h"}}}
    )
    registry = Registry(config.sources, config.views)
    bad = {"line": 1, "field": "ts", "reason": "missing", "text": "{}"}
    registry.apply(Batch("s", [], 1, rejected=[bad], part="p"))
    assert registry.sources["s"].positions["p"] == 1
    registry.apply(Batch("s", [{"ts": T0, "k": "a"}, {"ts": T0 + 1, "k": "a"}], 2, part="p"))
    assert run(registry.views["v"], Query()).rows == [("a", T0, 2)]


def test_the_partitions_of_a_view_share_one_dictionary_of_values() -> None:
    """Exact distinct counts and top-k keep values by code in a dictionary the view's parts
    share: two partitions of the same 40 products hold them once (not once per partition), and
    the answers merged over both partitions are plain Python's."""
    sql = "SELECT count_distinct(p) AS products, top_k(p, 3) AS top FROM s"
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": sql}}})
    registry = Registry(config.sources, config.views)
    products = [f"p{j}" for j in range(40)]
    events: dict[str, list[dict[str, Any]]] = {}
    for n, part in enumerate(["t:0", "t:1"]):
        rng = random.Random(n)  # every product once, then a skewed 360 more
        names = products + rng.choices(products, weights=range(1, 41), k=360)
        rng.shuffle(names)
        events[part] = [{"ts": T0 + i, "p": name} for i, name in enumerate(names)]
    for position, (part, batch) in enumerate(events.items(), start=1):
        registry.apply(Batch("s", [dict(e) for e in batch], position, part=part))
    view = registry.views["v"]
    for index in range(2):
        held = {id(part.aggs[index].values) for part in view.parts.values()}
        assert held == {id(view.dictionaries[index])}
        assert len(view.dictionaries[index] or []) == 40
    every = [e["p"] for batch in events.values() for e in batch]
    ((products, top),) = run(view, Query()).rows
    assert products == len(set(every))
    counts = Counter(every)
    assert [(item["value"], item["count"]) for item in top] == sorted(
        counts.items(), key=lambda kv: (-kv[1], kv[0])
    )[:3]


def test_sums_and_avgs_over_different_arguments_each_keep_their_own_state() -> None:
    """Only a sum or avg of the very same argument shares a state: ``sum(x)`` and ``avg(y)``,
    and ``sum(x * (y))`` and ``avg(z * (y))`` (the same text after their last parenthesis), are
    four states, each answered as plain Python computes it."""
    sql = (
        "SELECT k, sum(x) AS sx, avg(y) AS ay, sum(x * (y)) AS sxy, avg(z * (y)) AS azy "
        "FROM s GROUP BY k"
    )
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": sql}}})
    registry = Registry(config.sources, config.views)
    rng = random.Random(5)
    events: list[dict[str, Any]] = [
        {
            "ts": T0 + i,
            "k": rng.choice("ab"),
            "x": rng.randint(1, 9),
            "y": rng.randint(10, 99),
            "z": rng.randint(100, 999),
        }
        for i in range(300)
    ]
    registry.apply(Batch("s", [dict(e) for e in events], 1))
    rows = run(registry.views["v"], Query(order_by="k")).rows
    expected: list[tuple[Any, ...]] = []
    for k in "ab":
        mine = [e for e in events if e["k"] == k]
        n = len(mine)
        expected.append(
            (
                k,
                sum(e["x"] for e in mine),
                pytest.approx(sum(e["y"] for e in mine) / n, rel=1e-15),
                sum(e["x"] * e["y"] for e in mine),
                pytest.approx(sum(e["z"] * e["y"] for e in mine) / n, rel=1e-15),
            )
        )
    assert [tuple(r) for r in rows] == expected
