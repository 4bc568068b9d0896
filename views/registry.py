"""The one mutable root: routes batches to the views of their source, tracks per-partition
positions and watermarks, and turns state into snapshots — whole, or one partition at a time.

It knows nothing of where batches come from: which sources keep their parts out of the main
snapshot (Kafka's part files), what a log adds to it (the WAL position, idempotency receipts) is
said by the caller, ``ingest.commit.Committer``, the only code that mutates it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from views.columns import Prepared, Table, prepare
from views.spec import SourceSpec, ViewSpec
from views.view import View


@dataclass
class Batch:
    """A unit of work: validated events of one source partition and the position they end at."""

    source: str
    events: list[dict[str, Any]]
    position: int  # WAL sequence (HTTP), next offset (Kafka), byte offset (file)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    part: str = ""  # the source partition: "" for HTTP, "topic:3" for Kafka, a path for files
    weights: list[int] | None = None  # +1 / -1 per event, for change streams
    table: Table | None = None  # the same events column-wise (then ``events`` is left empty)

    def __len__(self) -> int:
        return len(self.table) if self.table is not None else len(self.events)


@dataclass(frozen=True)
class Effect:
    """What one batch did to one view: events applied, late (before ``watermark - grace``),
    folded into ``__other__`` (``max_groups``), retractions that matched nothing. Events that
    are none of these did not pass the view's WHERE."""

    applied: int
    late: int
    overflow: int
    unmatched: int


@dataclass(frozen=True)
class Applied:
    """What one batch did: per view, and the partition's watermark it was judged against."""

    watermark: int | None  # the partition's watermark before the batch
    views: dict[str, Effect]


class SourceState:
    def __init__(self, spec: SourceSpec, keep: int) -> None:
        self.spec = spec
        self.watermarks: dict[str, int] = {}  # part -> newest event time applied
        self.positions: dict[str, int] = {}  # part -> position after its last batch
        self.accepted = 0
        self.rejected = 0
        self.version = 0  # bumped by every change to this source's views (answer caches use it)
        self.rejected_events: deque[dict[str, Any]] = deque(maxlen=keep)

    def to_state(self, parts: bool = True) -> dict[str, Any]:
        """``parts``: whether the partitions' positions and watermarks ride along (not when the
        source saves each partition apart, with its state: Kafka's part files)."""
        state: dict[str, Any] = {
            "counters": [self.accepted, self.rejected],
            "rejected_events": list(self.rejected_events),
        }
        if parts:
            state["watermarks"] = self.watermarks
            state["positions"] = self.positions
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.watermarks = {k: int(v) for k, v in state.get("watermarks", {}).items()}
        self.positions = {k: int(v) for k, v in state.get("positions", {}).items()}
        self.accepted, self.rejected = (int(n) for n in state["counters"])
        self.rejected_events.clear()
        self.rejected_events.extend(state["rejected_events"])


class StateMismatch(ValueError):
    """Snapshot state made for different view definitions than the running ones."""


