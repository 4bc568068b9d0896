"""The written policies of views/view.py: late data, retention, the group cap."""

from __future__ import annotations

from typing import Any

import pytest

from views.config import parse
from views.query import ALL, Query, QueryError, run
from views.registry import Batch, Registry

MINUTE = 60_000


def registry(view_sql: str, **options: Any) -> Registry:
    view = {"sql": view_sql, **options}
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": view}})
    return Registry(config.sources, config.views, keep=3)


def feed(reg: Registry, *batches: list[dict[str, Any]]) -> None:
    for events in batches:
        reg.apply(Batch("s", [dict(e) for e in events], reg.sources["s"].positions.get("", 0) + 1))


def rows(reg: Registry, **query: Any) -> list[tuple[Any, ...]]:
    return run(reg.views["v"], Query(limit=1000, **query)).rows


SQL = "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n FROM s GROUP BY k, m"


def test_late_events_are_counted_kept_and_not_applied() -> None:
    reg = registry(SQL, grace="30s")
    feed(reg, [{"ts": 10 * MINUTE, "k": "a"}])
    watermark = 10 * MINUTE
    on_time = {"ts": watermark - 30_000, "k": "a"}  # exactly at the grace edge: applied
    late = {"ts": watermark - 30_001, "k": "a"}
    feed(reg, [late, on_time, {"ts": 11 * MINUTE, "k": "a"}])
    view = reg.views["v"]
    assert view.counter("late") == 1
    assert view.late_events()[0]["event"] == late
    assert view.late_events()[0]["watermark"] == watermark
    assert rows(reg) == [("a", 9 * MINUTE, 1), ("a", 10 * MINUTE, 1), ("a", 11 * MINUTE, 1)]
    # the watermark judges a batch as it was before the batch: within one batch, no ordering
    assert reg.sources["s"].watermarks[""] == 11 * MINUTE
    feed(reg, [{"ts": 0, "k": "b"}] * 5)
    assert view.counter("late") == 6
    assert len(view.late_events()) == 3  # keep=3 newest, counter counts all


def test_retention_drops_old_buckets_and_frees_groups() -> None:
    reg = registry(SQL, retention="5m", grace="1m")
    feed(reg, [{"ts": m * MINUTE, "k": f"k{m}"} for m in range(10)])
    view = reg.views["v"]
    # watermark 9m: buckets that ended at or before 9m - 5m are gone, [4m, 5m) and later stay
    assert [r[1] // MINUTE for r in rows(reg)] == [4, 5, 6, 7, 8, 9]
    assert view.stats()["groups"] == 6
    assert view.stats()["buckets"] == 6


def test_group_cap_folds_new_keys_into_other() -> None:
    reg = registry("SELECT k, count(*) AS n FROM s GROUP BY k", max_groups=3)
    feed(reg, [{"ts": 1, "k": k} for k in "abcdeabf"])
    view = reg.views["v"]
    assert rows(reg) == [("__other__", 3), ("a", 2), ("b", 2), ("c", 1)]
    assert view.counter("overflow") == 3
    assert view.stats()["groups"] == 4  # three real groups and the one __other__


def test_hop_rows_and_rebucketing_refusal() -> None:
    reg = registry("SELECT hop(ts, '3 minutes', '1 minute') AS w, count(*) AS n FROM s GROUP BY w")
    feed(reg, [{"ts": 5 * MINUTE + 1}])
    assert rows(reg) == [(3 * MINUTE, 1), (4 * MINUTE, 1), (5 * MINUTE, 1)]
    for bucket in (ALL, 6 * MINUTE):  # merging overlapping windows would count the event 3 times
        with pytest.raises(QueryError, match="hopping windows overlap"):
            rows(reg, bucket=bucket)
