"""The columnar path: a whole batch folded into a view at once, with the row path's semantics.

A large batch arrives as an Arrow table (parsed and type-checked by the ingest layer). For each
view this module groups the batch by (window start, group key) with Arrow's C++ hash aggregation,
turns each group's figures into the same mergeable aggregate states the row path builds one event
at a time, and merges them into the view's part. So there is one engine — one state, one snapshot
format, one query path — and two ways of feeding it.

What makes the two ways agree (tests/views/test_columns.py checks it on seeded random batches):

* count, min, max, count_distinct and integer sums are computed exactly as the row path does;
* float sums are exact too: every float is split into an integer mantissa and an exponent, the
  mantissas are summed as integers per (group, exponent) and the group's exact total is handed to
  ``Sum`` as Shewchuk partials, so the answer is the correctly rounded sum, as on the row path;
* HyperLogLog and DDSketch receive the same hashes and the same bin keys (computed by the same
  Python functions, once per distinct value), so their states are identical;
* top_k receives the batch's exact counts as a summary and merges it (Cafaro et al.): within the
  same error bound as the row path, but not always the same state once values get evicted;
* late events, watermarks and counters follow the same rules; a view whose batch would push it past
  ``max_groups`` (where which keys fold into ``__other__`` depends on event order), a hop window, a
  change stream, or an aggregate over an expression is left to the row path (``prepare``
  returns None before touching anything).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from views.aggregates import (
    ApproxCountDistinct,
    ApproxPercentile,
    Count,
    CountDistinct,
    Max,
    Min,
    Sum,
    TopK,
    _grow,
)
from views.sketches import DDSketch, SpaceSaving, hash64, sort_key
from views.spec import ViewSpec
from views.view import View, late_record
from views.windows import tumble_starts

COLUMNAR = {
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "count_distinct",
    "approx_count_distinct",
    "approx_percentile",
    "top_k",
}
_MANTISSA = 53
_LOW_BITS = 26


def columnar(spec: ViewSpec) -> bool:
    """Whether this view can take batches column-wise (else the row path serves it)."""
    if spec.retracting or (spec.window is not None and spec.window.kind != "tumble"):
        return False
    return all(a.kind in COLUMNAR and (a.arg is None or a.arg_field is not None) for a in spec.aggs)


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


class _Hashes:
    """value -> 64-bit hash, remembered: a hot value (a returning user) is hashed once."""

    LIMIT = 2_000_000

    def __init__(self) -> None:
        self.known: dict[Any, int] = {}

    def many(self, values: list[Any]) -> list[int]:
        known = self.known
        hashes = list(map(known.get, values))
        if None in hashes:
            if len(known) >= self.LIMIT:
                known.clear()
            for i, h in enumerate(hashes):
                if h is None:
                    v = values[i]
                    hashes[i] = known[v] = hash64(v)
        return hashes  # type: ignore[return-value]


HASHES = _Hashes()


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


def _split_floats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = (hi * 2**26 + lo) * 2**(e - 53) exactly, with small integer hi, lo."""
    fraction, exponent = np.frexp(values)
    mantissa = np.ldexp(fraction, _MANTISSA).astype(np.int64)
    return mantissa >> _LOW_BITS, mantissa & ((1 << _LOW_BITS) - 1), exponent.astype(np.int64)


def dyadic_partials(n: int, k: int) -> list[float]:
    """Non-overlapping floats (smallest first) summing exactly to ``n * 2**k``."""
    out: list[float] = []
    while n:
        f = math.ldexp(float(n), k)
        fraction, e = math.frexp(f)
        m, scale = int(math.ldexp(fraction, _MANTISSA)), e - _MANTISSA  # f == m * 2**scale
        if scale >= k:
            n -= m << (scale - k)
        else:
            n, k = (n << (k - scale)) - m, scale
        out.append(f)
    return out[::-1]


