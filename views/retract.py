"""Change streams: batches that add and retract rows (Debezium's before and after images).

The meaning is the sequential one (``tests/oracle/view.py``): rows apply in order; a retraction
matches the group its row is in *at that moment* (or ``__other__`` if its key was folded), and is
``unmatched`` — changing nothing — when there is no such group or an exact multiset of the group
does not hold its value; a group whose last row is retracted disappears.

Most batches of a consistent change stream are *clean*: every retraction finds its row (added
before, in an earlier batch or earlier in this one) and no key is folded into ``__other__``. For
those, adding every row first and then taking every retracted row off reaches the sequential
state (the aggregates of change streams are exact, so a row taken off leaves exactly what was
there without it): that is the vectorised path. Any other batch is applied one row at a time, in
order (correct, slower, rare).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from views.aggregates import Batch, Count, CountDistinct, SortedMin
from views.batch import Columns
from views.grouping import combos
from views.state import key_combos

if TYPE_CHECKING:
    from views.view import Part, View


def apply_changes(
    view: View, cols: Columns, rows: np.ndarray, weights: np.ndarray, part: Part
) -> None:
    """Apply ``rows`` (WHERE-passing, not late) with their weights (+1 / -1), in order."""
    if _clean(view, cols, rows, weights, part):
        view._fold(cols, rows[weights > 0], part, negate=False)
        placed = view._fold(cols, rows[weights < 0], part, negate=True)
        if placed is not None:
            _release(part, placed.pairs)
        return
    for row, weight in zip(rows.tolist(), weights.tolist(), strict=True):
        one = np.array([row], np.int64)
        if weight > 0:
            view._fold(cols, one, part, negate=False)
        else:
            _retract_one(view, cols, one, part)


def _hidden(part: Part) -> Count:
    rows = part.aggs[-1]  # retracting views end with a hidden count(*) of rows
    assert isinstance(rows, Count)
    return rows


def _release(part: Part, ids: np.ndarray) -> None:
    part.drop(ids[_hidden(part).counts(ids) == 0])


def _batches(view: View, cols: Columns, index: np.ndarray, ids: np.ndarray) -> list[Batch]:
    """Each aggregate's share of rows ``index``, row ``j`` into pair ``ids[j]``, as retractions."""
    out = []
    for spec in view.spec.aggs:
        values = None if spec.arg is None else spec.arg.on(cols).take(index)
        out.append(Batch(ids, np.arange(len(index)), values, negate=True))
    return out


def _retract_one(view: View, cols: Columns, row: np.ndarray, part: Part) -> None:
    """One retraction, sequentially: per window, the group's row is taken off, whole, or the
    retraction is unmatched."""
    slot = int(view.keys.lookup(_tuples(view, cols, row))[0])
    if slot < 0 or not part.alive(np.array([slot]))[0]:
        other = view.keys.slot_of.get(view.other_key, -1)
        slot = other if other >= 0 and part.alive(np.array([other]))[0] else -1
    index, starts = view._windows(cols, row)
    ids = part.pairs.find(starts, np.full(len(starts), slot, np.int64))
    taken = []
    for i, pair in enumerate(ids.tolist()):
        if pair < 0:
            part.counters["unmatched"] += 1
            continue
        batches = _batches(view, cols, index[i : i + 1], np.array([pair], np.int64))
        if any(a.missing(b).any() for a, b in zip(part.aggs, batches, strict=True)):
            part.counters["unmatched"] += 1
            continue
        for aggregate, batch in zip(part.aggs, batches, strict=True):
            aggregate.fold(batch)
        taken.append(pair)
    # Released together, after every window: a release may compact the pairs, which renumbers
    # them, and ``ids`` of the windows still to come would then name other pairs (hop windows).
    _release(part, np.array(taken, np.int64))


def _tuples(view: View, cols: Columns, rows: np.ndarray) -> list[tuple[Any, ...]]:
    columns = [cols.column(k).take(rows).values() for k in view.spec.keys]
    return list(zip(*columns, strict=True)) if columns else [() for _ in range(len(rows))]


