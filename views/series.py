"""Chart-ready series: one metric of a view over aligned time buckets, split by a key.

``x`` is the list of bucket starts (epoch ms); each series has one value per bucket. Buckets are
any multiple of the view's window, merged from the stored windows with the aggregates' own exact
``merge`` — so an ``avg`` per hour is the average of the hour's events, not of minute averages.
Day and week buckets follow local midnights of a time zone (DST days are 23 or 25 hours long);
other buckets are aligned on the epoch.

``top=N`` keeps the N series with the largest metric over the whole range and folds the others
into one ``other`` series (again by merging aggregates). ``fill`` says what a bucket with no data
shows: ``null`` (default), ``zero``, or the ``previous`` value of that series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np

from views.query import Query, Selection, key_text, select
from views.sketches import sort_key
from views.spec import WindowSpec
from views.view import View
from views.windows import tumble_start

DAY = 86_400_000
WEEK = 7 * DAY
OTHER = "other"
Fill = Literal["null", "zero", "previous"]


class SeriesError(ValueError):
    """A series request that cannot be answered; ``param`` names the parameter at fault."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class SeriesQuery:
    metric: str
    time_from: int
    time_to: int
    bucket: int | None = None  # ms; None: the view's window
    tz: str = "UTC"
    split_by: str | None = None
    top: int | None = None
    fill: Fill = "null"
    filters: dict[str, frozenset[str]] = field(default_factory=dict)
    max_points: int = 10_000


@dataclass
class Series:
    x: list[int]
    series: list[dict[str, Any]]
    bucket: int
    scanned: int

    def to_json(self) -> dict[str, Any]:
        return {"x": self.x, "series": self.series, "bucket_ms": self.bucket}


def series_step(window: WindowSpec) -> int:
    """The distance between a view's windows: its size, or a hop view's slide (each point of a
    hop view's series is one window, ``[start, start + size)``, never several merged)."""
    return window.slide if window.kind == "hop" else window.size


