"""The written policies of views/view.py: late data, retention, the group cap — on both ingest
paths (``ingest_path``: events row by row, or a table read by ``Decoder.table`` and folded by
``views.columns``), each compared with the plain-Python reference over exactly what was fed."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests import reference as ref
from tests.helpers import HOUR_T0, IngestPath
from views.config import parse
from views.query import ALL, Query, QueryError, run
from views.registry import Batch, Registry

MINUTE = 60_000
T0 = HOUR_T0  # epoch ms: a small number would be read as epoch seconds by the decoders
Events = list[dict[str, Any]]


def registry(view_sql: str, **options: Any) -> Registry:
    view = {"sql": view_sql, **options}
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": view}})
    return Registry(config.sources, config.views, keep=3)


def feed(reg: Registry, path: IngestPath, *batches: Events) -> None:
    source = reg.sources["s"]
    for events in batches:
        reg.apply(path.batch(source.spec, events, source.positions.get("", 0) + 1))


def rows(reg: Registry, **query: Any) -> list[tuple[Any, ...]]:
    return run(reg.views["v"], Query(limit=1000, **query)).rows


def stamped(events: Events) -> Events:
    """Copies the reference reads: the event time (epoch ms here) as ``_ts``."""
    return [{**e, "_ts": e["ts"]} for e in events]


def per_minute(events: Events) -> list[tuple[Any, ...]]:
    """The reference's rows of SQL: (k, minute, count), in the view's order."""
    groups = ref.group(events, lambda e: True, ["k"], ref.tumble(MINUTE))
    return sorted((k, start, len(group)) for (start, k), group in groups.items())


SQL = "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n FROM s GROUP BY k, m"


@pytest.mark.parametrize("grace", [0, 30_000], ids=["grace=0", "grace=30s"])
def test_late_events_are_counted_kept_and_not_applied(ingest_path: IngestPath, grace: int) -> None:
    reg = registry(SQL, **({"grace": f"{grace}ms"} if grace else {}))  # none: 0
    watermark = T0 + 10 * MINUTE + 7_000
    edge = watermark - grace  # the exact edge: an event at it is on time, one ms before is late
    first = ingest_path.events([{"ts": watermark, "k": "a"}])
    second = ingest_path.events(
        [
            {"ts": edge - 1, "k": "a"},
            {"ts": edge, "k": "a"},
            {"ts": T0 + 11 * MINUTE, "k": "a"},  # moves the watermark for the next batch only
        ]
    )
    third = ingest_path.events([{"ts": T0, "k": "b"}] * 5)
    feed(reg, ingest_path, first, second, third)

    on_time, late = ref.judge_late([stamped(first), stamped(second), stamped(third)], grace)
    assert any(e["ts"] == edge for e in on_time)
    assert any(e["ts"] == edge - 1 for e in late)
    assert rows(reg) == per_minute(on_time)
    view = reg.views["v"]
    assert view.counter("late") == len(late)
    kept = view.late_events()  # keep=3: the newest three, the counter counts all
    assert [k["event"] for k in kept] == [{"ts": e["ts"], "k": e["k"]} for e in late[-3:]]
    assert [k["watermark"] for k in kept] == [T0 + 11 * MINUTE] * 3  # as it was before their batch
    assert [k["grace"] for k in kept] == [grace] * 3
    assert reg.sources["s"].watermarks[""] == T0 + 11 * MINUTE


def test_retention_drops_old_buckets_and_frees_groups(ingest_path: IngestPath) -> None:
    reg = registry(SQL, retention="5m", grace="1m")
    batches = [
        ingest_path.events([{"ts": T0 + m * MINUTE + 5, "k": f"k{m}"} for m in range(6)]),
        ingest_path.events([{"ts": T0 + m * MINUTE + 5, "k": f"k{m}"} for m in range(6, 10)]),
    ]
    feed(reg, ingest_path, *batches)
    fed = stamped([e for batch in batches for e in batch])
    watermark = max(e["_ts"] for e in fed)
    starts = ref.retained({e["_ts"] // MINUTE * MINUTE for e in fed}, MINUTE, watermark, 5 * MINUTE)
    assert starts == {T0 + m * MINUTE for m in range(4, 10)}  # the reference agrees with the README
    expected = per_minute([e for e in fed if e["_ts"] // MINUTE * MINUTE in starts])
    assert rows(reg) == expected
    stats = reg.views["v"].stats()
    assert stats["groups"] == len({k for k, _, _ in expected})  # expired keys are freed
    assert stats["buckets"] == len(starts)


def test_group_cap_folds_new_keys_into_other(ingest_path: IngestPath) -> None:
    reg = registry("SELECT k, count(*) AS n FROM s GROUP BY k", max_groups=3)
    batches = [
        ingest_path.events([{"ts": T0, "k": k} for k in "ab"]),  # within the cap
        ingest_path.events([{"ts": T0, "k": k} for k in "cdeabf"]),  # past it: d, e, f fold
        ingest_path.events([{"ts": T0, "k": k} for k in "abc"]),  # known keys only
        ingest_path.events([{"ts": T0, "k": k} for k in "zc"]),  # a new key, __other__ exists
    ]
    feed(reg, ingest_path, *batches)
    groups = ref.capped([e["k"] for batch in batches for e in batch], max_groups=3)
    assert rows(reg) == sorted(Counter(groups).items())
    view = reg.views["v"]
    assert view.counter("overflow") == groups.count(ref.OTHER)
    assert view.stats()["groups"] == 4  # three real groups and the one __other__
    # Which keys fold into __other__ depends on event order: the engine admits new keys in the
    # order they first appear, on columns as on rows, so every batch folds the same way.
    assert ingest_path.folds == [("v", ingest_path.name)] * 4


def test_hop_rows_and_rebucketing_refusal() -> None:
    # Hop windows take the row path only (views.columns.columnar): nothing to parametrize.
    reg = registry("SELECT hop(ts, '3 minutes', '1 minute') AS w, count(*) AS n FROM s GROUP BY w")
    reg.apply(Batch("s", [{"ts": 5 * MINUTE + 1}], 1))
    assert rows(reg) == [(3 * MINUTE, 1), (4 * MINUTE, 1), (5 * MINUTE, 1)]
    for bucket in (ALL, 6 * MINUTE):  # merging overlapping windows would count the event 3 times
        with pytest.raises(QueryError, match="hopping windows overlap"):
            rows(reg, bucket=bucket)
