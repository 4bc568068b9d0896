"""A running view: spec + state, partition by partition, folded a whole batch at a time.

State is kept per source partition (a Kafka topic-partition, one file of a file source, or ``""``
for HTTP): a ``Part`` holds its (bucket, slot) pairs (``views.state.Pairs``) and one aggregate
instance per aggregate of the view, each an array per pair (``views.aggregates``). Group keys are
interned to slots once per view (``views.state.Keys``), shared by its parts, so queries merge
parts by slot; a partition that moves to another process takes exactly its own state along,
consistent with its own position.

``apply`` folds a batch (``views.batch.Columns``) in with numpy: the WHERE mask, lateness, the
group keys' slots (``max_groups`` decided in event order), window starts (tumble and hop),
pair ids, then each aggregate's fold. ``apply_group`` folds several batches (a commit group of
small HTTP bodies) in one pass, to exactly the state ``apply`` of each in turn leaves, or
declines when it cannot be sure of that. Policies, all observable through counters kept with each
part (and so in snapshots):

* **late**: an event whose time is before ``watermark - grace`` (the partition's watermark as it
  was *before this batch*) is not applied; it is counted and the newest ``keep`` of them are kept
  for inspection. Judging against the watermark at batch start makes the outcome a pure function
  of the batches, which replays reproduce exactly.
* **max_groups**: at most ``max_groups`` distinct group keys are alive per part; events for
  further keys — the keys first seen last, in event order — are folded into one ``__other__``
  group (every key column reads ``"__other__"``) and counted as ``overflow``.
* **retention**: buckets that ended before ``watermark - retention`` are dropped.
* **retractions** (change streams): a row with weight -1 removes its contribution. A group whose
  last row is retracted disappears. A retraction for a group that does not exist, or of a value
  its exact multiset does not hold, is counted as ``unmatched`` and changes nothing.
* **out of range**: a batch of adds whose windows lie too far from the part's first one for its
  pair codes (``views.state.SpanError``: sub-second windows over centuries) is not applied to
  this view; its rows are counted as ``out_of_range`` and a warning names the view.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from views.aggregates import Aggregate, Batch, Sum
from views.aggregates.base import grow
from views.batch import Columns
from views.grouping import group, pack
from views.spec import ViewSpec
from views.state import Key, Keys, Pairs, SpanError, key_combos
from views.values import Values
from views.windows import hop_windows, tumble_starts

log = logging.getLogger("tallyd.views")

OTHER = "__other__"
COUNTERS = ("applied", "late", "overflow", "unmatched", "out_of_range")


def late_record(event: dict[str, Any], watermark: int, grace: int, part: str) -> dict[str, Any]:
    """What is kept of a late event for ``GET /v1/views/{view}/late``."""
    return {"event": event, "watermark": watermark, "grace": grace, "part": part}


class Part:
    """The state of one view for one source partition."""

    def __init__(self, view: View) -> None:
        self.pairs = Pairs(view.step)
        self.aggs: list[Aggregate] = [view.new_aggregate(i) for i in range(len(view.spec.aggs))]
        for index, owner in view.shared.items():  # avg(x) reads sum(x)'s state: one copy
            shared = self.aggs[index]
            assert isinstance(shared, Sum)
            shared.share(cast(Sum, self.aggs[owner]))
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.late_events: deque[dict[str, Any]] = deque(maxlen=view.keep)
        self.refs = np.zeros(0, np.int64)  # per slot: alive pairs of this part holding it

    def add_refs(self, slots: np.ndarray, delta: int) -> None:
        if len(slots):
            top = int(slots.max()) + 1
            self.refs = grow(self.refs, top)  # by half: a batch's new keys copy no others
            np.add.at(self.refs, slots, delta)

    def alive(self, slots: np.ndarray) -> np.ndarray:
        inside = slots < len(self.refs)
        out = np.zeros(len(slots), bool)
        out[inside] = self.refs[slots[inside]] > 0
        return out

    def drop(self, ids: np.ndarray) -> None:
        """Forget pairs (retention, a retracted group); compact when many are dead."""
        if not len(ids):
            return
        self.add_refs(self.pairs.slots(ids), -1)
        self.pairs.drop(ids)
        self.compact()

    def compact(self, force: bool = False) -> None:
        keep = self.pairs.compact(force)
        if keep is not None:
            for aggregate in self.aggs:
                aggregate.take(keep)


@dataclass
class Rows:
    """The rows of a batch a view applies, after WHERE and lateness, and their pairs."""

    index: np.ndarray  # per applied (row, window): the batch row
    pairs: np.ndarray  # distinct pair ids
    group: np.ndarray  # per applied (row, window): index into ``pairs``


class View:
    def __init__(self, spec: ViewSpec, time_field: str, keep: int = 1000) -> None:
        self.spec = spec
        self.time_field = time_field
        self.keep = keep
        self.keys = Keys()
        self.parts: dict[str, Part] = {}
        window = spec.window
        self.step = 1 if window is None else window.slide if window.kind == "hop" else window.size
        self.other_key: Key = tuple(OTHER for _ in spec.keys)
        # One dictionary per aggregate that keeps values, shared by every part.
        self.dictionaries = [Values() if a.cls.interned else None for a in spec.aggs]
        self.shared = _shared_sums(spec)
        self.merges_exactly = all(a.cls.merges_exactly for a in spec.aggs)

    def new_aggregate(self, index: int) -> Aggregate:
        agg = self.spec.aggs[index]
        return agg.cls(self.dictionaries[index], **agg.params)

    def part(self, name: str) -> Part:
        part = self.parts.get(name)
        if part is None:
            part = self.parts[name] = Part(self)
        return part

    # -- writes ---------------------------------------------------------------------------------

    def apply(
        self,
        cols: Columns,
        watermark: int | None,
        part_name: str = "",
        weights: np.ndarray | None = None,
    ) -> None:
        """Fold a batch in; ``watermark`` is the partition's watermark before this batch.
        ``weights`` (+1 / -1 per event) are given for change streams only."""
        part = self.part(part_name)
        rows = self._applicable(cols, watermark, part_name, part)
        part.counters["applied"] += len(rows)
        if weights is None or (weights[rows] > 0).all():
            overflow = part.counters["overflow"]
            try:
                self._fold(cols, rows, part, negate=False)
            except SpanError as err:  # raised before any pair or aggregate changed
                part.counters["overflow"] = overflow  # none of them folded into __other__
                part.counters["applied"] -= len(rows)
                part.counters["out_of_range"] += len(rows)
                log.warning(
                    "event=out_of_range view=%s part=%s events=%d: %s",
                    self.spec.name,
                    part_name,
                    len(rows),
                    err,
                )
        else:
            from views.retract import apply_changes  # change streams only: kept apart

            apply_changes(self, cols, rows, weights[rows], part)
        for aggregate in part.aggs:
            aggregate.settle()

    def apply_group(
        self, cols: Columns, marks: list[int | None], ends: np.ndarray, part_name: str = ""
    ) -> list[tuple[int, int]] | None:
        """Fold several batches in at once (``cols``: their rows one after another, batch ``i``
        ending before row ``ends[i]``), with exactly the state and counts that applying them in
        turn gives — or do nothing and return None where that is not sure. ``marks[i]`` is the
        partition's watermark before batch ``i``: its rows' lateness is judged by it, as in
        turn. In turn, retention would drop buckets between the batches; that changes nothing
        the group does not drop at its end either, except the room for new keys, so a group is
        taken only while ``max_groups`` cannot be reached by it (and no key is folded into
        ``__other__``). Adds only (no change streams). Returns (applied, late) per batch."""
        part = self.part(part_name)
        n = len(cols)
        if len(part.refs) + n > self.spec.max_groups:  # the slots any alive key can hold
            alive = int(np.count_nonzero(part.refs))
            if alive + n > self.spec.max_groups:
                return None
        spec = self.spec
        mask = np.ones(n, bool) if spec.where is None else spec.where.mask(cols)
        sizes = np.diff(ends, prepend=0)
        known = next((i for i, m in enumerate(marks) if m is not None), len(marks))
        since = int(ends[known - 1]) if known else 0  # rows judged against a watermark
        row_marks = np.repeat(np.array([m or 0 for m in marks], np.int64), sizes)
        late = np.zeros(n, bool)
        if spec.window is not None:
            late[since:] = mask[since:] & (cols.time[since:] < row_marks[since:] - spec.grace)
        rows = np.flatnonzero(mask & ~late)
        try:
            self._fold(cols, rows, part, negate=False, ends=ends)
        except SpanError:  # raised before any pair or aggregate changed: apply them in turn
            return None
        part.counters["applied"] += len(rows)
        late_rows = np.flatnonzero(late)
        if len(late_rows):
            part.counters["late"] += len(late_rows)
            newest = late_rows[-self.keep :]
            events = cols.rows(newest.tolist())
            for event, mark in zip(events, row_marks[newest].tolist(), strict=True):
                part.late_events.append(late_record(event, mark, spec.grace, part_name))
        for aggregate in part.aggs:
            aggregate.settle()
        which = len(ends)
        applied = np.bincount(np.searchsorted(ends, rows, "right"), minlength=which)
        lates = np.bincount(np.searchsorted(ends, late_rows, "right"), minlength=which)
        return list(zip(applied.tolist(), lates.tolist(), strict=True))

    def _applicable(
        self, cols: Columns, watermark: int | None, part_name: str, part: Part
    ) -> np.ndarray:
        """Rows passing the WHERE and not late (late ones counted and kept)."""
        spec = self.spec
        mask = np.ones(len(cols), bool) if spec.where is None else spec.where.mask(cols)
        if spec.window is not None and watermark is not None:
            late = mask & (cols.time < watermark - spec.grace)
            n_late = int(late.sum())
            if n_late:
                part.counters["late"] += n_late
                newest = np.flatnonzero(late)[-self.keep :]
                for event in cols.rows(newest.tolist()):
                    part.late_events.append(late_record(event, watermark, spec.grace, part_name))
                mask &= ~late
        return np.flatnonzero(mask)

    def _fold(
        self,
        cols: Columns,
        rows: np.ndarray,
        part: Part,
        negate: bool,
        ends: np.ndarray | None = None,
    ) -> Rows | None:
        """Apply ``rows`` (adds, or with ``negate`` matched retractions) to ``part``; ``ends``:
        where each of the batches ``cols`` holds ends (``apply_group``), for the aggregates
        whose state depends on how rows are batched."""
        if not len(rows):
            return None
        slots = self._slots(cols, rows, part, create=not negate)
        if not negate and self._fold_panes(cols, rows, slots, part):
            return None
        placed = self._place(cols, rows, slots, part)
        batch_of = None
        for index, aggregate in enumerate(part.aggs):
            arg = self.spec.aggs[index].arg
            values = None if arg is None else arg.on(cols).take(placed.index)
            if ends is None or aggregate.any_batching:
                aggregate.fold(Batch(placed.pairs, placed.group, values, negate))
                continue
            if batch_of is None:
                batch_of = np.searchsorted(ends, placed.index, "right")
            aggregate.fold_batches(Batch(placed.pairs, placed.group, values, negate), batch_of)
        return placed

    def _fold_panes(self, cols: Columns, rows: np.ndarray, slots: np.ndarray, part: Part) -> bool:
        """Hop windows, folded once: each row into its (group, pane) — the slide-sized bucket
        it falls in — then every pane into the ``size // slide`` windows that hold it, by
        ``absorb``. Taken when the aggregates merge exactly (the state is the same as folding
        every (row, window)) and rows share panes enough to pay for it; False otherwise."""
        window = self.spec.window
        if window is None or window.kind != "hop" or not self.merges_exactly:
            return False
        slide = window.slide
        pane = cols.time[rows] - cols.time[rows] % slide
        packed = pack([(pane - pane.min()) // slide, slots])
        if packed is None:
            return False
        _, first, inverse = group(packed, first=True)
        panes = len(first)
        if 2 * panes > len(rows):
            return False  # about a row per pane: folding every window directly costs no more
        partial = Part(self)
        each = np.arange(panes)
        for index, aggregate in enumerate(partial.aggs):
            aggregate.resize(panes)
            arg = self.spec.aggs[index].arg
            values = None if arg is None else arg.on(cols).take(rows)
            aggregate.fold(Batch(each, inverse, values, False))
        # Pane p is in the windows starting at p, p - slide, ...: (window start, slot) of every
        # (pane, window), newest window first as hop_windows lists them; a window several
        # panes fall in is absorbed from each.
        behind = np.arange(window.size // slide, dtype=np.int64) * slide
        starts = (pane[first][None, :] - behind[:, None]).reshape(-1)
        owners = np.tile(slots[first], len(behind))
        packed = pack([(starts - starts.min()) // slide, owners])
        if packed is None:  # a span too wide to pack: sort instead
            _, unique, which = np.unique(
                np.stack([starts, owners]), axis=1, return_index=True, return_inverse=True
            )
            which = which.reshape(-1)
        else:
            _, unique, which = group(packed, first=True)
        ids, new = part.pairs.find_or_add(starts[unique], owners[unique])
        self._placed(part, rows, ids, new, each)
        targets, sources = ids[which], np.tile(each, len(behind))
        for mine, theirs in zip(part.aggs, partial.aggs, strict=True):
            if not (isinstance(mine, Sum) and mine.owner is not None):  # avg: its sum's
                mine.absorb(theirs, sources, targets)
        return True

    def _place(self, cols: Columns, rows: np.ndarray, slots: np.ndarray, part: Part) -> Rows:
        """The pair of every applied (row, window), creating pairs as needed (``slots``: each
        row's, keys admitted and overflow counted by ``_slots``)."""
        which, starts = self._positions(cols, rows)
        index, pair_slots = (rows, slots) if which is None else (rows[which], slots[which])
        buckets = starts // self.step
        packed = pack([buckets - buckets.min(initial=0), pair_slots])
        if packed is None:  # a span of buckets too wide to pack: sort the pairs instead
            distinct, inverse = np.unique(
                np.stack([starts, pair_slots]), axis=1, return_inverse=True
            )
            ids, new = part.pairs.find_or_add(distinct[0], distinct[1])
            return self._placed(part, index, ids, new, inverse.reshape(-1))
        _, first, inverse = group(packed, first=True)
        ids, new = part.pairs.find_or_add(starts[first], pair_slots[first])
        return self._placed(part, index, ids, new, inverse)

    def _placed(
        self, part: Part, index: np.ndarray, ids: np.ndarray, new: int, inverse: np.ndarray
    ) -> Rows:
        if new:
            part.add_refs(part.pairs.slots(ids[ids >= len(part.pairs) - new]), 1)
            for aggregate in part.aggs:
                aggregate.resize(len(part.pairs))
        return Rows(index, ids, inverse)

    def _windows(self, cols: Columns, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(batch row, window start) of every window the rows fall in."""
        which, starts = self._positions(cols, rows)
        return (rows, starts) if which is None else (rows[which], starts)

    def _positions(self, cols: Columns, rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(position in ``rows``, window start) of every window the rows fall in; positions
        are None when each row is in one window (no hop)."""
        window = self.spec.window
        ts = cols.time[rows]
        if window is None:
            return None, np.zeros(len(rows), np.int64)
        if window.kind == "tumble":
            return None, tumble_starts(ts, window.size)
        return hop_windows(ts, window.size, window.slide)

    def _slots(self, cols: Columns, rows: np.ndarray, part: Part, create: bool) -> np.ndarray:
        """Each row's slot: its key's, or ``__other__``'s once ``max_groups`` keys are alive in
        the part (keys admitted in the order they first appear in the batch)."""
        columns = [cols.column(k).take(rows) for k in self.spec.keys]
        combos, first, inverse = key_combos(columns, len(rows))
        keys = self.keys
        slots = keys.lookup(combos)
        fresh = (slots < 0) | ~part.alive(np.maximum(slots, 0))
        if create and fresh.any():
            alive = int((part.refs > 0).sum())
            other = keys.slot_of.get(self.other_key)
            if other is not None and other < len(part.refs) and part.refs[other] > 0:
                alive -= 1
            room = max(0, self.spec.max_groups - alive)
            order = np.flatnonzero(fresh)[np.argsort(first[fresh], kind="stable")]
            admitted, folded = order[:room], order[room:]
            for i in admitted.tolist():
                slots[i] = keys.intern(combos[i])
            if len(folded):
                slots[folded] = keys.intern(self.other_key)
                over = np.isin(inverse, folded)
                part.counters["overflow"] += int(over.sum()) * self._per_event()
        out: np.ndarray = slots[inverse]
        return out

    def _per_event(self) -> int:
        window = self.spec.window
        return window.size // window.slide if window is not None and window.kind == "hop" else 1

    def expire(self, watermark: int | None, part_name: str = "") -> int:
        """Drop the part's buckets that ended before ``watermark - retention``."""
        spec = self.spec
        part = self.parts.get(part_name)
        if spec.window is None or spec.retention is None or watermark is None or part is None:
            return 0
        ids = part.pairs.before(watermark - spec.retention - spec.window.size + 1)
        part.drop(ids)
        return len(ids)

    # -- snapshot -------------------------------------------------------------------------------

    def part_state(self, name: str) -> dict[str, Any]:
        """One part's state: its pairs (bucket starts, and slots as indexes into the key tuples it
        uses, since slots are this process's), counters, late events, and each aggregate's
        arrays. Compacts the part first, so pair ids are exactly the entries' positions."""
        part = self.parts.get(name) or Part(self)
        part.compact(force=True)
        every = np.arange(len(part.pairs))
        slots = part.pairs.slots(every)
        present = np.zeros(int(slots.max(initial=-1)) + 1, bool)
        present[slots] = True  # the slots used, in order, in O(n): not a sort of every pair
        used = np.flatnonzero(present)
        local = np.cumsum(present)[slots] - 1
        return {
            "counters": dict(part.counters),
            "late_events": list(part.late_events),
            "keys": [list(self.keys.keys[s]) for s in used.tolist()],
            "start": part.pairs.starts(every),
            "slot": local.astype(np.int64),
            "aggs": [a.buffers() for a in part.aggs],
        }

    def load_part(self, name: str, state: dict[str, Any]) -> None:
        self.parts[name] = self.build_part(state)

    def build_part(self, state: dict[str, Any]) -> Part:
        """A part from its saved state, not installed (``Registry.build_part`` says when that
        may run in a worker thread)."""
        part = Part(self)
        part.counters.update({k: int(v) for k, v in state["counters"].items()})
        part.late_events.extend(state["late_events"])
        slots = np.array([self.keys.intern(tuple(k)) for k in state["keys"]] or [0], np.int64)[
            np.asarray(state["slot"], np.int64)
        ]
        starts = np.asarray(state["start"], np.int64)
        if len(starts):
            ids, _ = part.pairs.find_or_add(starts, slots)
            assert (ids == np.arange(len(ids))).all(), "a part's pairs are distinct"
            part.add_refs(slots, 1)
        for aggregate, buffers in zip(part.aggs, state["aggs"], strict=True):
            aggregate.load(buffers)
            aggregate.resize(len(part.pairs))
        return part

    def to_state(self, parts: bool = True) -> dict[str, Any]:
        state: dict[str, Any] = {"fingerprint": self.spec.fingerprint}
        if parts:
            state["parts"] = {name: self.part_state(name) for name in list(self.parts)}
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.parts.clear()
        for name, part in state.get("parts", {}).items():
            self.load_part(name, part)

    # -- reads ----------------------------------------------------------------------------------

    def counter(self, name: str) -> int:
        return sum(p.counters[name] for p in self.parts.values())

    def part_counters(self, part_name: str) -> dict[str, int]:
        """A copy of one part's counters (zeros for a part not seen yet)."""
        part = self.parts.get(part_name)
        return dict.fromkeys(COUNTERS, 0) if part is None else dict(part.counters)

    def late_events(self) -> list[dict[str, Any]]:
        return [e for p in self.parts.values() for e in p.late_events]

    def first_start(self) -> int | None:
        """The start (ms) of the oldest bucket any part holds: where this view's data begins
        (a series' default range starts there when that is within its 60 buckets)."""
        starts = [s for part in self.parts.values() if (s := part.pairs.first_start()) is not None]
        return min(starts, default=None)

    def stats(self) -> dict[str, int]:
        slots: set[int] = set()
        starts: set[int] = set()
        pairs = 0
        for part in self.parts.values():
            ids = part.pairs.alive_ids()
            slots.update(np.unique(part.pairs.slots(ids)).tolist())
            starts.update(np.unique(part.pairs.starts(ids)).tolist())
            pairs += len(ids)
        return {
            "groups": len(slots),
            "buckets": len(starts),
            "parts": len(self.parts),
            "pairs": pairs,
            **{name: self.counter(name) for name in COUNTERS},
        }

    def nbytes(self) -> int:
        """Bytes of array state (pairs and aggregates) over every part."""
        total = 0
        for part in self.parts.values():
            pairs = part.pairs
            total += pairs.nbytes()
            total += sum(a.nbytes() for a in part.aggs)
        return total


def _shared_sums(spec: ViewSpec) -> dict[int, int]:
    """aggregate index -> the index whose state it reads: every sum/avg over the same argument
    after the first reads the first's (they fold the same values)."""
    first: dict[str, int] = {}
    out: dict[int, int] = {}
    for index, agg in enumerate(spec.aggs):
        if agg.kind in ("sum", "avg"):
            argument = agg.sql[agg.sql.index("(") :]  # "(amount)" of "AVG(amount)"
            if argument in first:
                out[index] = first[argument]
            else:
                first[argument] = index
    return out
