"""The one mutable root: routes batches to the views of their source, tracks per-partition
positions and watermarks, and turns state into snapshots — whole, or one partition at a time.

It knows nothing of where batches come from: which sources keep their parts out of the main
snapshot (Kafka's part files), what a log adds to it (the WAL position, idempotency receipts) is
said by the caller, ``ingest.commit.Committer``, the only code that mutates it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from views.batch import Columns, Joined, concat, from_rows, from_rows_joined
from views.spec import SourceSpec, ViewSpec
from views.view import COUNTERS, Part, View

T = TypeVar("T")


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
    folded into ``__other__`` (``max_groups``), retractions that matched nothing, events whose
    windows the view cannot place (``out_of_range``: ``views.view``). Events that are none of
    these did not pass the view's WHERE."""

    applied: int
    late: int
    overflow: int
    unmatched: int
    out_of_range: int


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
    # backfills reading the partition when it was saved: (the backfill, its part, its progress)
    backfills: dict[str, tuple[Backfill, Part, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Backfill:
    """A view filling from the history its source still holds before it takes live batches.

    A reader (the source's) feeds it that history in order, batch by batch, judged by its own
    watermarks as the live views were; a partition it has read up to the live position *joins*:
    from then on its live batches go to this view too. Reader and live apply both run in the
    committer's steps, so nothing falls between the two or is counted by both. When every
    partition has joined, the view is live: an added view simply stops being marked, a changed
    one (``replaces``) takes the place of its old definition, which answered meanwhile."""

    view: View
    replaces: bool  # the old definition of the same name answers until this one is done
    positions: dict[str, int] = field(default_factory=dict)  # part -> read up to (inclusive)
    watermarks: dict[str, int] = field(default_factory=dict)  # part -> newest time read
    joined: set[str] = field(default_factory=set)  # parts that take live batches now
    began: dict[str, int] = field(default_factory=dict)  # part -> where its history began
    events: int = 0  # history events read

    def drop(self, part: str) -> None:
        """Forget ``part``: its state, where its history was read to (it moved away, or its
        backfill starts over)."""
        self.view.parts.pop(part, None)
        for progress in (self.positions, self.watermarks, self.began):
            progress.pop(part, None)
        self.joined.discard(part)

    def to_state(self, parts: bool = True) -> dict[str, Any]:
        """``parts``: whether its partitions ride along; without them (a source whose parts are
        saved apart: Kafka's part files, which hold live views only), a restart reads the history
        again from the start, so no progress is saved either."""
        return {
            "fingerprint": self.view.spec.fingerprint,
            "replaces": self.replaces,
            "positions": self.positions if parts else {},
            "watermarks": self.watermarks if parts else {},
            "joined": sorted(self.joined) if parts else [],
            "began": self.began if parts else {},
            "events": self.events if parts else 0,
            "view": self.view.to_state(parts),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.positions = {k: int(v) for k, v in state["positions"].items()}
        self.watermarks = {k: int(v) for k, v in state["watermarks"].items()}
        self.joined = set(state["joined"])
        self.began = {k: int(v) for k, v in state["began"].items()}
        self.events = int(state["events"])
        self.view.load_state(state["view"])


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
        # Sources whose history can be read again (Kafka topics; the HTTP WAL under
        # retain_events): their new and changed views fill from it (``Backfill``).
        self.history: frozenset[str] = frozenset()
        self.backfills: dict[str, Backfill] = {}  # view name -> its backfill, while it runs
        self.by_source = self._by_source()
        # Per source, the fields its views read (what a batch's columns must hold).
        self.fields: dict[str, set[str]] = {
            name: set(spec.schema) | {spec.time_field} for name, spec in sources.items()
        }
        self.observers: list[Callable[[Batch], None]] = []  # told of every applied batch
        self.version = 0  # batches applied: the snapshot loop snapshots only after changes

    def _by_source(self) -> dict[str, list[View]]:
        """Each source's live views, in definition order (not those still backfilling)."""
        filling = {id(b.view) for b in self.backfills.values()}
        out: dict[str, list[View]] = {name: [] for name in self.sources}
        for view in self.views.values():
            if id(view) not in filling:
                out[view.spec.source].append(view)
        return out

    def backfilling(self, name: str) -> bool:
        """Whether the view's answers are partial: added, and still reading its history."""
        filling = self.backfills.get(name)
        return filling is not None and not filling.replaces

    def columns(self, batch: Batch) -> Columns:
        """The batch column-wise: as decoded, or built from its events (the fields its source's
        views read, and the time field)."""
        if batch.columns is not None:
            return batch.columns
        spec = self.sources[batch.source].spec
        names = {spec.time_field, *self.fields[batch.source]}
        return from_rows(batch.events, spec.time_field, sorted(names))

    def apply(self, batch: Batch) -> Applied:
        return _finish(self.applying(batch))

    def apply_group(self, batches: list[Batch]) -> list[Applied]:
        """``apply`` of each batch in turn, small ones folded at once (``applying_group``)."""
        return _finish(self.applying_group(batches))

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
        readers = self._readers(batch)
        cols = self.columns(batch)
        weights = None if batch.weights is None else np.asarray(batch.weights, np.int64)
        for view in readers:
            view.apply(cols, before, part, weights)
            yield
        if len(cols):
            newest = int(cols.time.max())
            source.watermarks[part] = newest if before is None else max(before, newest)
        for view in readers:
            view.expire(source.watermarks.get(part), part)
        self._account(batch)
        effects = {v.spec.name: _effect(counted[v.spec.name], v.part_counters(part)) for v in views}
        return Applied(before, effects)

    def applying_group(self, batches: list[Batch]) -> Generator[None, None, list[Applied]]:
        """``applying`` every batch in turn — the same state, counts and answers — but each
        source's run of small batches folded into its views at once where that gives exactly
        that (``View.apply_group``): a batch's fixed cost (tens of numpy calls per view) is paid
        once for the group. Sources are independent, so each source's batches are taken apart,
        in their order. Yields after each view, as ``applying``."""
        out: list[Applied | None] = [None] * len(batches)
        runs: dict[tuple[str, str], list[int]] = {}
        for i, batch in enumerate(batches):
            runs.setdefault((batch.source, batch.part), []).append(i)
        for which in runs.values():
            run = [batches[i] for i in which]
            merged = self._merged(run) if len(run) > 1 else None
            if merged is None:
                for i, batch in zip(which, run, strict=True):
                    out[i] = yield from self.applying(batch)
                continue
            got = yield from self._apply_merged(run, *merged)
            for i, applied in zip(which, got, strict=True):
                out[i] = applied
        return [a for a in out if a is not None]

    def _account(self, batch: Batch) -> None:
        """What an applied batch adds to its source: counts, rejected events, position."""
        source = self.sources[batch.source]
        source.accepted += len(batch)
        source.rejected += len(batch.rejected)
        source.rejected_events.extend(batch.rejected)
        source.positions[batch.part] = batch.position
        source.version += 1
        self.version += 1
        for observe in self.observers:
            observe(batch)

    def _merged(self, run: list[Batch]) -> tuple[Columns, list[Columns] | None, set[str]] | None:
        """The run's batches column-wise, all together — and each, when that was at hand (to
        apply in turn the views that cannot take them together; else read again then); None
        when one column cannot hold them all as each held them (``views.batch.concat``), when a
        view would not read a field widened from integers to floats exactly as before
        (``_widens_exactly``), or for change streams. Last, the fields that widened."""
        if any(batch.weights is not None for batch in run):
            return None
        each: list[Columns] | None = None
        if all(batch.columns is None for batch in run):  # small bodies: events, not columns
            spec = self.sources[run[0].source].spec
            names = sorted({spec.time_field, *self.fields[run[0].source]})
            events = [batch.events for batch in run]
            joined = from_rows_joined(events, spec.time_field, names)
        else:
            each = [self.columns(batch) for batch in run]
            joined = concat(each)
        if joined is None:
            return None
        merged, widened = joined
        if widened and not all(
            _widens_exactly(v.spec, widened, merged) for v in self._readers(run[0])
        ):
            return None
        return merged, each, widened

    def _readers(self, batch: Batch) -> list[View]:
        """The views a batch of this source partition is applied to: the source's live views,
        then backfilling views whose history of the partition is read (they take its live
        batches too)."""
        joined = [
            b.view
            for b in self.backfills.values()
            if b.view.spec.source == batch.source and batch.part in b.joined
        ]
        return self.by_source[batch.source] + joined

    def _apply_merged(
        self, run: list[Batch], merged: Columns, each: list[Columns] | None, widened: set[str]
    ) -> Generator[None, None, list[Applied]]:
        source = self.sources[run[0].source]
        part = run[0].part
        ends = np.cumsum([len(batch) for batch in run])

        def columns() -> list[Columns]:
            nonlocal each
            if each is None:
                each = [self.columns(batch) for batch in run]
            return each

        if widened:  # late events read from each batch's own columns: its ints are ints
            merged = Joined(merged.time, merged.fields, columns, ends)

        marks: list[int | None] = []  # the partition's watermark before each batch
        mark = source.watermarks.get(part)
        for start, end in zip([0, *ends[:-1].tolist()], ends.tolist(), strict=True):
            marks.append(mark)
            if end > start:
                newest = int(merged.time[start:end].max())
                mark = newest if mark is None else max(mark, newest)
        views = self.by_source[run[0].source]
        effects: dict[str, list[Effect]] = {}
        together: list[View] = []
        for view in self._readers(run[0]):
            got = view.apply_group(merged, marks, ends, part)
            if got is not None:
                together.append(view)
                effects[view.spec.name] = [Effect(a, late, 0, 0, 0) for a, late in got]
            else:  # in turn, with retention between the batches, as ``applying`` does
                effects[view.spec.name] = []
                for i, cols in enumerate(columns()):
                    counted = view.part_counters(part)
                    view.apply(cols, marks[i], part, None)
                    view.expire(marks[i + 1] if i + 1 < len(marks) else mark, part)
                    effects[view.spec.name].append(_effect(counted, view.part_counters(part)))
            yield
        if mark is not None:
            source.watermarks[part] = mark
        for view in together:
            view.expire(mark, part)
        for batch in run:
            self._account(batch)
        return [
            Applied(marks[i], {v.spec.name: effects[v.spec.name][i] for v in views})
            for i in range(len(run))
        ]

    # -- backfills: new and changed views filled from retained history --------------------------

    def backfill_apply(self, name: str, batch: Batch) -> None:
        """One batch of the view's history, to it alone (a batch of another source sharing the
        log only moves its position on), judged by the backfill's own watermark."""
        filling = self.backfills[name]
        part = batch.part
        assert part not in filling.joined, f"{name}: history read past the join of {part}"
        if batch.source == filling.view.spec.source and len(batch):
            view = filling.view
            before = filling.watermarks.get(part)
            cols = self.columns(batch)
            weights = None if batch.weights is None else np.asarray(batch.weights, np.int64)
            view.apply(cols, before, part, weights)
            newest = int(cols.time.max())
            filling.watermarks[part] = newest if before is None else max(before, newest)
            view.expire(filling.watermarks[part], part)
            filling.events += len(batch)
            self.sources[batch.source].version += 1  # its partial answers changed
        filling.positions[part] = batch.position
        self.version += 1

    def backfill_join(self, name: str, part: str | None) -> bool:
        """The view has read ``part``'s history up to its live position (the caller checked, in
        the same step): live batches of it go to the view from now on. True when every
        partition the source has applied batches of has joined (``part`` None: only check):
        the view is live, and answers from it alone."""
        filling = self.backfills[name]
        if part is not None:
            filling.joined.add(part)
            self.version += 1
        if not set(self.sources[filling.view.spec.source].positions) <= filling.joined:
            return False
        del self.backfills[name]
        self.views[name] = filling.view  # a changed view: its old definition goes now
        self.by_source = self._by_source()
        self.sources[filling.view.spec.source].version += 1
        return True

    def _backfill(self, spec: ViewSpec, replaces: bool) -> View:
        view = View(spec, self.sources[spec.source].spec.time_field, self.keep)
        self.backfills[spec.name] = Backfill(view, replaces)
        return view

    # -- one partition at a time (Kafka hand-over) ----------------------------------------------

    def compact_part(self, source: str, part: str) -> None:
        """Renumber ``part``'s pairs densely in every view of ``source`` (and its backfills):
        what ``part_state`` does first. Done here, on the event loop, before a part file is
        encoded in a worker thread, the thread's own compaction finds nothing to move — it would
        otherwise renumber pair ids under a query answered on the loop meanwhile."""
        for view in self._all_views():
            if view.spec.source == source and part in view.parts:
                view.parts[part].compact(force=True)

    def compact(self, detached: frozenset[str] = frozenset()) -> None:
        """``compact_part`` for every part ``to_state(detached=detached)`` saves: the main
        snapshot's, before its state is built and encoded in a worker thread."""
        for view in self._all_views():
            if view.spec.source not in detached:
                for part in view.parts.values():
                    part.compact(force=True)

    def _all_views(self) -> list[View]:
        """The live views and the backfilling ones (a view may be both while it fills)."""
        return [*self.views.values(), *(b.view for b in self.backfills.values())]

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
            # Backfills reading this partition: their state and progress in it, saved with the
            # live views' so that its next owner (or a restart) goes on from there.
            "backfills": {
                name: {
                    "fingerprint": b.view.spec.fingerprint,
                    "position": b.positions.get(part),
                    "watermark": b.watermarks.get(part),
                    "began": b.began[part],
                    "joined": part in b.joined,
                    **b.view.part_state(part),
                }
                for name, b in self.backfills.items()
                if b.view.spec.source == source and part in b.began
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
        backfills = {
            name: (b, b.view.build_part(entry), entry)
            for name, entry in state.get("backfills", {}).items()
            if (b := self.backfills.get(name)) is not None
            and b.view.spec.fingerprint == entry["fingerprint"]
        }
        return BuiltPart(
            source, part, views, state.get("position"), state.get("watermark"), backfills
        )

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
        for name, filling in self.backfills.items():
            if filling.view.spec.source != built.source:
                continue
            filling.drop(part)  # read from the start, unless the part file says how far it got
            saved = built.backfills.get(name)
            if saved is not None and saved[0] is filling:
                _, loaded, entry = saved
                filling.view.parts[part] = loaded
                filling.began[part] = int(entry["began"])
                if entry["position"] is not None:
                    filling.positions[part] = int(entry["position"])
                if entry["watermark"] is not None:
                    filling.watermarks[part] = int(entry["watermark"])
                if entry["joined"]:
                    filling.joined.add(part)
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
        for filling in self.backfills.values():  # the part's next owner reads its history
            if filling.view.spec.source == source:
                filling.drop(part)
        self.sources[source].positions.pop(part, None)
        self.sources[source].watermarks.pop(part, None)

    # -- views changed on a running server (tallyd apply, SIGHUP) ---------------------------------

    def reconfigure(
        self, views: dict[str, ViewSpec], sources: dict[str, SourceSpec] | None = None
    ) -> None:
        """Take ``views`` as the new definitions, in one step: a view no longer defined goes
        with its state (and its backfill); a new one backfills when its source keeps history
        (``history``), else starts empty; one whose SQL is the same takes its new options
        (grace, retention, max_groups: read at each apply); one whose SQL changed backfills
        beside its old definition, which answers until the new one is done. The sources and
        their schemas must not change, nor the SQL of a view whose source keeps no history
        (``views.plan.live_refusals`` checks that first). ``sources``: the new source
        definitions, when they changed: a source added starts with no state, a removed one goes
        with its state, a changed one keeps it (only how it connects changed: its caller
        restarts it)."""
        if sources is not None:
            for name in list(self.sources):
                if name not in sources:
                    del self.sources[name], self.fields[name]
            for name, source in sources.items():
                if name in self.sources:
                    self.sources[name].spec = source
                else:
                    self.sources[name] = SourceState(source, self.keep)
                self.fields[name] = set(source.schema) | {source.time_field}
        for name in list(self.views):
            if name not in views:
                del self.views[name]
                self.backfills.pop(name, None)
        for name, spec in views.items():
            view = self.views.get(name)
            filling = self.backfills.get(name)
            if filling is not None and filling.view.spec.fingerprint == spec.fingerprint:
                filling.view.spec = spec  # options only: the backfill goes on
            elif view is None or (filling is not None and not filling.replaces):
                if spec.source in self.history:  # new, or a backfilling one changed again
                    self.views[name] = self._backfill(spec, replaces=False)
                else:
                    self.views[name] = View(
                        spec, self.sources[spec.source].spec.time_field, self.keep
                    )
            elif view.spec.fingerprint == spec.fingerprint:
                view.spec = spec
                self.backfills.pop(name, None)  # a change taken back before it was done
            else:
                assert spec.source in self.history, f"view {name} changed its SQL"
                self._backfill(spec, replaces=True)
        self.by_source = self._by_source()
        for state in self.sources.values():
            state.version += 1  # answers cached before are not reused
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
        filling = {id(b.view) for b in self.backfills.values()}
        return {
            **(extra or {}),
            "sources": {n: s.to_state(parts=n not in detached) for n, s in self.sources.items()},
            "views": {
                name: v.to_state(parts=v.spec.source not in detached)
                for name, v in self.views.items()
                if id(v) not in filling
            },
            "backfills": {
                name: b.to_state(parts=b.view.spec.source not in detached)
                for name, b in self.backfills.items()
            },
        }

    def load_state(self, state: dict[str, Any]) -> list[str]:
        """Load a snapshot state; returns notes on views that were added, changed or removed.

        A backfill the snapshot holds goes on from where it was. A view new since the snapshot,
        or whose SQL changed, backfills from its source's retained history (``history``); where
        there is none, a new view starts empty and a changed one raises ``StateMismatch``: its
        old state would be silently wrong under the new definition, and the events needed to
        rebuild it are gone from the trimmed WAL.
        """
        saved: dict[str, Any] = state.get("backfills", {})
        changed = [
            name
            for name, view in self.views.items()
            if name in state["views"]
            and state["views"][name]["fingerprint"] != view.spec.fingerprint
            and view.spec.source not in self.history
            and saved.get(name, {}).get("fingerprint") != view.spec.fingerprint
        ]
        if changed:
            raise StateMismatch(
                f"view(s) {', '.join(changed)} changed their SQL since the snapshot was taken; "
                "restore the old definition, or give the new one a new name (it starts empty)"
            )
        notes = []
        self.backfills.clear()
        for name, source in self.sources.items():
            source.version += 1
            if name in state["sources"]:
                source.load_state(state["sources"][name])
        for name, view in list(self.views.items()):
            spec = view.spec
            was = state["views"].get(name)
            if saved.get(name, {}).get("fingerprint") == spec.fingerprint:
                self.views[name] = self._backfill(spec, replaces=False)
                self.backfills[name].load_state(saved[name])
                notes.append(f"view {name} goes on filling from the retained history")
            elif was is not None and was["fingerprint"] == spec.fingerprint:
                view.load_state(was)
            elif spec.source in self.history:
                self.views[name] = self._backfill(spec, replaces=False)
                why = "is new" if was is None else "changed its SQL since the snapshot"
                notes.append(f"view {name} {why}: it fills from the retained history")
            else:
                notes.append(f"view {name} is new: it counts events from now on")
        self.by_source = self._by_source()
        notes += [
            f"view {n} is no longer defined: its state was dropped"
            for n in state["views"]
            if n not in self.views
        ]
        notes += [
            f"view {n} is no longer defined: its backfill was dropped"
            for n in saved
            if n not in self.views and n not in state["views"]
        ]
        return notes


def _finish(steps: Generator[None, None, T]) -> T:
    """Run an apply's steps to the end, with no pause between them."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            out: T = done.value
            return out


def _widens_exactly(spec: ViewSpec, widened: set[str], cols: Columns) -> bool:
    """Whether a view reads the fields ``widened`` to float64 in ``cols`` exactly as it reads
    each batch alone, where some of them were int64. Keys, sums, min/max, percentiles and
    distinct values take a whole float as the integer it equals (below 2**53 every one is
    exact); arithmetic and comparisons must stay below 2**53 too: no number in the SQL beyond
    it, and every + - * result under it (``Value.exact_as_floats``)."""
    if not widened & (spec.computed | set(spec.where_fields)):
        return True
    if spec.big_numbers:
        return False
    values = [agg.arg for agg in spec.aggs if agg.arg is not None]
    values += [] if spec.where is None else spec.where.values()
    return all(value.exact_as_floats(cols) for value in values)


def _effect(before: dict[str, int], after: dict[str, int]) -> Effect:
    return Effect(**{name: after[name] - before[name] for name in COUNTERS})
