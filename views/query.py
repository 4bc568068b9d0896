"""Reads: filter, time range, query-time rollup (merge aggregates), order, page.

Every answer is bounded: at most ``limit`` rows (fetching ``limit + 1`` to know whether the answer
was ``truncated``), and the scan is bounded by the view's retention and group cap.
Stored aggregates are never mutated here: rollups merge into fresh instances.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from views.aggregates import Aggregate
from views.grouping import group as group_codes
from views.sketches import sort_key
from views.spec import Column
from views.state import Key
from views.view import Part, View

ALL = -1  # bucket value meaning "collapse time into one row"


class QueryError(ValueError):
    """A query that cannot be answered as asked; ``param`` names the offending parameter."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Query:
    filters: dict[str, frozenset[str]] = field(default_factory=dict)  # key column -> texts
    time_from: int | None = None
    time_to: int | None = None
    group_by: tuple[str, ...] | None = None  # None: every key
    bucket: int | None = None  # ms, ALL, or None for the stored windows
    order_by: str | None = None
    descending: bool = False
    limit: int = 100
    offset: int = 0
    columns: tuple[str, ...] | None = None
    max_scan: int | None = None  # most (bucket, key) groups a query may read (a cost cap)


@dataclass
class Result:
    columns: list[Column]
    rows: list[tuple[Any, ...]]
    truncated: bool
    next_offset: int | None
    scanned: int