def boundaries(time_from: int, time_to: int, bucket: int, tz: str) -> list[int]:
    """Bucket starts covering [time_from, time_to), plus the end of the last bucket."""
    if bucket % DAY == 0 and tz != "UTC":
        return _local_boundaries(time_from, time_to, bucket // DAY, ZoneInfo(tz))
    out = [tumble_start(time_from, bucket)]
    while out[-1] < time_to:
        out.append(out[-1] + bucket)
    return out


def _local_boundaries(time_from: int, time_to: int, days: int, zone: ZoneInfo) -> list[int]:
    """Local midnights (every ``days`` days; weeks start on Monday) in UTC epoch ms."""

    def ms(moment: datetime) -> int:
        return int(moment.timestamp() * 1000)

    start = datetime.fromtimestamp(time_from / 1000, zone)
    day = start.date()
    if days % 7 == 0:
        day -= timedelta(days=day.weekday())
    out: list[int] = []
    while True:
        midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
        out.append(ms(midnight))
        if out[-1] >= time_to:
            return out
        day += timedelta(days=days)


def series(view: View, q: SeriesQuery) -> Series:
    spec = view.spec
    columns = {c.name: c for c in spec.columns}
    metric = columns.get(q.metric)
    if metric is None or metric.role != "aggregate":
        names = [c.name for c in spec.columns if c.role == "aggregate"]
        raise SeriesError("metric", f"{q.metric!r} is not an aggregate of this view: {names}")
    if metric.type == "array":
        raise SeriesError("metric", f"{q.metric} is a list ({metric.aggregate}), not a number")
    keys = [c.name for c in spec.columns if c.role == "key"]
    if q.split_by is not None and q.split_by not in keys:
        raise SeriesError("split_by", f"{q.split_by!r} is not a group key: {keys}")
    if spec.window is None:
        raise SeriesError("metric", "this view keeps all-time totals: it has no time series")
    window = series_step(spec.window)
    bucket = window if q.bucket is None else q.bucket
    if spec.window.kind == "hop" and bucket != window:
        # Merging overlapping windows would count each event size/slide times.
        raise SeriesError(
            "bucket", f"hopping windows overlap: a series of them steps by the slide ({window} ms)"
        )
    if bucket % window:
        raise SeriesError(
            "bucket", f"must be a multiple of the view's window ({window} ms), got {bucket} ms"
        )
    try:
        ZoneInfo(q.tz)
    except (ValueError, KeyError) as err:  # ZoneInfoNotFoundError is a KeyError
        raise SeriesError("tz", f"unknown time zone {q.tz!r}") from err
    if q.time_to <= q.time_from:
        raise SeriesError("to", "must be after 'from'")
    if (q.time_to - q.time_from) // bucket > q.max_points:  # before building the buckets
        raise SeriesError(
            "bucket",
            f"{(q.time_to - q.time_from) // bucket} buckets are more than the {q.max_points} "
            "points allowed (max_series_points); use a larger bucket or a shorter range",
        )
    edges = boundaries(q.time_from, q.time_to, bucket, q.tz)
    if any(e % window for e in edges):
        raise SeriesError(
            "tz", f"local midnights in {q.tz} do not fall on the view's {window} ms windows"
        )
    starts = edges[:-1]
    index = keys.index(q.split_by) if q.split_by is not None else None
    agg_index = [c.name for c in spec.columns if c.role == "aggregate"].index(q.metric)
    query = Query(filters=q.filters, time_from=edges[0], time_to=edges[-1])
    chosen = select(view, query, keys)
    bucket_of = np.searchsorted(np.asarray(edges, np.int64), chosen.starts, "right") - 1
    names_of_slot: dict[int, str] = {}
    for slot in np.unique(chosen.slots).tolist():
        key = view.keys.keys[slot]
        names_of_slot[slot] = q.metric if index is None else key_text(key[index])
    name_list = sorted(set(names_of_slot.values()), key=sort_key)
    name_id = {n: i for i, n in enumerate(name_list)}
    series_of = np.array([name_id[names_of_slot[s]] for s in chosen.slots.tolist()], np.int64)
    inside = (bucket_of >= 0) & (bucket_of < len(starts))
    n = len(starts)
    cells = _merged(view, agg_index, chosen, series_of * n + bucket_of, inside, len(name_list) * n)
    totals = _merged(view, agg_index, chosen, series_of, inside, len(name_list))
    values_of = {name: cells[i * n : (i + 1) * n] for i, name in enumerate(name_list)}
    names = list(name_list)
    total_of = {n: totals[name_id[n]] for n in names}
    if q.top is not None and len(names) > q.top:
        ranked = sorted(
            names, key=lambda n: (total_of[n] is None, _negated(total_of[n]), sort_key(n))
        )
        kept, folded = ranked[: q.top], ranked[q.top :]
        fold = np.array([name_id[n] for n in folded], np.int64)
        other_cells = _merged(
            view, agg_index, chosen, bucket_of, inside & np.isin(series_of, fold), len(starts)
        )
        for name in folded:
            del values_of[name]
        other = OTHER if OTHER not in values_of else f"{OTHER} ({len(folded)})"
        values_of[other] = other_cells
        names = [*kept, other]
    points = len(starts) * max(1, len(names))
    if points > q.max_points:
        raise SeriesError(
            "bucket",
            f"{len(starts)} buckets x {max(1, len(names))} series = {points} points, more than "
            f"the {q.max_points} allowed (max_series_points); use a larger bucket, a shorter "
            "range, or top",
        )
    out = []
    for name in names:
        values: list[Any] = []
        previous = None
        for value in values_of[name]:
            if value is None:
                value = 0 if q.fill == "zero" else previous if q.fill == "previous" else None
            else:
                previous = value
            values.append(value)
        out.append({"name": name, "values": values})
    return Series(starts, out, bucket, len(chosen))


def _merged(
    view: View,
    agg_index: int,
    chosen: Selection,
    cell: np.ndarray,
    inside: np.ndarray,
    cells: int,
) -> list[Any]:
    """The metric merged into ``cells`` rows — pair j goes to row ``cell[j]``, pairs not
    ``inside`` are left out — as results; None for a row no pair went to (no data)."""
    merged = view.new_aggregate(agg_index).empty(cells)
    filled = np.zeros(cells, bool)
    at = 0
    for part, ids in chosen.parts:
        mine = slice(at, at + len(ids))
        keep = inside[mine]
        if keep.any():
            merged.absorb(part.aggs[agg_index], ids[keep], cell[mine][keep])
            filled[cell[mine][keep]] = True
        at += len(ids)
    results = merged.results(np.arange(cells))
    return [r if ok else None for r, ok in zip(results, filled.tolist(), strict=True)]


def _negated(value: Any) -> Any:
    return -value if isinstance(value, int | float) else 0