class Registry:
    def __init__(
        self, sources: dict[str, SourceSpec], views: dict[str, ViewSpec], keep: int = 1000
    ) -> None:
        self.sources = {name: SourceState(spec, keep) for name, spec in sources.items()}
        self.views = {
            name: View(spec, sources[spec.source].time_field, keep) for name, spec in views.items()
        }
        self.by_source: dict[str, list[View]] = {name: [] for name in sources}
        for view in self.views.values():
            self.by_source[view.spec.source].append(view)
        self.observers: list[Callable[[Batch], None]] = []  # told of every applied batch
        self.version = 0  # batches applied: the snapshot loop snapshots only after changes

    def prepare(self, batch: Batch) -> list[Prepared | None]:
        """The column-wise work of a table batch, per view of its source, without changing any
        state: may run in a worker thread while only reads happen. Pass it to ``apply``."""
        assert batch.table is not None
        before = self.sources[batch.source].watermarks.get(batch.part)
        return [prepare(v, batch.table, before, batch.part) for v in self.by_source[batch.source]]

    def apply(self, batch: Batch, prepared: list[Prepared | None] | None = None) -> Applied:
        source = self.sources[batch.source]
        time_field = source.spec.time_field
        part = batch.part
        before = source.watermarks.get(part)
        counted = {v.spec.name: v.part_counters(part) for v in self.by_source[batch.source]}
        table = batch.table
        if table is None:
            for view in self.by_source[batch.source]:
                view.apply(batch.events, before, part, batch.weights)
            newest = max((e[time_field] for e in batch.events), default=None)
        else:
            rows: list[dict[str, Any]] | None = None
            views = self.by_source[batch.source]
            if prepared is None:
                prepared = [prepare(v, table, before, part) for v in views]
            for view, ready in zip(views, prepared, strict=True):
                if ready is not None:
                    ready.commit()
                else:
                    rows = table.rows() if rows is None else rows
                    view.apply(rows, before, part)
            newest = table.newest() if len(table) else None
        if newest is not None:
            source.watermarks[part] = newest if before is None else max(before, newest)
        for view in self.by_source[batch.source]:
            view.expire(source.watermarks.get(part), part)
        source.accepted += len(batch)
        source.rejected += len(batch.rejected)
        source.rejected_events.extend(batch.rejected)
        source.positions[part] = batch.position
        source.version += 1
        self.version += 1
        for observe in self.observers:
            observe(batch)
        return Applied(
            before,
            {
                v.spec.name: _effect(counted[v.spec.name], v.part_counters(part))
                for v in self.by_source[batch.source]
            },
        )

    # -- one partition at a time (Kafka hand-over) ----------------------------------------------

    def part_state(self, source: str, part: str) -> dict[str, Any]:
        state = self.sources[source]
        return {
            "source": source,
            "part": part,
            "position": state.positions.get(part),
            "watermark": state.watermarks.get(part),
            "views": {
                v.spec.name: {"fingerprint": v.spec.fingerprint, **v.part_state(part)}
                for v in self.by_source[source]
            },
        }

    def load_part(self, source: str, part: str, state: dict[str, Any]) -> list[str]:
        """Install a partition's state; returns notes on views that start empty for it."""
        notes = []
        changed = [
            v.spec.name
            for v in self.by_source[source]
            if v.spec.name in state["views"]
            and state["views"][v.spec.name]["fingerprint"] != v.spec.fingerprint
        ]
        if changed:
            raise StateMismatch(
                f"view(s) {', '.join(changed)} changed their SQL since partition "
                f"{part} was saved; restore the definition or rename the view"
            )
        for view in self.by_source[source]:
            if view.spec.name in state["views"]:
                view.load_part(part, state["views"][view.spec.name])
            else:
                view.parts.pop(part, None)
                notes.append(f"view {view.spec.name} is new for {part}: it counts from here on")
        target = self.sources[source]
        target.version += 1
        if state.get("position") is not None:
            target.positions[part] = int(state["position"])
        if state.get("watermark") is not None:
            target.watermarks[part] = int(state["watermark"])
        return notes

    def drop_part(self, source: str, part: str) -> None:
        self.sources[source].version += 1
        for view in self.by_source[source]:
            view.parts.pop(part, None)
        self.sources[source].positions.pop(part, None)
        self.sources[source].watermarks.pop(part, None)

    # -- the whole process ----------------------------------------------------------------------

    def to_state(
        self, extra: dict[str, Any] | None = None, detached: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """The whole state: ``extra`` (what the caller's log adds, first), every source's
        counters, every view's parts — except the parts of ``detached`` sources, which are saved
        apart, one partition at a time (``part_state``)."""
        return {
            **(extra or {}),
            "sources": {n: s.to_state(parts=n not in detached) for n, s in self.sources.items()},
            "views": {
                name: v.to_state(parts=v.spec.source not in detached)
                for name, v in self.views.items()
            },
        }

    def state_json(
        self,
        extra: dict[str, Any] | None = None,
        detached: frozenset[str] = frozenset(),
        piece_groups: int = 250,
    ) -> Iterator[bytes]:
        """``orjson.dumps(self.to_state(extra, detached))``, in pieces of at most
        ``piece_groups`` groups, so a caller on the event loop can let queries run between
        pieces (a snapshot of a million (group, bucket) pairs then never holds the loop for
        long). No writer may run meanwhile."""
        head = b"{"
        for key, value in (extra or {}).items():
            yield head + orjson.dumps(key) + b":" + orjson.dumps(value)
            head = b","
        sources = {n: s.to_state(parts=n not in detached) for n, s in self.sources.items()}
        yield head + b'"sources":' + orjson.dumps(sources) + b',"views":{'
        for i, (name, view) in enumerate(self.views.items()):
            yield (b"," if i else b"") + orjson.dumps(name) + b":"
            if view.spec.source in detached:
                yield orjson.dumps(view.to_state(parts=False))
                continue
            yield b'{"fingerprint":' + orjson.dumps(view.spec.fingerprint) + b',"parts":{'
            for j, (part_name, part) in enumerate(view.parts.items()):
                info = {"counters": part.counters, "late_events": list(part.late_events)}
                yield (b"," if j else b"") + orjson.dumps(part_name) + b":"
                yield orjson.dumps(info)[:-1] + b',"buckets":['
                yield from _buckets_json(part.buckets, piece_groups)
                yield b"]}"
            yield b"}}"
        yield b"}}"

    def load_state(self, state: dict[str, Any]) -> list[str]:
        """Load a snapshot state; returns notes on views that were added or removed.

        Raises ``StateMismatch`` when a view kept its name but changed its SQL: its old state
        would be silently wrong under the new definition, and the events needed to rebuild it
        are gone from the trimmed WAL.
        """
        changed = [
            name
            for name, view in self.views.items()
            if name in state["views"]
            and state["views"][name]["fingerprint"] != view.spec.fingerprint
        ]
        if changed:
            raise StateMismatch(
                f"view(s) {', '.join(changed)} changed their SQL since the snapshot was taken; "
                "restore the old definition, or give the new one a new name (it starts empty)"
            )
        notes = []
        for name, source in self.sources.items():
            source.version += 1
            if name in state["sources"]:
                source.load_state(state["sources"][name])
        for name, view in self.views.items():
            if name in state["views"]:
                view.load_state(state["views"][name])
            else:
                notes.append(f"view {name} is new: it counts events from now on")
        notes += [
            f"view {n} is no longer defined: its state was dropped"
            for n in state["views"]
            if n not in self.views
        ]
        return notes


def _buckets_json(buckets: Any, piece_groups: int) -> Iterator[bytes]:
    """A part's buckets as the JSON list ``View.bucket_states`` makes, ``piece_groups`` groups
    at a time, without the enclosing brackets."""
    for k, (start, groups) in enumerate(buckets.items()):
        head_bytes = (b"," if k else b"") + b"[" + orjson.dumps(start) + b",["
        items = list(groups.items())
        for c in range(0, len(items), piece_groups):
            chunk = [
                [list(key), [a.to_state() for a in aggs]]
                for key, aggs in items[c : c + piece_groups]
            ]
            yield (head_bytes if c == 0 else b",") + orjson.dumps(chunk)[1:-1]
        yield (b"" if items else head_bytes) + b"]]"


def _effect(before: dict[str, int], after: dict[str, int]) -> Effect:
    return Effect(
        *(after[name] - before[name] for name in ("applied", "late", "overflow", "unmatched"))
    )
