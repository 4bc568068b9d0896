"""The descriptive endpoints: views, sources, late events, readiness."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.helpers import BASE_TS, running

CONFIG = """
[sources.orders]
time = "ts"

[views.per_minute]
sql = '''SELECT country AS c, tumble(ts, '1 minute') AS minute, count(*) AS n,
         p95(amount) AS p95 FROM orders GROUP BY c, minute'''
retention = "1h"
grace = "10s"
description = "orders per minute"

[views.hopping]
sql = "SELECT hop(ts, '10m', '5m') AS w, sum(amount) AS s FROM orders GROUP BY w"
"""


@pytest.mark.asyncio
async def test_views_sources_and_late(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        ready = await (await client.get("/readyz")).json()
        assert ready["status"] == "ready"
        assert (await client.get("/healthz")).status == 200
        events = [
            {"ts": BASE_TS, "country": "FR", "amount": 2},
            {"ts": BASE_TS - 60_000, "country": "DE", "amount": 1},
        ]
        for event in events:  # the second is 60 s behind a watermark with 10 s of grace
            await client.post("/v1/sources/orders/events", data=orjson.dumps(event))
        views = {v["name"]: v for v in (await (await client.get("/v1/views")).json())["views"]}
        minute = views["per_minute"]
        assert minute["keys"] == ["c"]
        assert minute["description"] == "orders per minute"
        assert [(c["name"], c["type"], c["role"]) for c in minute["columns"]] == [
            ("c", "scalar", "key"),
            ("minute", "timestamp", "window"),
            ("n", "int", "aggregate"),
            ("p95", "float", "aggregate"),
        ]
        assert minute["window"] == {
            "column": "minute",
            "kind": "tumble",
            "size": "1m",
            "size_ms": 60_000,
            "slide": "1m",
            "slide_ms": 60_000,
        }
        assert (minute["retention"], minute["grace"]) == ("1h", "10s")
        assert minute["stats"] == {
            "groups": 1,
            "buckets": 1,
            "parts": 1,
            "pairs": 1,
            "applied": 1,
            "late": 1,
            "overflow": 0,
            "unmatched": 0,
            "out_of_range": 0,
        }
        assert views["hopping"]["window"]["kind"] == "hop"
        late = await (await client.get("/v1/views/per_minute/late")).json()
        assert late["late"] == 1
        assert late["events"][0]["event"]["country"] == "DE"
        sources = (await (await client.get("/v1/sources")).json())["sources"]
        assert sources[0]["name"] == "orders"
        assert sources[0]["fields"] == {"amount": "number", "country": "scalar"}
        assert sources[0]["accepted"] == 2
        assert sources[0]["views"] == ["per_minute", "hopping"]
        assert sources[0]["freshness"]["watermark_ms"] == BASE_TS
        assert sources[0]["freshness"]["position"] == "wal:2"
