"""A running view: spec + keyed state, partition by partition.

State is kept per source partition (a Kafka topic-partition, one file of a file source, or ``""``
for HTTP): ``part -> bucket start -> group key -> aggregates``. Queries merge the parts, which the
mergeable aggregates make cheap; a partition that moves to another process takes exactly its own
state along, consistent with its own position.

Buckets live in a ``SortedDict`` so time-range reads are a slice and retention drops from the front.
Views without a window keep everything in the single bucket ``0``.

Policies, all observable through counters kept with each part (and so in snapshots):

* **late**: an event whose time is before ``watermark - grace`` (the partition's watermark as it
  was *before this batch*) is not applied; it is counted and the newest ``keep`` of them are kept
  for inspection. Judging against the watermark at batch start makes the outcome a pure function
  of the batches, which replays reproduce exactly.
* **max_groups**: at most ``max_groups`` distinct group keys are alive per part; events for
  further keys are folded into one ``__other__`` group (every key column reads ``"__other__"``) and
  counted as ``overflow``. Memory stays bounded; nothing is silently dropped.
* **retention**: buckets that ended before ``watermark - retention`` are dropped.
* **retractions** (change streams): a row with weight -1 removes its contribution. A group whose
  last row is retracted disappears. A retraction for a group that does not exist (its row was never
  added here, e.g. the stream was joined mid-way) is counted as ``unmatched`` and skipped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from sortedcontainers import SortedDict

from views.aggregates import Aggregate
from views.spec import ViewSpec
from views.windows import hop_starts, tumble_start

OTHER = "__other__"
Key = tuple[Any, ...]
Groups = dict[Key, list[Aggregate]]
COUNTERS = ("applied", "late", "overflow", "unmatched")


def late_record(
    event: dict[str, Any], watermark: int | None, grace: int, part: str
) -> dict[str, Any]:
    """What is kept of a late event (``GET /late``, snapshots): the event, and the watermark and
    grace it was judged by, so a reader can tell why it missed its window."""
    return {"event": event, "watermark": watermark, "grace": grace, "part": part}


class Part:
    """The state of one view for one source partition."""

    def __init__(self, keep: int) -> None:
        self.buckets: SortedDict[int, Groups] = SortedDict()
        self.group_refs: dict[Key, int] = {}  # key -> number of buckets holding it
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.late_events: deque[dict[str, Any]] = deque(maxlen=keep)

    def release(self, start: int, key: Key) -> None:
        groups = self.buckets[start]
        del groups[key]
        if not groups:
            del self.buckets[start]
        self._unref(key)

    def _unref(self, key: Key) -> None:
        left = self.group_refs[key] - 1
        if left:
            self.group_refs[key] = left
        else:
            del self.group_refs[key]

    def drop_before(self, limit: int) -> int:
        dropped = 0
        while self.buckets and self.buckets.peekitem(0)[0] < limit:
            _, groups = self.buckets.popitem(0)
            dropped += 1
            for key in groups:
                self._unref(key)
        return dropped


class View:
    def __init__(self, spec: ViewSpec, time_field: str, keep: int = 1000) -> None:
        self.spec = spec
        self.time_field = time_field
        self.keep = keep
        self.parts: dict[str, Part] = {}
        self.other_key: Key = tuple(OTHER for _ in spec.keys)

    def part(self, name: str) -> Part:
        part = self.parts.get(name)
        if part is None:
            part = self.parts[name] = Part(self.keep)
        return part

    # -- writes ---------------------------------------------------------------------------------

    def apply(
        self,
        events: list[dict[str, Any]],
        watermark: int | None,
        part_name: str = "",
        weights: Sequence[int] | None = None,
    ) -> None:
        """Fold a batch in; ``watermark`` is the partition's watermark before this batch.
        ``weights`` (+1 / -1 per event) are given for change streams only."""
        spec = self.spec
        where = spec.where
        keys = spec.keys
        args = [a.arg for a in spec.aggs]
        window = spec.window
        time_field = self.time_field
        part = self.part(part_name)
        counters = part.counters
        cutoff = None if window is None or watermark is None else watermark - spec.grace
        for index, event in enumerate(events):
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
                    counters["late"] += 1
                    part.late_events.append(late_record(event, watermark, spec.grace, part_name))
                    continue
                starts = (
                    (tumble_start(ts, window.size),)
                    if window.kind == "tumble"
                    else hop_starts(ts, window.size, window.slide)
                )
            counters["applied"] += 1
            if weights is not None and weights[index] < 0:
                for start in starts:
                    self._retract(part, start, key, event, args)
                continue
            for start in starts:
                for aggregate, value in _values(self.group(part, start, key), args, event):
                    aggregate.add(value)

    def group(self, part: Part, start: int, key: Key) -> list[Aggregate]:
        """The aggregates of ``key`` in the bucket at ``start``, created if new — or those of
        ``__other__`` once the part holds ``max_groups`` keys (counted as overflow)."""
        groups = part.buckets.get(start)
        if groups is None:
            groups = part.buckets[start] = {}
        aggs = groups.get(key)
        if aggs is not None:
            return aggs
        refs = part.group_refs
        if key not in refs and len(refs) - (self.other_key in refs) >= self.spec.max_groups:
            part.counters["overflow"] += 1
            key = self.other_key
            aggs = groups.get(key)
            if aggs is not None:
                return aggs
        aggs = groups[key] = [a.new() for a in self.spec.aggs]
        refs[key] = refs.get(key, 0) + 1
        return aggs

    def _retract(
        self, part: Part, start: int, key: Key, event: dict[str, Any], args: list[Any]
    ) -> None:
        groups = part.buckets.get(start)
        aggs = None if groups is None else groups.get(key)
        if aggs is None and groups is not None and key not in part.group_refs:
            key = self.other_key  # the row may have been folded into __other__ when added
            aggs = groups.get(key)
        if aggs is None:
            part.counters["unmatched"] += 1
            return
        removed: list[tuple[Aggregate, Any]] = []
        try:
            for aggregate, value in _values(aggs, args, event):
                aggregate.remove(value)
                removed.append((aggregate, value))
        except (KeyError, ValueError):  # the row's values were never added to this group
            for aggregate, value in removed:  # skipped whole: undo what was removed before
                aggregate.add(value)
            part.counters["unmatched"] += 1
        if aggs[-1].result() == 0:  # the hidden row count of retracting views
            part.release(start, key)

    def expire(self, watermark: int | None, part_name: str = "") -> int:
        """Drop the part's buckets that ended before ``watermark - retention``."""
        spec = self.spec
        part = self.parts.get(part_name)
        if spec.window is None or spec.retention is None or watermark is None or part is None:
            return 0
        return part.drop_before(watermark - spec.retention - spec.window.size + 1)

    # -- reads ----------------------------------------------------------------------------------

    def part_counters(self, part_name: str) -> dict[str, int]:
        """A copy of one part's counters (zeros for a part not seen yet)."""
        part = self.parts.get(part_name)
        return dict.fromkeys(COUNTERS, 0) if part is None else dict(part.counters)

    def counter(self, name: str) -> int:
        return sum(p.counters[name] for p in self.parts.values())

    def late_events(self) -> list[dict[str, Any]]:
        return [e for p in self.parts.values() for e in p.late_events]

    def stats(self) -> dict[str, int]:
        groups: set[Key] = set()
        for part in self.parts.values():
            groups.update(part.group_refs)
        return {
            "groups": len(groups),
            "buckets": len({s for p in self.parts.values() for s in p.buckets}),
            "parts": len(self.parts),
            **{name: self.counter(name) for name in COUNTERS},
        }

    # -- snapshot -------------------------------------------------------------------------------

    def part_state(self, name: str) -> dict[str, Any]:
        part = self.parts.get(name) or Part(self.keep)
        return {
            "counters": part.counters,
            "late_events": list(part.late_events),
            "buckets": list(self.bucket_states(part)),
        }

    @staticmethod
    def bucket_states(part: Part) -> Iterator[list[Any]]:
        """A part's buckets as snapshot state, one bucket at a time."""
        for start, groups in part.buckets.items():
            yield [start, [[list(k), [a.to_state() for a in aggs]] for k, aggs in groups.items()]]

    def load_part(self, name: str, state: dict[str, Any]) -> None:
        part = self.parts[name] = Part(self.keep)
        part.counters.update({k: int(v) for k, v in state["counters"].items()})
        part.late_events.extend(state["late_events"])
        loaders = [(s.cls.restore, s.params) for s in self.spec.aggs]
        refs = part.group_refs
        keys: dict[Key, Key] = {}  # one tuple per key, shared by all its buckets
        for start, groups in state["buckets"]:
            loaded: Groups = {}
            for key, aggs in groups:
                k = tuple(key)
                k = keys.setdefault(k, k)
                loaded[k] = [load(a, p) for (load, p), a in zip(loaders, aggs, strict=True)]
                refs[k] = refs.get(k, 0) + 1
            part.buckets[int(start)] = loaded

    def to_state(self, parts: bool = True) -> dict[str, Any]:
        state: dict[str, Any] = {"fingerprint": self.spec.fingerprint}
        if parts:
            state["parts"] = {name: self.part_state(name) for name in self.parts}
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.parts.clear()
        for name, part in state.get("parts", {}).items():
            self.load_part(name, part)


def _values(
    aggs: list[Aggregate], args: list[Any], event: dict[str, Any]
) -> Iterator[tuple[Aggregate, Any]]:
    """Each aggregate with what ``event`` gives it: ``True`` for ``count(*)``, else its
    argument's value; SQL NULLs are skipped, as aggregates other than ``count(*)`` skip them."""
    for aggregate, arg in zip(aggs, args, strict=True):
        if arg is None:
            yield aggregate, True
        else:
            value = arg(event)
            if value is not None:
                yield aggregate, value