def key_text(value: Any) -> str:
    """How a group-key value is written in a query string filter (``country=FR``, ``n=3``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def validate(view: View, query: Query) -> None:
    spec = view.spec
    key_columns = [c.name for c in spec.columns if c.role == "key"]
    for name in query.filters:
        if name not in key_columns:
            raise QueryError(
                name,
                f"'{name}' is not a group key of {spec.name}; "
                f"filterable keys: {', '.join(key_columns) or 'none'}",
            )
    for name in query.group_by or ():
        if name not in key_columns:
            raise QueryError("group_by", f"'{name}' is not a group key of {spec.name}")
    window = spec.window
    if window is None and (
        query.bucket not in (None, ALL) or query.time_from is not None or query.time_to is not None
    ):
        raise QueryError("bucket" if query.bucket else "from", f"{spec.name} has no time window")
    if window is not None and window.kind == "hop" and query.bucket is not None:
        # Merging overlapping windows would count each event size/slide times.
        raise QueryError("bucket", "hopping windows overlap; they cannot be re-bucketed")
    if window is not None and query.bucket not in (None, ALL) and query.bucket % window.size:
        raise QueryError("bucket", f"bucket must be a multiple of the window ({window.size} ms)")
    available = output_columns(view, query, projected=False)
    names = [c.name for c in available]
    for name in query.columns or ():
        if name not in names:
            raise QueryError(
                "columns", f"no column '{name}' in this answer; columns: {', '.join(names)}"
            )
    if query.order_by is not None:
        column = next((c for c in available if c.name == query.order_by), None)
        if column is None:
            raise QueryError(
                "order_by", f"cannot order by '{query.order_by}'; columns: {', '.join(names)}"
            )
        if column.type == "array":
            raise QueryError("order_by", f"'{query.order_by}' is a list and has no order")


def output_columns(view: View, query: Query, projected: bool = True) -> list[Column]:
    out = []
    for column in view.spec.columns:
        if (
            column.role == "key"
            and query.group_by is not None
            and column.name not in query.group_by
        ):
            continue
        if column.role == "window" and query.bucket == ALL:
            continue
        out.append(column)
    if projected and query.columns:
        out = [c for c in out if c.name in query.columns]
    return out


@dataclass
class Selection:
    """The stored pairs a query reads, part by part: their ids, bucket starts and slots."""

    parts: list[tuple[Part, np.ndarray]]  # (part, pair ids)
    starts: np.ndarray  # all parts' pairs, concatenated in that order
    slots: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)


def select(view: View, query: Query, key_names: list[str]) -> Selection:
    """The stored pairs ``query``'s time range and key filters select, part by part in name order
    (a key held by several parts comes once per part), in time then slot order within a part."""
    windowed = view.spec.window is not None
    allowed = _allowed_slots(view, query, key_names)
    chosen: list[tuple[Part, np.ndarray]] = []
    # Parts in name order, never in the order they arrived: an approximate merge (top-k's
    # Space-Saving) depends on its order, and any node of a cluster must answer alike.
    for _, part in sorted(view.parts.items()):
        pairs = part.pairs
        ids = pairs.between(query.time_from, query.time_to) if windowed else pairs.alive_ids()
        if allowed is not None and len(ids):
            ids = ids[allowed(pairs.slots(ids))]
        if len(ids):
            chosen.append((part, ids))
    nothing = [np.zeros(0, np.int64)]
    starts = np.concatenate([p.pairs.starts(ids) for p, ids in chosen] or nothing)
    slots = np.concatenate([p.pairs.slots(ids) for p, ids in chosen] or nothing)
    return Selection(chosen, starts, slots)


def _allowed_slots(
    view: View, query: Query, key_names: list[str]
) -> Callable[[np.ndarray], np.ndarray] | None:
    """A mask function over slots for the key filters (None: no filter). Values are matched as
    text (``key_text``), as the query string wrote them: each text's candidate values (the
    string, the number it spells, true/false, null) are looked up in the view's per-column
    index of slots, so a filter costs what it selects, not a read of every key."""
    if not query.filters:
        return None
    allowed: np.ndarray | None = None
    for name, texts in query.filters.items():
        column = key_names.index(name)
        slots = {
            slot
            for text in texts
            for value in candidates(text)
            for slot in view.keys.with_value(column, value)
        }
        found = np.fromiter(slots, np.int64, len(slots))
        allowed = found if allowed is None else np.intersect1d(allowed, found)
    assert allowed is not None
    chosen = np.sort(allowed)
    return lambda slots: np.isin(slots, chosen, assume_unique=False)


def candidates(text: str) -> list[Any]:
    """Every value whose ``key_text`` is ``text``."""
    out: list[Any] = [text]
    if text == "null":
        out.append(None)
    if text in ("true", "false"):
        out.append(text == "true")
    with contextlib.suppress(ValueError):
        out.append(int(text))
    with contextlib.suppress(ValueError):
        out.append(float(text))
    return [v for v in out if key_text(v) == text]


def run(view: View, query: Query) -> Result:
    validate(view, query)
    spec = view.spec
    key_names = [c.name for c in spec.columns if c.role == "key"]
    keep = [i for i, n in enumerate(key_names) if query.group_by is None or n in query.group_by]
    chosen = select(view, query, key_names)
    if query.max_scan is not None and len(chosen) > query.max_scan:
        raise QueryError(
            "from",
            f"this query reads more than {query.max_scan} groups (max_groups_scanned); "
            "narrow it with from/to or key filters",
        )
    grouped = group(view, chosen, keep, query.bucket)
    columns = output_columns(view, query, projected=False)
    page, truncated = _order_and_page(grouped, columns, query)
    names = [c.name for c in columns]
    rows = grouped.rows(page, names)
    if query.columns:
        picks = [i for i, c in enumerate(columns) if c.name in query.columns]
        rows = [tuple(row[i] for i in picks) for row in rows]
        columns = [columns[i] for i in picks]
    next_offset = query.offset + query.limit if truncated else None
    return Result(columns, rows, truncated, next_offset, len(chosen))


@dataclass(frozen=True)
class Stored:
    """An aggregate's stored pairs read in place, output row ``j`` being pair ``ids[j]``: what a
    query reads when its groups are the stored pairs themselves (one part, no rollup), so that
    nothing is copied or merged — a point lookup reads one pair, not a merge of it."""

    aggregate: Aggregate
    ids: np.ndarray

    def results(self, rows: np.ndarray) -> list[Any]:
        return self.aggregate.results(self.ids[rows])

    def sort_values(self, rows: np.ndarray) -> np.ndarray | None:
        return self.aggregate.sort_values(self.ids[rows])


@dataclass
class Grouped:
    """The output groups of a query: each one's time and key, and its merged aggregates. Times
    and keys are arrays (a key as an id into the distinct key tuples), read as Python values
    only for the rows an answer shows."""

    view: View
    times: np.ndarray | None  # each group's bucket start; None: all one bucket (bucket=all)
    key_ids: np.ndarray  # each group's key, an index into ``keys``
    keys: list[Key]  # the distinct key tuples (of the kept key columns), by id
    aggs: list[Aggregate | Stored]  # one per aggregate, a row per group
    key_names: list[str]  # the kept key columns

    def __len__(self) -> int:
        return len(self.key_ids)

    def time_of(self, rows: np.ndarray) -> list[int | None]:
        if self.times is None:
            return [None] * len(rows)
        out: list[int | None] = self.times[rows].tolist()
        return out

    def key_of(self, rows: np.ndarray) -> list[Key]:
        return [self.keys[k] for k in self.key_ids[rows].tolist()]

    def column(self, name: str, rows: np.ndarray) -> list[Any]:
        """One output column's values for ``rows``."""
        spec = self.view.spec
        if spec.window is not None and name == spec.window.name:
            return self.time_of(rows)
        if name in self.key_names:
            at = self.key_names.index(name)
            return [key[at] for key in self.key_of(rows)]
        index = [c.name for c in spec.columns if c.role == "aggregate"].index(name)
        return self.aggs[index].results(rows)

    def sortable(self, name: str, rows: np.ndarray) -> np.ndarray | None:
        """An aggregate column's values for ``rows`` as float64 (NaN: null) when they order
        exactly as its answers do (``Aggregate.sort_values``); None when they would not."""
        names = [c.name for c in self.view.spec.columns if c.role == "aggregate"]
        if name not in names:
            return None
        return self.aggs[names.index(name)].sort_values(rows)

    def rows(self, chosen: np.ndarray, names: list[str]) -> list[tuple[Any, ...]]:
        columns = [self.column(n, chosen) for n in names]
        return list(zip(*columns, strict=True)) if columns else []

    def default_order(self) -> np.ndarray:
        """The groups by time, then keys (``sort_key`` per column: nulls last): the key tuples
        are ranked once, in Python, and the groups sorted by (time, rank) in numpy."""
        ranked = sorted(range(len(self.keys)), key=lambda k: tuple(map(sort_key, self.keys[k])))
        rank = np.empty(len(self.keys), np.int64)
        rank[ranked] = np.arange(len(ranked))
        of_group = rank[self.key_ids] if len(self.keys) else np.zeros(0, np.int64)
        if self.times is None:
            return np.argsort(of_group, kind="stable")
        return np.lexsort((of_group, self.times))


