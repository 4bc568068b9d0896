"""Series answers against a plain-Python reference: bucketing, gaps, top/other, a DST day."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from views.config import parse
from views.registry import Batch, Registry
from views.series import SeriesError, SeriesQuery, series

HOUR = 3_600_000
DAY = 24 * HOUR
SQL = """SELECT country, tumble(ts, '15 minutes') AS q, count(*) AS n, sum(amount) AS revenue,
    avg(amount) AS mean, max(amount) AS biggest, top_k(country, 2) AS top
    FROM s GROUP BY country, q"""
COUNTRIES = ["US", "DE", "FR", "GB", "JP", "BR", None]
# Europe/Paris moves to summer time on Sunday 2026-03-29 (02:00 -> 03:00): a 23-hour day.
START = int(datetime(2026, 3, 27, 20, 0, tzinfo=UTC).timestamp() * 1000)


def build(
    seed: int = 1, n: int = 4000, gap: tuple[int, int] | None = None
) -> tuple[Registry, list[dict[str, Any]]]:
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        ts = START + rng.randrange(4 * DAY)
        if gap is not None and gap[0] <= ts < gap[1]:
            continue
        events.append(
            {
                "ts": ts,
                "country": COUNTRIES[min(int(rng.expovariate(0.5)), len(COUNTRIES) - 1)],
                "amount": round(rng.uniform(1, 100), 2) if rng.random() > 0.05 else None,
            }
        )
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": SQL}}})
    registry = Registry(config.sources, config.views)
    registry.apply(Batch("s", [dict(e) for e in events], 1))
    return registry, events


def metric_of(name: str, rows: list[dict[str, Any]]) -> Any:
    amounts = [r["amount"] for r in rows if r["amount"] is not None]
    if name == "n":
        return len(rows)
    if name == "revenue":
        return math.fsum(amounts) if amounts else None
    if name == "mean":
        return math.fsum(amounts) / len(amounts) if amounts else None
    return max(amounts) if amounts else None


def reference(
    events: list[dict[str, Any]], metric: str, bucket_of: Any, split: bool
) -> dict[str, dict[int, Any]]:
    grouped: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for e in events:
        name = ("null" if e["country"] is None else e["country"]) if split else metric
        grouped[name][bucket_of(e["ts"])].append(e)
    return {
        n: {b: metric_of(metric, rows) for b, rows in per.items()} for n, per in grouped.items()
    }


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


@pytest.mark.parametrize("metric", ["n", "revenue", "mean", "biggest"])
@pytest.mark.parametrize("bucket", [15 * 60_000, HOUR, 6 * HOUR])
def test_utc_buckets_equal_the_reference(metric: str, bucket: int) -> None:
    registry, events = build()
    q = SeriesQuery(metric, START, START + 4 * DAY, bucket=bucket, split_by="country")
    answer = series(registry.views["v"], q)
    expected = reference(events, metric, lambda ts: ts - ts % bucket, split=True)
    assert answer.x == list(range(START - START % bucket, START + 4 * DAY, bucket))
    assert {s["name"] for s in answer.series} == set(expected)
    for s in answer.series:
        for x, value in zip(answer.x, s["values"], strict=True):
            assert close(value, expected[s["name"]].get(x)), (s["name"], x)


@pytest.mark.parametrize("fill", ["null", "zero", "previous"])
def test_gaps_are_filled_as_asked(fill: str) -> None:
    gap = (START + DAY, START + DAY + 5 * HOUR)  # five empty hours
    registry, events = build(gap=gap)
    q = SeriesQuery("n", START, START + 2 * DAY, bucket=HOUR, fill=fill)  # type: ignore[arg-type]
    (only,) = series(registry.views["v"], q).series
    expected = reference(events, "n", lambda ts: ts - ts % HOUR, split=False)["n"]
    previous = None
    for x, value in zip(range(START, START + 2 * DAY, HOUR), only["values"], strict=True):
        if x in expected:
            assert value == expected[x]
            previous = value
        else:
            assert gap[0] <= x < gap[1]
            assert value == {"null": None, "zero": 0, "previous": previous}[fill]


@pytest.mark.parametrize("metric", ["n", "revenue", "mean"])
def test_top_keeps_the_largest_series_and_folds_the_rest_into_other(metric: str) -> None:
    registry, events = build(seed=3)
    q = SeriesQuery(metric, START, START + 4 * DAY, bucket=6 * HOUR, split_by="country", top=3)
    answer = series(registry.views["v"], q)
    totals = reference(events, metric, lambda ts: 0, split=True)
    ranked = sorted(totals, key=lambda n: (totals[n][0] is None, -(totals[n][0] or 0), n))
    names = [s["name"] for s in answer.series]
    assert names == [*ranked[:3], "other"]
    folded = [e for e in events if ("null" if e["country"] is None else e["country"]) in ranked[3:]]
    other = reference(folded, metric, lambda ts: ts - ts % (6 * HOUR), split=False)[metric]
    for x, value in zip(answer.x, answer.series[-1]["values"], strict=True):
        assert close(value, other.get(x))


def test_day_buckets_follow_local_midnights_across_a_dst_change() -> None:
    registry, events = build(seed=5)
    paris = ZoneInfo("Europe/Paris")

    def local_day(ts: int) -> int:
        day = datetime.fromtimestamp(ts / 1000, paris).date()
        return int(datetime(day.year, day.month, day.day, tzinfo=paris).timestamp() * 1000)

    q = SeriesQuery("revenue", START, START + 4 * DAY, bucket=DAY, tz="Europe/Paris")
    answer = series(registry.views["v"], q)
    lengths = [b - a for a, b in zip(answer.x, answer.x[1:], strict=False)]
    assert 23 * HOUR in lengths  # Sunday 29 March 2026 in Paris
    expected = reference(events, "revenue", local_day, split=False)["revenue"]
    first = datetime.fromtimestamp(START / 1000, paris).date()
    midnights = [local_day(START)] + [
        int(datetime.combine(first + timedelta(days=i), time(), paris).timestamp() * 1000)
        for i in range(1, 6)
    ]
    assert answer.x == [m for m in midnights if m < START + 4 * DAY]
    for x, value in zip(answer.x, answer.series[0]["values"], strict=True):
        assert close(value, expected.get(x)), datetime.fromtimestamp(x / 1000, paris)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        (SeriesQuery("nope", START, START + DAY), "metric"),
        (SeriesQuery("top", START, START + DAY), "metric"),
        (SeriesQuery("n", START, START + DAY, bucket=20 * 60_000), "bucket"),
        (SeriesQuery("n", START, START + DAY, split_by="amount"), "split_by"),
        (SeriesQuery("n", START, START + DAY, tz="Mars/Olympus"), "tz"),
        (SeriesQuery("n", START, START - 1), "to"),
        (SeriesQuery("n", START, START + 400 * DAY, max_points=1000), "bucket"),
        (SeriesQuery("n", START, START + 4 * DAY, split_by="country", max_points=100), "bucket"),
    ],
)
def test_requests_that_cannot_be_answered_name_the_parameter(
    query: SeriesQuery, param: str
) -> None:
    registry, _ = build(n=200)
    with pytest.raises(SeriesError) as caught:
        series(registry.views["v"], query)
    assert caught.value.param == param