def _dd_keys(values: np.ndarray) -> np.ndarray:
    """DDSketch bin per value, by DDSketch's own scalar function (once per distinct value);
    zero band -> 0 with sign 0 in the sign column."""
    distinct, inverse = np.unique(values, return_inverse=True)
    sketch = DDSketch()
    keys = np.array(
        [
            sketch._key(abs(float(v))) if abs(v) > DDSketch.MIN_INDEXABLE else 0
            for v in distinct.tolist()
        ],
        dtype=np.int64,
    )
    return keys[inverse]


Update = Callable[[list[Any]], None]


@dataclass
class Prepared:
    """A batch's effect on one view, computed but not yet applied."""

    view: View
    part_name: str
    applied: int
    late: int
    late_rows: list[dict[str, Any]]
    watermark: int | None
    updates: dict[tuple[int, tuple[Any, ...]], list[Callable[[list[Any]], None]]]

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
        for (start, key), fns in self.updates.items():
            aggs = view.group(part, start, key)
            for fn in fns:
                fn(aggs)


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
    window = spec.window
    ts = data.column(table.time_field).to_numpy()
    late_rows: list[dict[str, Any]] = []
    if window is not None and watermark is not None:
        late = ts < watermark - spec.grace
        n_late = int(late.sum())
        if n_late:
            late_index = np.flatnonzero(late)[-view.keep :]
            late_rows = table.rows(data.take(pa.array(late_index)))
            keep = ~late
            data = data.filter(pa.array(keep))
            ts = ts[keep]
    else:
        n_late = 0
    if data.num_rows == 0:
        return Prepared(view, part_name, 0, n_late, late_rows, watermark, {})
    starts = np.zeros(len(ts), np.int64) if window is None else tumble_starts(ts, window.size)
    keys = list(spec.keys)
    columns: dict[str, Any] = {"__start": pa.array(starts)}
    for k in keys:
        columns[k] = _column(data, k)
    group_cols = ["__start", *keys]
    part = view.parts.get(part_name)
    refs = part.group_refs if part is not None else {}
    # Which keys are new decides whether max_groups could fold some into __other__: if so, the
    # order of events matters and the row path must decide.
    if keys:
        key_table = pa.table({k: columns[k] for k in keys})
        distinct = key_table.group_by(keys, use_threads=False).aggregate([]).to_pylist()
        new = sum(1 for row in distinct if tuple(row[k] for k in keys) not in refs)
    else:
        new = 0 if () in refs else 1
    if new and len(refs) - (view.other_key in refs) + new > spec.max_groups:
        return None
    updates = _updates(spec, data, columns, group_cols)
    if updates is None:
        return None
    return Prepared(view, part_name, data.num_rows, n_late, late_rows, watermark, updates)


GroupKey = tuple[int, tuple[Any, ...]]