def group(
    view: View, chosen: Selection, keep: list[int], bucket: int | None, in_place: bool = True
) -> Grouped:
    """Merge the selected pairs into output groups: (time re-bucketed, kept keys). When each
    group is one stored pair of one part, its aggregates are read in place (``Stored``; tests
    turn that off with ``in_place=False`` to compare it with the merge)."""
    keys = view.keys.keys
    key_names = [c.name for c in view.spec.columns if c.role == "key"]
    if bucket == ALL:
        times = np.zeros(len(chosen), np.int64)
    elif bucket is not None:
        times = chosen.starts - chosen.starts % bucket
    else:
        times = chosen.starts
    distinct_slots, slot_index = np.unique(chosen.slots, return_inverse=True)
    reduced: dict[Key, int] = {}
    reduced_of_slot = np.array(
        [
            reduced.setdefault(tuple(keys[s][i] for i in keep), len(reduced))
            for s in distinct_slots.tolist()
        ]
        or [0],
        np.int64,
    )
    key_ids = reduced_of_slot[slot_index.reshape(-1)] if len(chosen) else np.zeros(0, np.int64)
    if len(chosen):
        distinct, inverse = _distinct_pairs(times, key_ids, len(reduced))
    else:
        distinct, inverse = np.zeros((2, 0), np.int64), np.zeros(0, np.int64)
    out_times = None if bucket == ALL else distinct[0]
    kept = [key_names[i] for i in keep]
    aggs: list[Aggregate | Stored] = []
    if in_place and len(chosen.parts) == 1 and distinct.shape[1] == len(chosen):
        # Each output group is one stored pair of one part: read the pairs where they are.
        part, ids = chosen.parts[0]
        row_ids = np.empty(len(ids), np.int64)
        row_ids[inverse] = ids
        aggs = [Stored(aggregate, row_ids) for aggregate in part.aggs]
        return Grouped(view, out_times, distinct[1], list(reduced), aggs, kept)
    for index in range(len(view.spec.aggs)):
        merged = view.new_aggregate(index).empty(distinct.shape[1])
        at = 0
        for part, ids in chosen.parts:
            merged.absorb(part.aggs[index], ids, inverse[at : at + len(ids)])
            at += len(ids)
        aggs.append(merged)
    return Grouped(view, out_times, distinct[1], list(reduced), aggs, kept)


