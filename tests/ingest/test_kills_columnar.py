"""WHERE clauses and policies on bodies read column-wise (``ingest.columnar``, what the HTTP
source does with large bodies) against the same events decoded row by row: a constant
predicate is evaluated once and spread over the batch, and must keep every row or none; late
rows, hop windows, the group cap and NULLs answer the same whichever reader read them. Both are
fed the same NDJSON events and their answers compared with the events the test made.
"""

from __future__ import annotations

from typing import Any

import pytest

from ingest.decode import Decoder
from tests.helpers import TABLE_MIN_LINES, ndjson
from views.config import parse
from views.query import Query, run
from views.registry import Batch, Registry

T0 = 1_790_000_000_000


@pytest.mark.parametrize(
    ("where", "kept"),
    [("1 = 1", True), ("1 = 0", False), ("NULL = 1", False), ("NOT (2 < 1)", True)],
)
def test_a_where_that_reads_no_field_keeps_every_row_or_none(where: str, kept: bool) -> None:
    sql = f"SELECT k, count(*) AS n, sum(x) AS total FROM s WHERE {where} GROUP BY k"
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": sql}}})
    events: list[dict[str, Any]] = [
        {"ts": T0 + i, "k": "ab"[i % 2], "x": i} for i in range(TABLE_MIN_LINES)
    ]
    body = ndjson(events)
    table = Decoder(config.sources["s"], 1 << 20).columns(body)
    assert table is not None
    by_columns = Registry(config.sources, config.views)
    by_columns.apply(Batch("s", [], 1, columns=table))
    by_rows = Registry(config.sources, config.views)
    by_rows.apply(Batch("s", [dict(e) for e in events], 1))
    expected = []
    if kept:
        expected = [
            (k, len(xs), sum(xs)) for k in "ab" for xs in [[e["x"] for e in events if e["k"] == k]]
        ]
    for reg in (by_columns, by_rows):
        assert run(reg.views["v"], Query(order_by="k")).rows == expected
        assert reg.views["v"].counter("applied") == (len(events) if kept else 0)


def test_a_where_on_one_field_that_null_passes_keeps_the_null_rows_column_wise() -> None:
    sql = "SELECT count(*) AS n FROM s WHERE coupon IS NULL OR coupon = 'VIP'"
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": sql}}})
    coupons = [None, "VIP", "SPRING", None]
    events: list[dict[str, Any]] = [
        {"ts": T0 + i, "coupon": coupons[i % 4]} for i in range(TABLE_MIN_LINES)
    ]
    table = Decoder(config.sources["s"], 1 << 20).columns(ndjson(events))
    assert table is not None
    reg = Registry(config.sources, config.views)
    reg.apply(Batch("s", [], 1, columns=table))
    passing = sum(1 for e in events if e["coupon"] in (None, "VIP"))
    assert run(reg.views["v"], Query()).rows == [(passing,)]


def test_late_rows_column_wise_are_kept_as_the_row_path_keeps_them() -> None:
    """Each with the watermark and grace it was judged by and its partition, the newest
    ``keep`` of them."""
    sql = "SELECT tumble(ts, '1 minute') AS m, count(*) AS n FROM s GROUP BY m"
    views = {"v": {"sql": sql, "grace": "10s"}}
    config = parse({"sources": {"s": {"time": "ts"}}, "views": views})
    first = [{"ts": T0 + 600_000}]
    events: list[dict[str, Any]] = [
        {"ts": T0 + (i % 3) * 300_000 + i} for i in range(TABLE_MIN_LINES)
    ]  # a third on time, two thirds late
    table = Decoder(config.sources["s"], 1 << 20).columns(ndjson(events))
    assert table is not None
    kept = []
    for columns in (True, False):
        reg = Registry(config.sources, config.views, keep=7)
        reg.apply(Batch("s", [dict(e) for e in first], 1, part="p2"))
        if columns:
            reg.apply(Batch("s", [], 2, part="p2", columns=table))
        else:
            reg.apply(Batch("s", [dict(e) for e in events], 2, part="p2"))
        kept.append(reg.views["v"].late_events())
        assert reg.views["v"].counter("late") == sum(
            1 for e in events if e["ts"] < T0 + 600_000 - 10_000
        )
    late = [e for e in events if e["ts"] < T0 + 600_000 - 10_000][-7:]
    expected = [
        {"event": e, "watermark": T0 + 600_000, "grace": 10_000, "part": "p2"} for e in late
    ]
    assert kept == [expected, expected]


def both_paths(
    views: dict[str, dict[str, Any]], before: list[dict[str, Any]], events: list[dict[str, Any]]
) -> tuple[Registry, Registry]:
    """Two registries fed ``before`` row by row, then ``events`` as one table (the column path
    where the view takes it) or as rows."""
    config = parse({"sources": {"s": {"time": "ts"}}, "views": views})
    table = Decoder(config.sources["s"], 1 << 20).columns(ndjson(events))
    assert table is not None
    out = []
    for columns in (True, False):
        reg = Registry(config.sources, config.views)
        if before:
            reg.apply(Batch("s", [dict(e) for e in before], 1))
        if columns:
            reg.apply(Batch("s", [], 2, columns=table))
        else:
            reg.apply(Batch("s", [dict(e) for e in events], 2))
        out.append(reg)
    return out[0], out[1]


