"""Reads: filter, time range, query-time rollup (merge aggregates), order, page.

Every answer is bounded: at most ``limit`` rows (fetching ``limit + 1`` to know whether the answer
was ``truncated``), and the scan is bounded by the view's retention and group cap.
Stored aggregates are never mutated here: rollups merge into fresh instances.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from views.aggregates import Aggregate
from views.sketches import sort_key
from views.spec import Column
from views.view import Key, View
from views.windows import align

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


def run(view: View, query: Query) -> Result:
    validate(view, query)
    spec = view.spec
    key_names = [c.name for c in spec.columns if c.role == "key"]
    keep = [i for i, n in enumerate(key_names) if query.group_by is None or n in query.group_by]
    # Several parts may hold the same (bucket, key): then rows are merged like a rollup.
    rollup = len(keep) != len(key_names) or query.bucket is not None or len(view.parts) > 1
    scanned = 0
    groups: dict[tuple[int | None, Key], list[Aggregate]] = {}
    for start, key, aggs in scan(view, query, key_names):
        scanned += 1
        if query.max_scan is not None and scanned > query.max_scan:
            raise QueryError(
                "from",
                f"this query reads more than {query.max_scan} groups (max_groups_scanned); "
                "narrow it with from/to or key filters",
            )
        if query.bucket == ALL:
            t: int | None = None
        elif query.bucket is not None:
            t = align(start, query.bucket)
        else:
            t = start
        out_key = tuple(key[i] for i in keep) if rollup else key
        if not rollup:
            groups[(t, out_key)] = aggs
            continue
        merged = groups.get((t, out_key))
        if merged is None:
            merged = groups[(t, out_key)] = [a.new() for a in spec.aggs]
        for target, part in zip(merged, aggs, strict=True):
            target.merge(part)
    columns = output_columns(view, query, projected=False)
    pickers = _pickers(columns, [key_names[i] for i in keep], spec.columns)
    chosen, truncated = _order_and_page(list(groups.items()), columns, pickers, query)
    # Aggregate results (sketch estimates can be costly) are computed for the page only.
    page = [tuple(pick(t, key, aggs) for pick in pickers) for (t, key), aggs in chosen]
    if query.columns:
        picks = [i for i, c in enumerate(columns) if c.name in query.columns]
        page = [tuple(row[i] for i in picks) for row in page]
        columns = [columns[i] for i in picks]
    next_offset = query.offset + query.limit if truncated else None
    return Result(columns, page, truncated, next_offset, scanned)


def scan(
    view: View, query: Query, key_names: list[str]
) -> Iterator[tuple[int, Key, list[Aggregate]]]:
    """The stored (bucket start, key, aggregates) that ``query``'s time range and key filters
    select, part by part (a key held by several parts comes once per part); never mutate them."""
    checks = [(key_names.index(n), allowed) for n, allowed in query.filters.items()]
    windowed = view.spec.window is not None
    lookups = _lookups(view, query, key_names)
    for part in view.parts.values():
        buckets = part.buckets
        if windowed:
            starts = buckets.irange(query.time_from, query.time_to, inclusive=(True, False))
        else:
            starts = iter(buckets.keys())
        for start in list(starts):
            groups = buckets[start]
            if lookups is not None:  # every key filtered: look the few candidates up
                for key in lookups:
                    aggs = groups.get(key)
                    if aggs is not None:
                        yield start, key, aggs
                continue
            for key, aggs in groups.items():
                if all(key_text(key[i]) in allowed for i, allowed in checks):
                    yield start, key, aggs


def _lookups(view: View, query: Query, key_names: list[str]) -> list[Key] | None:
    """When every key column is filtered and holds only strings (declared ``string``: values
    are str or NULL), the matching keys are known in advance: each allowed text is that string,
    and "null" is also NULL. Then a bucket costs a few dict lookups instead of a scan."""
    if not key_names or set(query.filters) != set(key_names):
        return None
    types = {c.name: c.type for c in view.spec.columns if c.role == "key"}
    if any(types[n] != "string" for n in key_names):
        return None
    options = [
        [*sorted(query.filters[n]), *([None] if "null" in query.filters[n] else [])]
        for n in key_names
    ]
    if math.prod(len(o) for o in options) > 256:
        return None
    return [tuple(k) for k in itertools.product(*options)]


Picker = Callable[[int | None, Key, list[Aggregate]], Any]


def _pickers(
    columns: list[Column], kept_keys: list[str], all_columns: tuple[Column, ...]
) -> list[Picker]:
    """For each output column, a function taking (bucket, key, aggregates) to its value."""
    agg_names = [c.name for c in all_columns if c.role == "aggregate"]
    pickers: list[Picker] = []
    for column in columns:
        if column.role == "window":
            pickers.append(lambda t, key, aggs: t)
        elif column.role == "key":
            i = kept_keys.index(column.name)
            pickers.append(lambda t, key, aggs, i=i: key[i])  # type: ignore[misc]
        else:
            j = agg_names.index(column.name)
            pickers.append(lambda t, key, aggs, j=j: aggs[j].result())  # type: ignore[misc]
    return pickers


Entry = tuple[tuple[int | None, Key], list[Aggregate]]


def _order_and_page(
    entries: list[Entry], columns: list[Column], pickers: list[Picker], query: Query
) -> tuple[list[Entry], bool]:
    """Sort (default: window then keys; ``order_by`` nulls last, ties in default order), page."""
    entries.sort(key=lambda e: (sort_key(e[0][0]), *map(sort_key, e[0][1])))
    wanted = query.offset + query.limit + 1
    if query.order_by is not None:
        pick = pickers[next(i for i, c in enumerate(columns) if c.name == query.order_by)]
        valued = [(pick(t, key, aggs), ((t, key), aggs)) for (t, key), aggs in entries]
        present = [v for v in valued if v[0] is not None]
        nulls = [v[1] for v in valued if v[0] is None]
        choose = heapq.nlargest if query.descending else heapq.nsmallest
        ranked = [v[1] for v in choose(wanted, present, key=lambda v: sort_key(v[0]))]
        entries = (ranked + nulls)[:wanted]
    page = entries[query.offset : query.offset + query.limit]
    return page, len(entries) > query.offset + query.limit
