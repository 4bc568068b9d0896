"""The series endpoint over HTTP: parameters, CSV, filters, and answers that follow new events."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.live import diff_series
from tests.helpers import HOUR_T0, MINUTE_CONFIG, minute_events, minute_orders, ndjson, running
from views.timefmt import format_time


@pytest.mark.asyncio
async def test_series_json_csv_filters_and_freshness(tmp_path: Path) -> None:
    async with running(MINUTE_CONFIG, tmp_path) as (client, _):
        await client.post(
            "/v1/sources/orders/events",
            data=minute_orders([(0, "FR", 1.5), (0, "DE", 2.0), (2, "FR", 3.0), (3, "US", 4.0)]),
        )
        base = f"/v1/views/per_minute/series?from={HOUR_T0}&to={HOUR_T0 + 4 * 60_000}"
        answer = await (
            await client.get(base + "&metric=revenue&split_by=country&fill=zero")
        ).json()
        assert answer["x"] == [HOUR_T0 + i * 60_000 for i in range(4)]
        assert answer["series"] == [
            {"name": "DE", "values": [2, 0, 0, 0]},
            {"name": "FR", "values": [1.5, 0, 3, 0]},
            {"name": "US", "values": [0, 0, 0, 4]},
        ]
        assert answer["freshness"]["position"] == "wal:1"
        only_fr = await (await client.get(base + "&metric=n&country=FR&bucket=2m")).json()
        assert only_fr["series"] == [{"name": "n", "values": [1, 1]}]
        top = await (await client.get(base + "&metric=n&split_by=country&top=1&bucket=4m")).json()
        assert top["series"] == [{"name": "FR", "values": [2]}, {"name": "other", "values": [2]}]
        csv = await client.get(base + "&metric=n&split_by=country&format=csv")
        assert csv.content_type == "text/csv"
        lines = (await csv.text()).splitlines()
        assert lines[0] == "time,DE,FR,US"
        assert lines[1].endswith(",1,1,")
        assert lines[1].startswith("20")
        # A new batch changes the answer (no stale cache), and its position.
        await client.post("/v1/sources/orders/events", data=minute_orders([(1, "FR", 10.0)]))
        again = await (await client.get(base + "&metric=revenue&split_by=country&fill=zero")).json()
        assert again["series"][1] == {"name": "FR", "values": [1.5, 10, 3, 0]}
        assert again["freshness"]["position"] == "wal:2"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("", "metric"),
        ("metric=nope", "metric"),
        ("metric=n&bucket=90s", "bucket"),
        ("metric=n&bucket=all", "bucket"),
        ("metric=n&fill=linear", "fill"),
        ("metric=n&top=0", "top"),
        ("metric=n&tz=Nowhere/City&bucket=1d", "tz"),
        ("metric=n&split_by=minute", "split_by"),
        ("metric=n&format=ndjson", "format"),
        ("metric=n&colour=red", "colour"),
        (f"metric=n&from={HOUR_T0}&to={HOUR_T0 + 86_400_000 * 30}", "bucket"),
    ],
)
async def test_bad_series_requests_are_400_naming_the_parameter(
    tmp_path: Path, query: str, param: str
) -> None:
    async with running(MINUTE_CONFIG, tmp_path, max_series_points=1000) as (client, engine):
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 1.0)]))
        before = engine.registry.version
        response = await client.get(f"/v1/views/per_minute/series?{query}")
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["param"] == param, error
        assert engine.registry.version == before


HOP_CONFIG = """
[sources.orders]
time = "ts"

[views.rolling]
sql = '''SELECT hop(ts, '10 minutes', '1 minute') AS w, count(*) AS n, sum(x) AS x
         FROM orders GROUP BY w'''
