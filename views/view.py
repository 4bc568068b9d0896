"""A running view: spec + keyed state, ``bucket start -> group key -> aggregates``.

Buckets live in a ``SortedDict`` so time-range reads are a slice and retention drops from the front.
Views without a window keep everything in the single bucket ``0``.

Policies, all observable through counters kept in the state (and so in snapshots):

* **late**: an event whose time is before ``watermark - grace`` (the watermark being the newest
  event time the source had delivered *before this batch*) is not applied; it is counted and the
  newest ``keep`` of them are kept for inspection. Judging against the watermark at batch start
  makes the outcome a pure function of the batches, which the WAL replays identically.
* **max_groups**: at most ``max_groups`` distinct group keys are alive at once; events for further
  keys are folded into one ``__other__`` group (every key column reads ``"__other__"``) and counted
  as ``overflow``. Memory stays bounded; nothing is silently dropped.
* **retention**: buckets that ended before ``watermark - retention`` are dropped.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from sortedcontainers import SortedDict

from views.aggregates import Aggregate
from views.spec import ViewSpec
from views.windows import hop_starts

OTHER = "__other__"
Key = tuple[Any, ...]
Groups = dict[Key, list[Aggregate]]


class View:
    def __init__(self, spec: ViewSpec, time_field: str, keep: int = 1000) -> None:
        self.spec = spec
        self.time_field = time_field
        self.buckets: SortedDict[int, Groups] = SortedDict()
        self.group_refs: dict[Key, int] = {}  # key -> number of buckets holding it
        self.other_key: Key = tuple(OTHER for _ in spec.keys)
        self.applied = 0
        self.late = 0
        self.overflow = 0
        self.late_events: deque[dict[str, Any]] = deque(maxlen=keep)

    # -- writes ---------------------------------------------------------------------------------

    def apply(self, events: list[dict[str, Any]], watermark: int | None) -> None:
        """Fold a batch in; ``watermark`` is the source's watermark before this batch."""
        spec = self.spec
        where = spec.where
        keys = spec.keys
        args = [a.arg for a in spec.aggs]
        window = spec.window
        time_field = self.time_field
        cutoff = None if window is None or watermark is None else watermark - spec.grace
        for event in events:
            if where is not None and where(event) is not True:
                continue
            if len(keys) == 1:
                key: Key = (event.get(keys[0]),)
            else:
                key = tuple([event.get(k) for k in keys])
            if window is None:
                starts: tuple[int, ...] | list[int] = (0,)
            else:
                ts = event[time_field]
                if cutoff is not None and ts < cutoff:
                    self._late(event, watermark)
                    continue
                size = window.size
                starts = (
                    (ts - ts % size,)
                    if window.kind == "tumble"
                    else hop_starts(ts, size, window.slide)
                )
            self.applied += 1
            for start in starts:
                aggs = self._group(start, key)
                for aggregate, arg in zip(aggs, args, strict=True):
                    if arg is None:
                        aggregate.add(True)
                    else:
                        value = arg(event)
                        if value is not None:
                            aggregate.add(value)

    def _group(self, start: int, key: Key) -> list[Aggregate]:
        groups = self.buckets.get(start)
        if groups is None:
            groups = self.buckets[start] = {}
        aggs = groups.get(key)
        if aggs is not None:
            return aggs
        refs = self.group_refs
        if key not in refs and len(refs) - (self.other_key in refs) >= self.spec.max_groups:
            self.overflow += 1
            key = self.other_key
            aggs = groups.get(key)
            if aggs is not None:
                return aggs
        aggs = groups[key] = [a.new() for a in self.spec.aggs]
        refs[key] = refs.get(key, 0) + 1
        return aggs

    def _late(self, event: dict[str, Any], watermark: int | None) -> None:
        self.late += 1
        self.late_events.append({"event": event, "watermark": watermark, "grace": self.spec.grace})

    def expire(self, watermark: int | None) -> int:
        """Drop buckets that ended before ``watermark - retention``; returns how many."""
        spec = self.spec
        if spec.window is None or spec.retention is None or watermark is None:
            return 0
        limit = watermark - spec.retention - spec.window.size
        dropped = 0
        while self.buckets and self.buckets.peekitem(0)[0] < limit + 1:
            _, groups = self.buckets.popitem(0)
            dropped += 1
            for key in groups:
                left = self.group_refs[key] - 1
                if left:
                    self.group_refs[key] = left
                else:
                    del self.group_refs[key]
        return dropped

    # -- reads ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {
            "groups": len(self.group_refs),
            "buckets": len(self.buckets),
            "applied": self.applied,
            "late": self.late,
            "overflow": self.overflow,
        }

    # -- snapshot -------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "fingerprint": self.spec.fingerprint,
            "counters": [self.applied, self.late, self.overflow],
            "late_events": list(self.late_events),
            "buckets": [
                [start, [[list(key), [a.to_state() for a in aggs]] for key, aggs in groups.items()]]
                for start, groups in self.buckets.items()
            ],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.applied, self.late, self.overflow = (int(n) for n in state["counters"])
        self.late_events.clear()
        self.late_events.extend(state["late_events"])
        self.buckets.clear()
        self.group_refs.clear()
        specs = self.spec.aggs
        for start, groups in state["buckets"]:
            loaded: Groups = {}
            for key, aggs in groups:
                k = tuple(key)
                loaded[k] = [s.from_state(a) for s, a in zip(specs, aggs, strict=True)]
                self.group_refs[k] = self.group_refs.get(k, 0) + 1
            self.buckets[int(start)] = loaded
