"""The one mutable root: routes batches to the views of their source, tracks per-partition
positions and watermarks, and turns state into snapshots — whole, or one partition at a time.

It knows nothing of where batches come from: which sources keep their parts out of the main
snapshot (Kafka's part files), what a log adds to it (the WAL position, idempotency receipts) is
said by the caller, ``ingest.commit.Committer``, the only code that mutates it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from views.batch import Columns, from_rows
from views.spec import SourceSpec, ViewSpec
from views.view import Part, View


@dataclass
class Batch:
    """A unit of work: the validated events of one source partition, column-wise, and the
    position they end at. Sources decode straight to ``columns``; ``events`` (dicts) are taken too
    — the row decoder's output, tests — and turned into columns when applied."""

    source: str
    events: list[dict[str, Any]]
    position: int  # WAL sequence (HTTP), next offset (Kafka), byte offset (file)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    part: str = ""  # the source partition: "" for HTTP, "topic:3" for Kafka, a path for files
    weights: list[int] | np.ndarray | None = None  # +1 / -1 per event, for change streams
    columns: Columns | None = None  # the events column-wise (then ``events`` is left empty)

    def __len__(self) -> int:
        return len(self.columns) if self.columns is not None else len(self.events)


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


@dataclass
class BuiltPart:
    """A partition's state built and not yet installed (``Registry.build_part``)."""

    source: str
    part: str
    views: dict[str, Part]  # view -> its state for the partition (views new to it: absent)
    position: int | None
    watermark: int | None


class StateMismatch(ValueError):
    """Snapshot state made for different view definitions than the running ones."""


