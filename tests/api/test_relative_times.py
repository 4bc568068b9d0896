"""``from=-1h``: a range counted back from the source's watermark, for queries, series and live
subscriptions (issue 19: a ranking or a KPI of "the last hour" that stays the last hour)."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import BASE_TS, ndjson, running
from views.timefmt import format_time

CONFIG = """
[sources.orders]
time = "ts"
fields = { shop = "string", amount = "number" }

[views.per_shop]
sql = '''SELECT shop, tumble(ts, '1 minute') AS minute, count(*) AS n, sum(amount) AS revenue
         FROM orders GROUP BY shop, minute'''
"""
MINUTE = 60_000
T0 = BASE_TS - BASE_TS % MINUTE


def events(seed: int, minutes: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"ts": T0 + rng.randrange(minutes * MINUTE), "shop": rng.choice("abcde"),
         "amount": rng.randrange(1, 500)}
        for _ in range(600)
    ]  # fmt: skip


def ranking(rows: list[dict[str, Any]], since: int) -> list[tuple[str, int]]:
    """Plain Python: revenue per shop of the windows starting at or after ``since``."""
    total: dict[str, int] = defaultdict(int)
    for e in rows:
        if e["ts"] - e["ts"] % MINUTE >= since:
            total[e["shop"]] += e["amount"]
    return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))


@pytest.mark.asyncio
async def test_a_relative_range_counts_back_from_the_watermark(tmp_path: Path) -> None:
    sent = events(1, 20)
    async with running(CONFIG, tmp_path) as (client, _):
        response = await client.post("/v1/sources/orders/events", data=ndjson(sent))
        assert response.status == 200, await response.text()
        watermark = max(e["ts"] for e in sent)
        query = "group_by=shop&bucket=all&order_by=-revenue&limit=10"
        answer = await (await client.get(f"/v1/views/per_shop?{query}&from=-5m")).json()
        got = [(r["shop"], r["revenue"]) for r in answer["rows"]]
        assert got == ranking(sent, watermark - 5 * MINUTE)
        # the same as the absolute range it stands for
        absolute = await client.get(
            f"/v1/views/per_shop?{query}&from={format_time(watermark - 5 * MINUTE)}"
        )
        assert (await absolute.json())["rows"] == answer["rows"]
        series = await (await client.get("/v1/views/per_shop/series?metric=n&from=-3m")).json()
        first = watermark - 3 * MINUTE
        assert series["x"][0] == first - first % MINUTE  # the bucket holding from
        # a later event moves it: the range follows the data, not the request's moment
        later = {"ts": watermark + 10 * MINUTE, "shop": "z", "amount": 1}
        await client.post("/v1/sources/orders/events", data=ndjson([later]))
        moved = await (await client.get(f"/v1/views/per_shop?{query}&from=-5m")).json()
        assert [(r["shop"], r["revenue"]) for r in moved["rows"]] == [("z", 1)]


@pytest.mark.asyncio
async def test_a_live_ranking_of_the_last_minutes_drops_what_fell_out(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        first = [{"ts": T0 + 5_000, "shop": "a", "amount": 7}]
        await client.post("/v1/sources/orders/events", data=ndjson(first))
        path = "/v1/views/per_shop/subscribe?group_by=shop&bucket=all&from=-2m&interval=100ms"
        async with client.get(path) as stream:
            answer = await _next(stream)
            assert [(r["shop"], r["revenue"]) for r in answer["rows"]] == [("a", 7)]
            later = [{"ts": T0 + 10 * MINUTE, "shop": "b", "amount": 3}]
            await client.post("/v1/sources/orders/events", data=ndjson(later))
            change = await _next(stream)
            assert [r["shop"] for r in change["upsert"]] == ["b"]
            assert change["delete"] == [{"shop": "a"}]  # ten minutes on: out of the last two


async def _next(stream: Any) -> dict[str, Any]:
    while True:
        line = await stream.content.readline()
        assert line, "the stream ended"
        if line.startswith(b"data: "):
            return dict(orjson.loads(line[6:]))


@pytest.mark.asyncio
@pytest.mark.parametrize("value", ["-soon", "-0s", "-1 month"])
async def test_a_bad_relative_time_names_the_parameter(tmp_path: Path, value: str) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        response = await client.get("/v1/views/per_shop", params={"from": value})
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["param"] == "from"
        assert "-1h" in error["message"]


@pytest.mark.asyncio
async def test_the_pages_of_a_relative_range_read_the_range_of_the_first(tmp_path: Path) -> None:
    """A cursor keeps the watermark its first page counted back from: an event that moves the
    watermark ten minutes between pages does not move the range under the reader."""
    sent = events(3, 20)
    async with running(CONFIG, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=ndjson(sent))
        watermark = max(e["ts"] for e in sent)
        query = "group_by=shop&bucket=all&order_by=-revenue&from=-5m&limit=2"
        first = await (await client.get(f"/v1/views/per_shop?{query}")).json()
        later = {"ts": watermark + 10 * MINUTE, "shop": "z", "amount": 1}
        await client.post("/v1/sources/orders/events", data=ndjson([later]))
        rows = first["rows"]
        cursor = first["next_cursor"]
        while cursor is not None:
            page = await (await client.get(f"/v1/views/per_shop?{query}&cursor={cursor}")).json()
            rows += page["rows"]
            cursor = page["next_cursor"]
        # the same range: its shops, and the later event inside it, last by revenue (pages are
        # offsets: a row may shift between them) — not the moved range's one row, from page 2
        expected = [*ranking(sent, watermark - 5 * MINUTE), ("z", 1)]
        assert [(r["shop"], r["revenue"]) for r in rows] == expected
        # a first page asked now counts from the new watermark: only the later event
        fresh = await (await client.get(f"/v1/views/per_shop?{query}")).json()
        assert [(r["shop"], r["revenue"]) for r in fresh["rows"]] == [("z", 1)]
