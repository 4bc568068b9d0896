"""The columnar path: a whole batch folded into a view at once, with the row path's semantics.

A large batch arrives as an Arrow table (parsed and type-checked by the ingest layer). For each
view this module groups the batch by (window start, group key) with Arrow's C++ hash aggregation,
turns each group's figures into the same mergeable aggregate states the row path builds one event
at a time, and merges them into the view's part. So there is one engine — one state, one snapshot
format, one query path — and two ways of feeding it.

This module is the generic half: filtering, lateness, windows, grouping. How one group's share of
the batch folds into an aggregate is the aggregate class's own ``fold_columns`` (views/aggregates/).
What makes the two ways agree (tests/views/test_columns.py checks it on seeded random batches):

* count, min, max, count_distinct and integer sums are computed exactly as the row path does;
* float sums are exact too (integer mantissa sums per exponent, handed to ``Sum`` as Shewchuk
  partials), so the answer is the correctly rounded sum, as on the row path;
* HyperLogLog and DDSketch receive the same hashes and the same bin keys (computed by the same
  Python functions, once per distinct value), so their states are identical;
* top_k receives the batch's exact counts as a summary and merges it (Cafaro et al.): within the
  same error bound as the row path, but not always the same state once values get evicted;
* late events, watermarks and counters follow the same rules; a view whose batch would push it past
  ``max_groups`` (where which keys fold into ``__other__`` depends on event order), a hop window, a
  change stream, an aggregate over an expression, or one whose class has no columnar fold is left
  to the row path (``prepare`` returns None before touching anything).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from views.aggregates import Fold, GroupKey
from views.spec import ViewSpec
from views.view import View, late_record
from views.windows import tumble_starts


def columnar(spec: ViewSpec) -> bool:
    """Whether this view can take batches column-wise (else the row path serves it)."""
    if spec.retracting or (spec.window is not None and spec.window.kind != "tumble"):
        return False
    return all(a.cls.columnar and (a.arg is None or a.arg_field is not None) for a in spec.aggs)


@dataclass
class Table:
    """A validated batch of one source: the time field is int64 epoch ms without nulls; every
    field the views use has the type its views require (or is absent / null)."""

    data: pa.Table
    time_field: str

    def __len__(self) -> int:
        return int(self.data.num_rows)

    def newest(self) -> int:
        return int(pc.max(self.data.column(self.time_field)).as_py())

    def rows(self, data: pa.Table | None = None) -> list[dict[str, Any]]:
        """The events as dicts (nulls left out, as absent and null mean the same)."""
        table = self.data if data is None else data
        return [{k: v for k, v in row.items() if v is not None} for row in table.to_pylist()]


def _column(data: pa.Table, name: str) -> pa.ChunkedArray:
    if name in data.column_names:
        return data.column(name)
    return pa.chunked_array([pa.nulls(data.num_rows)])


def _where_mask(spec: ViewSpec, data: pa.Table) -> pa.Array:
    """The WHERE predicate, evaluated by the view's own closure once per distinct combination of
    the fields it reads, then spread back over the rows."""
    assert spec.where is not None
    where = spec.where
    if not spec.where_fields:
        keep = where({}) is True
        return pa.array(np.full(data.num_rows, keep))
    fields = list(spec.where_fields)
    sub = pa.table({f: _column(data, f) for f in fields})
    combos = sub.group_by(fields, use_threads=False).aggregate([]).to_pylist()
    verdict = {tuple(c[f] for f in fields): where(c) is True for c in combos}
    if len(fields) == 1:
        passing = [c for c, keep in verdict.items() if keep]
        kept = pa.array([c[0] for c in passing], type=sub.column(0).type)
        return pc.is_in(sub.column(0), value_set=kept, skip_nulls=False)
    columns = [sub.column(f).to_pylist() for f in fields]
    return pa.array([verdict[t] for t in zip(*columns, strict=True)], pa.bool_())


@dataclass
class Prepared:
    """A batch's effect on one view, computed but not yet applied."""

    view: View
    part_name: str
    applied: int
    late: int
    late_rows: list[dict[str, Any]]
    watermark: int | None
    # per (window start, key): (aggregate index, fold) for each aggregate the batch changes
    updates: dict[GroupKey, list[tuple[int, Fold]]]

    def commit(self) -> None:
        """Apply it: only dict and small-number work, so it is quick on the event loop."""
        view = self.view
        part = view.part(self.part_name)
        if self.late:
            part.counters["late"] += self.late
            grace = view.spec.grace
            part.late_events.extend(
                late_record(e, self.watermark, grace, self.part_name) for e in self.late_rows
            )
        part.counters["applied"] += self.applied
        for (start, key), folds in self.updates.items():
            aggs = view.group(part, start, key)
            for index, fold in folds:
                fold(aggs[index])