def same(by_columns: Registry, by_rows: Registry) -> None:
    for name, view in by_rows.views.items():
        query = Query(limit=10_000)
        assert run(by_columns.views[name], query).rows == run(view, query).rows, name
        assert by_columns.views[name].stats() == view.stats(), name
        assert by_columns.views[name].late_events() == view.late_events(), name


def test_hop_windows_and_expressions_answer_as_on_the_row_path() -> None:
    """Shapes the column path leaves to the row path: a table batch still answers the same."""
    views = {
        "hop": {
            "sql": "SELECT k, hop(ts, '2 minutes', '1 minute') AS w, count(*) AS n FROM s "
            "GROUP BY k, w",
            "grace": "1h",
        },
        "expr": {"sql": "SELECT k, sum(price * qty) AS total, count(*) AS n FROM s GROUP BY k"},
    }
    events: list[dict[str, Any]] = [
        {"ts": T0 + i * 100, "k": "ab"[i % 2], "price": 1 + i % 7, "qty": i % 3}
        for i in range(TABLE_MIN_LINES)
    ]
    by_columns, by_rows = both_paths(views, [], events)
    same(by_columns, by_rows)
    hop = {(k, w): n for k, w, n in run(by_rows.views["hop"], Query(limit=10_000)).rows}
    for (k, w), n in hop.items():  # each event in both windows that hold it
        assert n == sum(1 for e in events if e["k"] == k and w <= e["ts"] < w + 120_000)


def test_a_batch_that_would_pass_the_group_cap_counts_overflow_as_the_row_path() -> None:
    """Three keys held, a cap of four, a batch of two new keys: one gets the last slot, the
    other's every event is folded into __other__ and counted — as events arrive."""
    views = {"v": {"sql": "SELECT k, count(*) AS n FROM s GROUP BY k", "max_groups": 4}}
    before = [{"ts": T0, "k": k} for k in "abc"]
    events = [{"ts": T0 + i, "k": "de"[i % 2]} for i in range(TABLE_MIN_LINES)]
    by_columns, by_rows = both_paths(views, before, events)
    same(by_columns, by_rows)
    assert by_rows.views["v"].counter("overflow") == TABLE_MIN_LINES // 2


def test_a_batch_entirely_late_or_with_one_row_left_column_wise() -> None:
    views = {
        "v": {
            "sql": "SELECT tumble(ts, '1 minute') AS m, count(*) AS n FROM s GROUP BY m",
            "grace": "10s",
        }
    }
    before = [{"ts": T0 + 600_000}]
    late = [{"ts": T0 + i} for i in range(TABLE_MIN_LINES)]
    same(*both_paths(views, before, late))
    edge = T0 + 600_000 - 10_000  # exactly watermark - grace: on time
    one = [{"ts": edge}] + [{"ts": T0 + i} for i in range(TABLE_MIN_LINES)]
    by_columns, by_rows = both_paths(views, before, one)
    same(by_columns, by_rows)
    assert by_columns.views["v"].counter("applied") == 2  # the first batch's event and the edge


def test_a_table_batch_for_a_partition_with_views_of_both_paths() -> None:
    """One table, a partition named, a watermark from before: the view the column path takes
    and the one left to the row path (hop) both judge lateness by it and file under it."""
    views = {
        "tumble": {
            "sql": "SELECT tumble(ts, '1 minute') AS m, count(*) AS n FROM s GROUP BY m",
            "grace": "10s",
        },
        "hop": {
            "sql": "SELECT hop(ts, '2 minutes', '1 minute') AS w, count(*) AS n FROM s GROUP BY w",
            "grace": "10s",
        },
    }
    config = parse({"sources": {"s": {"time": "ts"}}, "views": views})
    events = [{"ts": T0 + (i % 2) * 300_000 + i} for i in range(TABLE_MIN_LINES)]  # half late
    table = Decoder(config.sources["s"], 1 << 20).columns(ndjson(events))
    assert table is not None
    reg = Registry(config.sources, config.views)
    reg.apply(Batch("s", [{"ts": T0 + 200_000}], 1, part="p1"))
    reg.apply(Batch("s", [], 2, part="p1", columns=table))
    late = sum(1 for e in events if e["ts"] < T0 + 190_000)
    assert late == TABLE_MIN_LINES // 2
    for name in views:
        view = reg.views[name]
        assert list(view.parts) == ["p1"], name
        assert view.part_counters("p1")["late"] == late, name
        assert view.part_counters("p1")["applied"] == 1 + TABLE_MIN_LINES - late, name
    assert reg.sources["s"].watermarks == {"p1": max(e["ts"] for e in events)}


def test_an_aggregate_over_nothing_but_nulls_leaves_the_others_column_wise() -> None:
    views = {
        "v": {
            "sql": "SELECT k, count(*) AS n, sum(missing) AS nothing, min(x) AS lo, "
            "count(missing) AS none, max(x) AS hi FROM s GROUP BY k"
        }
    }
    events: list[dict[str, Any]] = [
        {"ts": T0 + i, "k": "ab"[i % 2], "x": i} for i in range(TABLE_MIN_LINES)
    ]
    by_columns, by_rows = both_paths(views, [], events)
    same(by_columns, by_rows)
    assert run(by_rows.views["v"], Query(order_by="k")).rows == [
        (k, len(xs), None, min(xs), 0, max(xs))
        for k in "ab"
        for xs in [[e["x"] for e in events if e["k"] == k]]
    ]