def _updates(
    spec: ViewSpec, data: pa.Table, columns: dict[str, Any], group_cols: list[str]
) -> dict[GroupKey, list[Update]] | None:
    """Per (start, key): the functions that fold this batch's figures into the group's
    aggregates. Pure: computing them changes no state, so a refusal (None) is free."""
    n_keys = len(group_cols) - 1
    out: dict[GroupKey, list[Update]] = {}

    def group_of(row: tuple[Any, ...]) -> list[Update]:
        gk = (row[0], tuple(row[1 : 1 + n_keys]))
        fns = out.get(gk)
        if fns is None:
            fns = out[gk] = []
        return fns

    # pyarrow puts aggregate columns first, then the keys; we index rows by name to be safe.
    def rows_by_name(extra: dict[str, Any], aggregations: list[Any]) -> list[dict[str, Any]]:
        table = pa.table({**{c: columns[c] for c in group_cols}, **extra})
        by = [*group_cols, *[c for c in extra if c.startswith("__by")]]
        result = table.group_by(by, use_threads=False).aggregate(aggregations)
        names = result.column_names
        cols = [result.column(c).to_pylist() for c in names]
        return [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]

    def key_of(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c] for c in group_cols)

    # Every group present in the batch exists afterwards, as on the row path.
    for row in rows_by_name({}, []):
        group_of(key_of(row))

    for index, agg in enumerate(spec.aggs):
        kind = agg.kind
        if agg.arg_field is None:  # count(*)
            for row in rows_by_name({}, [([], "count_all")]):
                group_of(key_of(row)).append(_add_count(index, row["count_all"]))
            continue
        values = _column(data, agg.arg_field)
        if values.null_count == len(values):
            continue  # nothing but NULLs: the row path skips them too
        if kind == "count":
            for row in rows_by_name({"__v": values}, [("__v", "count")]):
                if row["__v_count"]:
                    group_of(key_of(row)).append(_add_count(index, row["__v_count"]))
        elif kind in ("sum", "avg"):
            if not _sums(index, values, rows_by_name, key_of, group_of):
                return None
        elif kind in ("min", "max"):
            for row in rows_by_name({"__v": values}, [("__v", kind)]):
                v = row[f"__v_{kind}"]
                if v is not None:
                    group_of(key_of(row)).append(_add_value(index, v))
        elif kind == "approx_percentile":
            _percentiles(index, values, rows_by_name, key_of, group_of)
        else:  # count_distinct, approx_count_distinct, top_k: per (group, value) counts
            table = pa.table({**{c: columns[c] for c in group_cols}, "__v": values})
            table = table.filter(pc.is_valid(values))
            counted = table.group_by([*group_cols, "__v"], use_threads=False).aggregate(
                [([], "count_all")]
            )
            lists = counted.group_by(group_cols, use_threads=False).aggregate(
                [("__v", "list"), ("count_all", "list")]
            )
            keys_out = zip(*[lists.column(c).to_pylist() for c in group_cols], strict=True)
            value_lists = lists.column("__v_list").to_pylist()
            count_lists = lists.column("count_all_list").to_pylist()
            for gk, vs, ns in zip(keys_out, value_lists, count_lists, strict=True):
                group_of(gk).append(_VALUE_COUNTS[kind](index, vs, ns))
    return out


def _add_count(index: int, n: int) -> Update:
    def fold(aggs: list[Any]) -> None:
        aggregate: Count = aggs[index]
        aggregate.n += n

    return fold


def _add_value(index: int, v: Any) -> Update:
    def fold(aggs: list[Any]) -> None:
        aggregate: Min | Max = aggs[index]
        aggregate.add(v)

    return fold


def _sums(
    index: int, values: pa.ChunkedArray, rows_by_name: Any, key_of: Any, group_of: Any
) -> bool:
    if pa.types.is_integer(values.type):
        arr = values.to_numpy(zero_copy_only=False)
        present = arr[~np.isnan(arr)] if arr.dtype.kind == "f" else arr
        if present.size and int(np.abs(present).max()) * len(present) >= 1 << 62:
            return False  # could overflow int64: let Python ints do it
        for row in rows_by_name({"__v": values}, [("__v", "sum"), ("__v", "count")]):
            if row["__v_count"]:
                group_of(key_of(row)).append(
                    _add_sum(index, row["__v_count"], int(row["__v_sum"]), [])
                )
        return True
    # floats: exact per (group, exponent) integer mantissa sums
    filled = pc.fill_null(values, 0.0).to_numpy()
    hi, lo, exp = _split_floats(filled)
    valid = pc.is_valid(values)
    extra = {
        "__hi": pa.array(hi),
        "__lo": pa.array(lo),
        "__by_e": pa.array(exp),
        "__n": pc.cast(valid, pa.int64()),
    }
    totals: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows_by_name(extra, [("__hi", "sum"), ("__lo", "sum"), ("__n", "sum")]):
        n = row["__n_sum"]
        entry = totals.setdefault(key_of(row), [0, []])
        entry[0] += n
        if n:
            entry[1].append(
                (row["__by_e"] - _MANTISSA, (row["__hi_sum"] << _LOW_BITS) + row["__lo_sum"])
            )
    for gk, (n, terms) in totals.items():
        if not n:
            continue
        low = min(e for e, _ in terms)
        total = sum(m << (e - low) for e, m in terms)
        try:
            partials = dyadic_partials(total, low)
        except OverflowError:
            return False
        group_of(gk).append(_add_sum(index, n, 0, partials))
    return True