class Registry:
    def __init__(
        self, sources: dict[str, SourceSpec], views: dict[str, ViewSpec], keep: int = 1000
    ) -> None:
        self.keep = keep
        self.sources = {name: SourceState(spec, keep) for name, spec in sources.items()}
        self.views = {
            name: View(spec, sources[spec.source].time_field, keep) for name, spec in views.items()
        }
        self.by_source = self._by_source()
        # Per source, the fields its views read (what a batch's columns must hold).
        self.fields: dict[str, set[str]] = {
            name: set(spec.schema) | {spec.time_field} for name, spec in sources.items()
        }
        self.observers: list[Callable[[Batch], None]] = []  # told of every applied batch
        self.version = 0  # batches applied: the snapshot loop snapshots only after changes

    def _by_source(self) -> dict[str, list[View]]:
        """Each source's views, in definition order."""
        out: dict[str, list[View]] = {name: [] for name in self.sources}
        for view in self.views.values():
            out[view.spec.source].append(view)
        return out

    def columns(self, batch: Batch) -> Columns:
        """The batch column-wise: as decoded, or built from its events (the fields its source's
        views read, and the time field)."""
        if batch.columns is not None:
            return batch.columns
        spec = self.sources[batch.source].spec
        names = {spec.time_field, *self.fields[batch.source]}
        return from_rows(batch.events, spec.time_field, sorted(names))

    def apply(self, batch: Batch) -> Applied:
        steps = self.applying(batch)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                applied: Applied = done.value
                return applied

    def applying(self, batch: Batch) -> Generator[None, None, Applied]:
        """``apply`` in steps: it yields after each view, so a server answers queries between
        views instead of waiting for the whole batch (a query may see some views with the
        batch and others not yet; the batch is in the WAL already, and is acknowledged once
        every view has it). Every view judges lateness by the watermark before the batch."""
        source = self.sources[batch.source]
        part = batch.part
        before = source.watermarks.get(part)
        views = self.by_source[batch.source]
        counted = {v.spec.name: v.part_counters(part) for v in views}
        cols = self.columns(batch)
        weights = None if batch.weights is None else np.asarray(batch.weights, np.int64)
        for view in views:
            view.apply(cols, before, part, weights)
            yield
        if len(cols):
            newest = int(cols.time.max())
            source.watermarks[part] = newest if before is None else max(before, newest)
        for view in views:
            view.expire(source.watermarks.get(part), part)
        source.accepted += len(batch)
        source.rejected += len(batch.rejected)
        source.rejected_events.extend(batch.rejected)
        source.positions[part] = batch.position
        source.version += 1
        self.version += 1
        for observe in self.observers:
            observe(batch)
        effects = {v.spec.name: _effect(counted[v.spec.name], v.part_counters(part)) for v in views}
        return Applied(before, effects)

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
        return self.install_part(self.build_part(source, part, state))

    def build_part(self, source: str, part: str, state: dict[str, Any]) -> BuiltPart:
        """A partition's state made ready to install, changing nothing anyone reads: the parts
        are new objects, and the only shared things touched are each view's key and value
        dictionaries, which only grow (a slot or code no installed part holds is never read).
        So it may run in a worker thread while queries go on, as long as no batch is applied
        meanwhile (the caller holds the committer's step). A large part takes seconds."""
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
        views = {
            view.spec.name: view.build_part(state["views"][view.spec.name])
            for view in self.by_source[source]
            if view.spec.name in state["views"]
        }
        return BuiltPart(source, part, views, state.get("position"), state.get("watermark"))

    def install_part(self, built: BuiltPart) -> list[str]:
        """Swap a built partition in, at once (no await, nothing slow): queries see the old
        state or the new, never half of it. Returns notes on views that start empty for it."""
        notes = []
        part = built.part
        for view in self.by_source[built.source]:
            loaded = built.views.get(view.spec.name)
            if loaded is not None:
                view.parts[part] = loaded
            else:
                view.parts.pop(part, None)
                notes.append(f"view {view.spec.name} is new for {part}: it counts from here on")
        target = self.sources[built.source]
        target.version += 1
        if built.position is not None:
            target.positions[part] = int(built.position)
        if built.watermark is not None:
            target.watermarks[part] = int(built.watermark)
        return notes

    def drop_part(self, source: str, part: str) -> None:
        self.sources[source].version += 1
        for view in self.by_source[source]:
            view.parts.pop(part, None)
        self.sources[source].positions.pop(part, None)
        self.sources[source].watermarks.pop(part, None)

    # -- views changed on a running server (tallyd apply, SIGHUP) ---------------------------------

    def reconfigure(self, views: dict[str, ViewSpec]) -> None:
        """Take ``views`` as the new definitions, in one step: a view no longer defined goes
        with its state; a new one starts empty (no partition holds it yet); one whose SQL is the
        same takes its new options (grace, retention, max_groups: read at each apply). The
        sources and their schemas must not change (``views.plan.live_refusals`` checks that
        first), nor any view's SQL under its name."""
        for name in list(self.views):
            if name not in views:
                del self.views[name]
        for name, spec in views.items():
            view = self.views.get(name)
            if view is None:
                time_field = self.sources[spec.source].spec.time_field
                self.views[name] = View(spec, time_field, self.keep)
            else:
                assert view.spec.fingerprint == spec.fingerprint, f"view {name} changed its SQL"
                view.spec = spec
        self.by_source = self._by_source()
        for source in self.sources.values():
            source.version += 1  # answers cached before are not reused
        self.version += 1

    # -- the whole process ----------------------------------------------------------------------

    def to_state(
        self, extra: dict[str, Any] | None = None, detached: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """The whole state: ``extra`` (what the caller's log adds, first), every source's
        counters, every view's parts — except the parts of ``detached`` sources, which are saved
        apart, one partition at a time (``part_state``). Arrays stay numpy arrays: the snapshot
        codec (``views.snapshot``) writes them as they are. No writer may run until it is
        encoded."""
        return {
            **(extra or {}),
            "sources": {n: s.to_state(parts=n not in detached) for n, s in self.sources.items()},
            "views": {
                name: v.to_state(parts=v.spec.source not in detached)
                for name, v in self.views.items()
            },
        }

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


def _effect(before: dict[str, int], after: dict[str, int]) -> Effect:
    return Effect(
        *(after[name] - before[name] for name in ("applied", "late", "overflow", "unmatched"))
    )