def _clean(view: View, cols: Columns, rows: np.ndarray, weights: np.ndarray, part: Part) -> bool:
    """Whether adding everything, then retracting everything, equals applying in order: per
    (window, group) — a pair held now or one this batch creates — the running count of rows, and
    of each exact multiset's values, never goes below zero, and no key needs ``__other__``."""
    columns = [cols.column(k).take(rows) for k in view.spec.keys]
    keys, _, inverse = key_combos(columns, len(rows))
    slots = view.keys.lookup(keys)
    known = (slots >= 0) & part.alive(np.maximum(slots, 0))
    alive = int((part.refs > 0).sum())
    if alive + int((~known).sum()) > view.spec.max_groups:
        return False  # admission into __other__ depends on the order
    # A key new to the part gets a stand-in slot (below zero) until the batch admits it.
    group_slot = np.where(known, slots, -1 - np.arange(len(keys)))[inverse]
    which, starts = view._positions(cols, rows)
    position = np.arange(len(rows)) if which is None else which
    index = rows[position]
    sign, row_slot = weights[position], group_slot[position]
    pair_of = combos(starts, row_slot)
    first = np.zeros(int(pair_of.max(initial=-1)) + 1, np.int64)
    first[pair_of] = np.arange(len(pair_of))  # a row of each pair (any: they agree)
    pair_starts, pair_slots = starts[first], row_slot[first]
    ids = np.full(len(first), -1, np.int64)
    held_now = pair_slots >= 0
    ids[held_now] = part.pairs.find(pair_starts[held_now], pair_slots[held_now])
    held = np.zeros(len(ids), np.int64)
    held[ids >= 0] = _hidden(part).counts(ids[ids >= 0])
    if not _orderly(pair_of, sign, held[pair_of]):
        return False
    return _values_held(view, cols, index, ids[pair_of], pair_of, sign, part)


def _orderly(group: np.ndarray, sign: np.ndarray, held: np.ndarray) -> bool:
    """Per group, in order, the running count (from ``held``) never goes below 0: every
    retraction finds a row (a value) that is there. A group that empties and fills again within
    the batch needs no care: the aggregates of change streams are exact, so taking a row's
    contribution off leaves exactly what releasing the group would."""
    mine = _taken_from(group, sign)
    if not mine.any():
        return True  # nothing taken off (or nothing at all)
    group, sign, held = group[mine], sign[mine], held[mine]
    order = np.lexsort((np.arange(len(group)), group))
    g, w, h = group[order], sign[order], held[order]
    first = np.r_[True, g[1:] != g[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(g)), 0))
    total = np.cumsum(w)
    running = h + total - (total[start] - w[start])
    return not (running < 0).any()


def _taken_from(group: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """The rows of groups that a row takes something off: only those can go below 0 (a change
    stream's inserts are most of it, and most of their groups take nothing off in a batch)."""
    hit = np.zeros(int(group.max(initial=-1)) + 1, bool)
    hit[group[sign < 0]] = True
    out: np.ndarray = hit[group]
    return out


def _values_held(
    view: View,
    cols: Columns,
    index: np.ndarray,
    ids: np.ndarray,
    pair_of: np.ndarray,
    sign: np.ndarray,
    part: Part,
) -> bool:
    """Every retraction from an exact multiset finds its value, counted in order per (pair,
    value) from what the pair holds now (``ids``: the pair held now, -1 for one this batch
    creates; ``pair_of``: the pair, held or not, as a number of the batch's own). Only the
    (pair, value)s the batch takes something off are looked up in the multiset."""
    for spec, aggregate in zip(view.spec.aggs, part.aggs, strict=True):
        if spec.arg is None or not isinstance(aggregate, SortedMin | CountDistinct):
            continue
        values = spec.arg.on(cols).take(index)
        rows, pairs, keys = aggregate.entries(
            Batch(np.maximum(ids, 0), np.arange(len(ids)), values)
        )
        if not len(rows):
            continue  # every value NULL: nothing is taken off this multiset
        group = combos(pair_of[rows], keys)
        mine = _taken_from(group, sign[rows])
        rows, pairs, keys, group = rows[mine], pairs[mine], keys[mine], group[mine]
        held = np.zeros(len(rows), np.int64)
        inside = ids[rows] >= 0  # a pair the batch creates holds nothing yet
        held[inside] = aggregate.set.have(pairs[inside], keys[inside])
        if not _orderly(group, sign[rows], held):
            return False
    return True
