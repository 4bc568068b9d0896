"""The per-event view tallyd had before the columnar engine, kept only as the test oracle: one
event at a time, in order, with every policy of the README (late, max_groups, retention,
retractions) written the obvious way. ``tests/views/test_engine_oracle.py`` drives seeded random
batches through it and through the engine and finds them equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.oracle.aggregates import KINDS, Oracle
from views.spec import ViewSpec
from views.windows import hop_starts, tumble_start

OTHER = "__other__"
Key = tuple[Any, ...]


class OraclePart:
    def __init__(self) -> None:
        self.buckets: dict[int, dict[Key, list[Oracle]]] = {}
        self.refs: dict[Key, int] = {}  # key -> buckets holding it
        self.counters = {"applied": 0, "late": 0, "overflow": 0, "unmatched": 0}

    def release(self, start: int, key: Key) -> None:
        del self.buckets[start][key]
        if not self.buckets[start]:
            del self.buckets[start]
        self._unref(key)

    def _unref(self, key: Key) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key]


class OracleView:
    def __init__(self, spec: ViewSpec, time_field: str) -> None:
        self.spec = spec
        self.time_field = time_field
        self.parts: dict[str, OraclePart] = {}
        self.other: Key = tuple(OTHER for _ in spec.keys)

    def apply(
        self,
        events: Sequence[dict[str, Any]],
        watermark: int | None,
        part_name: str = "",
        weights: Sequence[int] | None = None,
    ) -> None:
        spec = self.spec
        part = self.parts.setdefault(part_name, OraclePart())
        window = spec.window
        cutoff = None if window is None or watermark is None else watermark - spec.grace
        touched: list[list[Oracle]] = []
        for index, event in enumerate(events):
            if spec.where is not None and spec.where(event) is not True:
                continue
            key = tuple(event.get(k) for k in spec.keys)
            if window is None:
                starts = [0]
            else:
                ts = event[self.time_field]
                if cutoff is not None and ts < cutoff:
                    part.counters["late"] += 1
                    continue
                starts = (
                    [tumble_start(ts, window.size)]
                    if window.kind == "tumble"
                    else hop_starts(ts, window.size, window.slide)
                )
            part.counters["applied"] += 1
            for start in starts:
                if weights is not None and weights[index] < 0:
                    self._retract(part, start, key, event)
                else:
                    aggs = self._group(part, start, key)
                    touched.append(aggs)
                    for aggregate, value in self._values(aggs, event):
                        aggregate.add(value)
        for aggs in touched:
            for aggregate in aggs:
                aggregate.end_batch()

    def _values(self, aggs: list[Oracle], event: dict[str, Any]) -> list[tuple[Oracle, Any]]:
        out = []
        for aggregate, spec in zip(aggs, self.spec.aggs, strict=True):
            if spec.arg is None:
                out.append((aggregate, True))
            else:
                value = spec.arg(event)
                if value is not None:
                    out.append((aggregate, value))
        return out

    def _group(self, part: OraclePart, start: int, key: Key) -> list[Oracle]:
        groups = part.buckets.setdefault(start, {})
        if key in groups:
            return groups[key]
        alive = len(part.refs) - (self.other in part.refs)
        if key not in part.refs and alive >= self.spec.max_groups:
            part.counters["overflow"] += 1
            key = self.other
            if key in groups:
                return groups[key]
        groups[key] = [KINDS[a.kind](**a.params) for a in self.spec.aggs]
        part.refs[key] = part.refs.get(key, 0) + 1
        return groups[key]

    def _retract(self, part: OraclePart, start: int, key: Key, event: dict[str, Any]) -> None:
        groups = part.buckets.get(start, {})
        if key not in groups and key not in part.refs:
            key = self.other  # the row may have been folded into __other__ when added
        aggs = groups.get(key)
        if aggs is None:
            part.counters["unmatched"] += 1
            return
        values = self._values(aggs, event)
        if not all(aggregate.can_remove(value) for aggregate, value in values):
            part.counters["unmatched"] += 1  # whole or nothing: a value that is not there
            return
        for aggregate, value in values:
            aggregate.remove(value)
        if aggs[-1].result() == 0:  # the hidden row count of retracting views
            part.release(start, key)

    def expire(self, watermark: int | None, part_name: str = "") -> None:
        spec = self.spec
        part = self.parts.get(part_name)
        if spec.window is None or spec.retention is None or watermark is None or part is None:
            return
        limit = watermark - spec.retention - spec.window.size + 1
        for start in sorted(s for s in part.buckets if s < limit):
            for key in list(part.buckets[start]):
                part.release(start, key)

    def rows(self) -> dict[tuple[int, Key], list[Any]]:
        """Every (bucket start, key) with its aggregates' results, merged over parts."""
        merged: dict[tuple[int, Key], list[Oracle]] = {}
        for part in self.parts.values():
            for start, groups in part.buckets.items():
                for key, aggs in groups.items():
                    target = merged.get((start, key))
                    if target is None:
                        target = merged[(start, key)] = [
                            KINDS[a.kind](**a.params) for a in self.spec.aggs
                        ]
                    for mine, theirs in zip(target, aggs, strict=True):
                        mine.merge(theirs)
        return {at: [a.result() for a in aggs] for at, aggs in merged.items()}

    def counters(self) -> dict[str, int]:
        out = {"applied": 0, "late": 0, "overflow": 0, "unmatched": 0}
        for part in self.parts.values():
            for name, n in part.counters.items():
                out[name] += n
        return out