grace = "1h"
"""


@pytest.mark.asyncio
async def test_a_hop_series_gives_each_window_once_never_overlaps_merged(tmp_path: Path) -> None:
    """Each point of a hop view's series is the window starting there, [x, x + 10 min): before,
    the default bucket (the window size) merged the ten overlapping windows of each bucket."""
    events = [{"ts": HOUR_T0 + m * 60_000 + 5, "x": 1.0} for m in range(30)]
    async with running(HOP_CONFIG, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=ndjson(events))
        start, end = HOUR_T0, HOUR_T0 + 40 * 60_000
        url = f"/v1/views/rolling/series?metric=n&from={start}&to={end}&fill=zero"
        answer = await (await client.get(url)).json()
        assert answer["x"] == list(range(start, end, 60_000))
        expected = [
            sum(1 for e in events if x <= e["ts"] < x + 600_000) for x in answer["x"]
        ]  # the plain definition of a hopping window
        assert answer["series"] == [{"name": "n", "values": expected}]
        assert max(expected) == 10
        merged = await client.get(url + "&bucket=10m")
        assert merged.status == 400
        assert "overlap" in (await merged.json())["error"]["message"]


@pytest.mark.asyncio
async def test_the_default_range_stays_within_max_time_range(tmp_path: Path) -> None:
    """A weekly series with no range asked, by default, for 60 weeks — past the server's own
    366-day max_time_range, a 400 for a request the caller never made wide."""
    async with running(MINUTE_CONFIG, tmp_path) as (client, _):
        # data from 400 days back (posted first: not late), so the default range is clamped
        # by max_time_range, not by where the data begins
        old = {"ts": HOUR_T0 - 400 * 86_400_000, "country": "FR", "amount": 1.0}
        await client.post("/v1/sources/orders/events", data=ndjson([old]))
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 1.0)]))
        answer = await client.get("/v1/views/per_minute/series?metric=n&bucket=7d")
        body = await answer.json()
        assert answer.status == 200, body
        assert len(body["x"]) == 366 // 7  # as many whole weeks as max_time_range allows
        assert body["series"][0]["values"][-1] == 1  # and the newest holds the event
        explicit = await client.get(
            f"/v1/views/per_minute/series?metric=n&bucket=7d&from=0&to={HOUR_T0}"
        )
        assert explicit.status == 400  # an explicit range is the caller's to fix


GRACE_CONFIG = MINUTE_CONFIG.replace('grace = "1h"', 'grace = "90s"')


@pytest.mark.asyncio
async def test_complete_until_is_the_late_edge_and_buckets_before_it_no_longer_change(
    tmp_path: Path,
) -> None:
    """``complete_until`` = watermark - grace (the watermark: the newest event time an HTTP
    source has applied). An event just before it is late and changes nothing; one at it is
    counted, in a bucket that ends after it: the buckets ending at or before it are final."""
    async with running(GRACE_CONFIG, tmp_path) as (client, _):
        series = f"/v1/views/per_minute/series?metric=n&from={HOUR_T0}&to={HOUR_T0 + 10 * 60_000}"
        empty = await (await client.get(series)).json()
        assert (empty["complete_until"], empty["complete_until_ms"]) == (None, None)
        events = minute_events([(0, "FR", 1.0), (3, "DE", 2.0), (6, "FR", 3.0), (5, "US", 1.0)])
        await client.post("/v1/sources/orders/events", data=ndjson(events))
        answer = await (await client.get(series)).json()
        expected = max(e["ts"] for e in events) - 90_000  # the reference: watermark - grace
        assert answer["complete_until_ms"] == expected
        assert answer["complete_until"] == format_time(expected)
        final = [i for i, x in enumerate(answer["x"]) if x + answer["bucket_ms"] <= expected]
        assert final == [0, 1, 2, 3]  # minutes 0-3 end by 6:00.001 - 1:30
        late = {"ts": expected - 1, "country": "FR", "amount": 1.0}
        edge = {"ts": expected, "country": "FR", "amount": 1.0}
        for event in (late, edge):
            await client.post("/v1/sources/orders/events", data=ndjson([event]))
        after = await (await client.get(series)).json()
        status = await (await client.get("/v1/status")).json()
        assert status["views"]["per_minute"]["late"] == 1  # the event before the edge
        (before_n,), (after_n,) = ([s["values"] for s in a["series"]] for a in (answer, after))
        assert [after_n[i] for i in final] == [before_n[i] for i in final]  # final: unchanged
        changed = [i for i, (b, a) in enumerate(zip(before_n, after_n, strict=True)) if b != a]
        assert [answer["x"][i] + answer["bucket_ms"] > expected for i in changed] == [True]


def test_a_live_series_change_carries_complete_until() -> None:
    old = {"x": [0, 60], "series": [{"name": "n", "values": [1, 2]}], "complete_until_ms": 30}
    new = {**old, "series": [{"name": "n", "values": [1, 3]}], "complete_until_ms": 60}
    new["complete_until"] = format_time(60)
    change = diff_series(old, new)
    assert change is not None
    assert (change["points"], change["complete_until_ms"]) == ([["n", 60, 3]], 60)
    moved_only = {**old, "complete_until_ms": 90, "complete_until": format_time(90)}
    assert diff_series(old, moved_only) == {
        "complete_until": format_time(90),
        "complete_until_ms": 90,
    }
    assert diff_series(old, {**old, "complete_until": format_time(30)}) is None


@pytest.mark.asyncio
async def test_the_default_range_starts_at_the_first_data(tmp_path: Path) -> None:
    """A fresh view's chart is not 60 buckets of mostly empty space: with no range asked, the
    series starts at the view's oldest bucket, and grows to 60 buckets as data comes."""
    async with running(MINUTE_CONFIG, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=minute_orders([(3, "FR", 1.0)]))
        await client.post("/v1/sources/orders/events", data=minute_orders([(7, "DE", 1.0)]))
        body = await (await client.get("/v1/views/per_minute/series?metric=n")).json()
        assert body["x"] == [HOUR_T0 + m * 60_000 for m in range(3, 8)]  # minutes 3 to 7
        assert body["series"] == [{"name": "n", "values": [1, None, None, None, 1]}]
        hourly = await (await client.get("/v1/views/per_minute/series?metric=n&bucket=1h")).json()
        assert hourly["x"] == [HOUR_T0]  # the first bucket is the one holding the first data
        far = minute_orders([(3 + 70, "FR", 1.0)])  # 70 minutes on: 60 buckets, the last 60
        await client.post("/v1/sources/orders/events", data=far)
        body = await (await client.get("/v1/views/per_minute/series?metric=n")).json()
        assert body["x"] == [HOUR_T0 + m * 60_000 for m in range(14, 74)]