def _distinct_pairs(
    times: np.ndarray, key_ids: np.ndarray, keys: int
) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique`` of the (time, key id) columns (sorted by time, then key id) and each row's
    index into them: as one int64 code per row when the codes fit (a 1-D sort, not a sort of
    row pairs), else as pairs."""
    low, high = int(times.min()), int(times.max())
    width = max(keys, 1)
    if (high - low + 1) * width < 1 << 62:  # Python ints: no overflow in the check itself
        codes, _, inverse = group_codes((times - low) * width + key_ids)
        return np.stack([codes // width + low, codes % width]), inverse
    distinct, inverse = np.unique(np.stack([times, key_ids]), axis=1, return_inverse=True)
    return distinct, inverse.reshape(-1)


def _order_and_page(
    grouped: Grouped, columns: list[Column], query: Query
) -> tuple[np.ndarray, bool]:
    """Sort (default: window then keys; ``order_by`` nulls last, ties in default order), page."""
    order = grouped.default_order()
    wanted = query.offset + query.limit + 1
    sortable = None if query.order_by is None else grouped.sortable(query.order_by, order)
    if sortable is not None:
        order = _ranked(order, sortable, query.descending, wanted)
    elif query.order_by is not None:
        values = grouped.column(query.order_by, order)
        present = [(v, i) for v, i in zip(values, order.tolist(), strict=True) if v is not None]
        nulls = [i for v, i in zip(values, order.tolist(), strict=True) if v is None]
        choose = heapq.nlargest if query.descending else heapq.nsmallest
        ranked = [i for _, i in choose(wanted, present, key=lambda vi: sort_key(vi[0]))]
        order = np.array((ranked + nulls)[:wanted], np.int64)
    page = order[query.offset : query.offset + query.limit]
    return page, len(order) > query.offset + query.limit


def _ranked(order: np.ndarray, values: np.ndarray, descending: bool, wanted: int) -> np.ndarray:
    """The first ``wanted`` of ``order`` by ``values`` (NaN: null, last), in numpy: a stable
    sort keeps ties in the default order, as the Python sort does."""
    null = np.isnan(values)
    present = np.flatnonzero(~null)
    by = values[present]
    ranked = present[np.argsort(-by if descending else by, kind="stable")]
    out: np.ndarray = np.concatenate([order[ranked[:wanted]], order[np.flatnonzero(null)]])
    return out[:wanted]


def all_rows(view: View, in_place: bool = True) -> dict[tuple[int, Key], list[Any]]:
    """Every stored (bucket start, key) with its aggregates' results, parts merged: the whole
    state as plain values (tests compare it with the oracle's)."""
    key_names = [c.name for c in view.spec.columns if c.role == "key"]
    chosen = select(view, Query(), key_names)
    grouped = group(view, chosen, list(range(len(key_names))), None, in_place)
    rows = np.arange(len(grouped))
    results = [a.results(rows) for a in grouped.aggs]
    out = {}
    for i, (time, key) in enumerate(zip(grouped.time_of(rows), grouped.key_of(rows), strict=True)):
        out[(0 if time is None else time, key)] = [r[i] for r in results]
    return out
