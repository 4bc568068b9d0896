"""The series endpoint over HTTP: parameters, CSV, filters, and answers that follow new events."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import HOUR_T0, MINUTE_CONFIG, minute_orders, running


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
