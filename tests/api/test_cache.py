"""Cached answers: reused while the source is unchanged, never stale after a change."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cache import AnswerCache
from tests.helpers import BASE_TS, ndjson, running

CONFIG = """
[sources.orders]
time = "ts"

[sources.other]
time = "ts"

[views.by_country]
sql = "SELECT country, count(*) AS n, sum(amount) AS revenue FROM orders GROUP BY country"

[views.others]
sql = "SELECT count(*) AS n FROM other"
"""


def orders(n: int, country: str, amount: float = 2.5) -> bytes:
    return ndjson([{"ts": BASE_TS + i, "country": country, "amount": amount} for i in range(n)])


@pytest.mark.asyncio
async def test_answers_are_reused_until_their_source_changes(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, engine):
        await client.post("/v1/sources/orders/events", data=orders(3, "FR"))
        url = "/v1/views/by_country?country=FR"
        first = await (await client.get(url)).json()
        hits = engine.answers.hits
        again = await (await client.get(url)).json()
        assert again == first
        assert engine.answers.hits == hits + 1  # the second answer came from the cache
        # A batch on another source changes nothing here: still a hit.
        await client.post("/v1/sources/other/events", data=ndjson([{"ts": BASE_TS}]))
        await client.get(url)
        assert engine.answers.hits == hits + 2
        # A batch on this source: recomputed, with the new rows and the new position.
        await client.post("/v1/sources/orders/events", data=orders(2, "FR", 1.0))
        after = await (await client.get(url)).json()
        assert after["rows"] == [{"country": "FR", "n": 5, "revenue": 9.5}]
        assert after["freshness"]["position"] != first["freshness"]["position"]
        assert engine.answers.hits == hits + 2


@pytest.mark.asyncio
async def test_csv_and_json_of_one_query_are_cached_apart(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=orders(2, "DE"))
        as_json = await client.get("/v1/views/by_country")
        as_csv = await client.get("/v1/views/by_country?format=csv")
        again = await client.get("/v1/views/by_country?format=csv")
        assert as_json.content_type == "application/json"
        assert as_csv.content_type == again.content_type == "text/csv"
        assert await as_csv.text() == await again.text() == "country,n,revenue\nDE,2,5\n"
        assert again.headers["X-Tallyd-Position"] == as_csv.headers["X-Tallyd-Position"]


def test_the_cache_is_bounded_least_recently_used_out_first() -> None:
    cache = AnswerCache(max_bytes=800)
    for i in range(10):
        cache.put(("q", i), 1, b"x" * 100, {})
    assert cache.bytes <= 800
    assert cache.get(("q", 0), 1) is None  # the oldest went first
    assert cache.get(("q", 9), 1) is not None
    assert cache.get(("q", 9), 2) is None  # another version of the source: not this answer
    cache.put(("big",), 1, b"x" * 500, {})  # more than an eighth of the budget: not kept
    assert cache.get(("big",), 1) is None