def prepare(
    view: View, table: Table, watermark: int | None, part_name: str = ""
) -> Prepared | None:
    """A batch's effect on ``view``, column-wise: reads the view, changes nothing, so it may run in
    a worker thread while the event loop answers queries (as long as nothing else writes the view
    meanwhile); ``Prepared.commit`` applies it. None: this batch must take the row path for this
    view."""
    spec = view.spec
    if not columnar(spec):
        return None
    data = table.data
    if spec.where is not None:
        data = data.filter(_where_mask(spec, data))
    ts = data.column(table.time_field).to_numpy()
    n_late = 0
    late_rows: list[dict[str, Any]] = []
    if spec.window is not None and watermark is not None:
        late = ts < watermark - spec.grace
        n_late = int(late.sum())
        if n_late:
            late_rows = table.rows(data.take(pa.array(np.flatnonzero(late)[-view.keep :])))
            data, ts = data.filter(pa.array(~late)), ts[~late]
    if data.num_rows == 0:
        return Prepared(view, part_name, 0, n_late, late_rows, watermark, {})
    starts = (
        np.zeros(len(ts), np.int64) if spec.window is None else tumble_starts(ts, spec.window.size)
    )
    grouping = _Grouping(data, spec.keys, starts)
    if _may_overflow(view, grouping, part_name):
        return None
    updates = _updates(spec, data, grouping)
    if updates is None:
        return None
    return Prepared(view, part_name, data.num_rows, n_late, late_rows, watermark, updates)


def _may_overflow(view: View, grouping: _Grouping, part_name: str) -> bool:
    """Whether the batch's new keys could push the part past ``max_groups``: then which keys fold
    into ``__other__`` depends on the order of events, and the row path must decide."""
    part = view.parts.get(part_name)
    refs = part.group_refs if part is not None else {}
    keys = grouping.keys
    if keys:
        key_table = pa.table({k: grouping.columns[k] for k in keys})
        distinct = key_table.group_by(keys, use_threads=False).aggregate([]).to_pylist()
        new = sum(1 for row in distinct if tuple(row[k] for k in keys) not in refs)
    else:
        new = 0 if () in refs else 1
    return bool(new) and len(refs) - (view.other_key in refs) + new > view.spec.max_groups


class _Grouping:
    """The batch grouped by (window start, group key) with Arrow's C++ hash aggregation: the
    ``Grouped`` that aggregates' columnar folds read."""

    def __init__(self, data: pa.Table, keys: tuple[str, ...], starts: np.ndarray) -> None:
        self.keys = list(keys)
        self.columns: dict[str, Any] = {"__start": pa.array(starts)}
        for k in keys:
            self.columns[k] = _column(data, k)
        self.by = ["__start", *keys]

    def aggregate(
        self, extra: dict[str, Any], aggregations: list[Any]
    ) -> list[tuple[GroupKey, dict[str, Any]]]:
        table = pa.table({**{c: self.columns[c] for c in self.by}, **extra})
        by = [*self.by, *[c for c in extra if c.startswith("__by")]]
        result = table.group_by(by, use_threads=False).aggregate(aggregations)
        # pyarrow puts aggregate columns first, then the keys: rows are read by name to be safe.
        names = result.column_names
        cols = [result.column(c).to_pylist() for c in names]
        rows = [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]
        return [(_group_key([row[c] for c in self.by]), row) for row in rows]

    def value_counts(self, values: pa.ChunkedArray) -> list[tuple[GroupKey, list[Any], list[int]]]:
        table = pa.table({**{c: self.columns[c] for c in self.by}, "__v": values})
        table = table.filter(pc.is_valid(values))
        counted = table.group_by([*self.by, "__v"], use_threads=False).aggregate(
            [([], "count_all")]
        )
        lists = counted.group_by(self.by, use_threads=False).aggregate(
            [("__v", "list"), ("count_all", "list")]
        )
        groups = zip(*[lists.column(c).to_pylist() for c in self.by], strict=True)
        value_lists = lists.column("__v_list").to_pylist()
        count_lists = lists.column("count_all_list").to_pylist()
        return [
            (_group_key(g), vs, ns)
            for g, vs, ns in zip(groups, value_lists, count_lists, strict=True)
        ]


def _group_key(values: Sequence[Any]) -> GroupKey:
    """(window start, key) from the values of the group columns, in order."""
    return values[0], tuple(values[1:])


def _updates(
    spec: ViewSpec, data: pa.Table, grouping: _Grouping
) -> dict[GroupKey, list[tuple[int, Fold]]] | None:
    """Per (start, key): the folds of this batch's figures into the group's aggregates, each
    aggregate's computed by its own class. Pure: computing them changes no state, so a refusal
    (None) is free."""
    # Every group present in the batch exists afterwards, as on the row path.
    out: dict[GroupKey, list[tuple[int, Fold]]] = {g: [] for g, _ in grouping.aggregate({}, [])}
    for index, agg in enumerate(spec.aggs):
        values = None if agg.arg_field is None else _column(data, agg.arg_field)
        if values is not None and values.null_count == len(values):
            continue  # nothing but NULLs: the row path skips them too
        folds = agg.cls.fold_columns(values, grouping)
        if folds is None:
            return None
        for group, fold in folds.items():
            found = out.get(group)
            if found is None:
                found = out[group] = []
            found.append((index, fold))
    return out
