"""``tallyd bench run query --auto``: a query mix derived from the server's own views — every
derived query answers 200, the mix covers each kind of question, and saved it is a scenario file
the suite loads as it is."""

from __future__ import annotations

import random
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from api.demo import EXAMPLE
from api.shop import order
from benchmarks import auto, load
from tests.helpers import running


@pytest.mark.asyncio
async def test_every_derived_query_answers_and_the_mix_runs(tmp_path: Path) -> None:
    # overlapping windows: its rollup cannot fold time away (found on the flights views)
    hop = '''
[views.rolling]
sql = """SELECT country, hop(ts, '10 minutes', '1 minute') AS w, sum(amount) AS revenue
         FROM orders GROUP BY country, w"""
'''
    async with running(EXAMPLE.read_text() + hop, tmp_path / "data") as (client, _):
        rng, now = random.Random(3), int(time.time() * 1000)
        body = b"\n".join(orjson.dumps(order(rng, now - 1_000 * i)) for i in range(300))
        assert (await client.post("/v1/sources/orders/events", data=body)).status == 200
        url = str(client.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as session:
            query = await auto.derive(session, url)
            kinds = {t["kind"].split()[0] for t in query["templates"]}
            assert kinds == {"point", "top", "rollup", "series", "csv"}
            assert len(query["params"]["order_status__status"]) >= 2  # sampled from its rows
            times = load._times(random.Random(1))
            for template in query["templates"]:  # each one, with each value it may take
                names = [p for p in query["params"] if "{" + p + "}" in template["path"]]
                for value in query["params"][names[0]] if names else [None]:
                    path = template["path"].format(**times, **({names[0]: value} if names else {}))
                    async with session.get(url + path) as r:
                        assert r.status == 200, (path, await r.text())
        saved = tmp_path / "mine.toml"
        scenario = {"name": "mine", "duration": "500ms", "connections": 4}
        saved.write_text(auto.toml({**scenario, "query": {"rate": 60, **query}}))
        loaded = load.Scenario.load(saved)
        assert [t["path"] for t in loaded.raw["query"]["templates"]] == [
            t["path"] for t in query["templates"]
        ]
        assert loaded.raw["query"]["params"] == query["params"]
        result = await load.run(loaded, url)
    assert result["streams"]["query"]["statuses"] == {"200": 30}