def _add_sum(index: int, n: int, integer: int, partials: list[float]) -> Update:
    def fold(aggs: list[Any]) -> None:
        aggregate: Sum = aggs[index]
        aggregate.n += n
        aggregate.integer += integer
        for p in partials:
            _grow(aggregate.floats, p)

    return fold


def _percentiles(
    index: int, values: pa.ChunkedArray, rows_by_name: Any, key_of: Any, group_of: Any
) -> None:
    filled = pc.fill_null(pc.cast(values, pa.float64()), 0.0).to_numpy()
    sign = np.where(
        filled > DDSketch.MIN_INDEXABLE, 1, np.where(filled < -DDSketch.MIN_INDEXABLE, -1, 0)
    )
    extra = {"__v": values, "__by_s": pa.array(sign), "__by_k": pa.array(_dd_keys(filled))}
    sketches: dict[tuple[Any, ...], DDSketch] = {}
    for row in rows_by_name(extra, [("__v", "count"), ("__v", "min"), ("__v", "max")]):
        n = row["__v_count"]
        if not n:
            continue
        sketch = sketches.get(key_of(row))
        if sketch is None:
            sketch = sketches[key_of(row)] = DDSketch()
        sketch.count += n
        sketch.low = min(sketch.low, row["__v_min"])
        sketch.high = max(sketch.high, row["__v_max"])
        s, k = row["__by_s"], row["__by_k"]
        if s == 0:
            sketch.zeros += n
        else:
            store = sketch.positive if s > 0 else sketch.negative
            store[k] = store.get(k, 0) + n
    for gk, sketch in sketches.items():
        group_of(gk).append(_merge_sketch(index, sketch))


def _merge_sketch(index: int, sketch: DDSketch) -> Update:
    def fold(aggs: list[Any]) -> None:
        aggregate: ApproxPercentile = aggs[index]
        aggregate.sketch.merge(sketch)

    return fold


def _distinct(index: int, values: list[Any], counts: list[int]) -> Update:
    def fold(aggs: list[Any]) -> None:
        aggregate: CountDistinct = aggs[index]
        seen = aggregate.seen
        if not seen:
            aggregate.seen = dict(zip(values, counts, strict=True))
            return
        for v, n in zip(values, counts, strict=True):
            seen[v] = seen.get(v, 0) + n

    return fold


def _approx_distinct(index: int, values: list[Any], counts: list[int]) -> Update:
    hashes = HASHES.many(values)

    def fold(aggs: list[Any]) -> None:
        aggregate: ApproxCountDistinct = aggs[index]
        aggregate.sketch.add_hashes(hashes)

    return fold


def _top(index: int, values: list[Any], n: list[int]) -> Update:
    counts = dict(zip(values, n, strict=True))

    def fold(aggs: list[Any]) -> None:
        aggregate: TopK = aggs[index]
        capacity = aggregate.sketch.capacity
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], sort_key(kv[0])))[:capacity]
        summary = SpaceSaving(capacity)
        summary.counts = dict(ranked)
        summary.errors = dict.fromkeys(summary.counts, 0)
        summary._rebuild_heap()
        if not aggregate.sketch.counts:
            aggregate.sketch = summary
        else:
            aggregate.sketch.merge(summary)

    return fold


_VALUE_COUNTS: dict[str, Callable[[int, list[Any], list[int]], Update]] = {
    "count_distinct": _distinct,
    "approx_count_distinct": _approx_distinct,
    "top_k": _top,
}
