"""The dashboard page's own configuration, over real HTTP: per view, the embeds and the query it
offers answer, with the page's token; an embed token's page shows only what its filters apply to,
and the questions its components ask answer over one ``/v1/live`` stream with that token."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.api.test_live import next_event
from tests.api.test_live_many import AUTH_CONFIG, CONFIG, embed_token
from tests.helpers import minute_orders, running


def page_config(page: str) -> list[dict[str, Any]]:
    found = re.search(r'id="config" type="application/json">(.*?)</script>', page)
    assert found is not None
    return list(json.loads(found.group(1)))


@pytest.mark.asyncio
async def test_every_view_offers_embeds_and_a_query_that_answer(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 1.0)]))
        views = page_config(await (await client.get("/")).text())
        assert [v["name"] for v in views] == ["per_minute", "totals", "all_time"]
        charted = {v["name"]: (v["metric"], v["split_by"]) for v in views if v["chart"]}
        assert charted == {"per_minute": ("revenue", "country")}
        for view in views:
            assert view["token"] is None
            for url in (view["query"], view["table"], view["chart"], view["tile"]):
                if url is not None:
                    response = await client.get(url)
                    assert response.status == 200, (url, await response.text())


@pytest.mark.asyncio
async def test_an_embed_dashboard_shows_what_its_filters_apply_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = embed_token(monkeypatch, ["per_minute", "all_time"])
    async with running(AUTH_CONFIG, tmp_path) as (client, _):
        views = page_config(await (await client.get(f"/?token={token}")).text())
        # all_time has no country to filter by: refused to this token, so not on its page (one
        # refused subscription would refuse the page's whole stream).
        assert [v["name"] for v in views] == ["per_minute"]
        (view,) = views
        assert view["token"] == token  # what the page's components send
        # the questions its table and chart ask (tallyd.js), over one stream, with the token
        table = "/v1/views/per_minute/subscribe?limit=11&order_by=-minute"
        chart = "/v1/views/per_minute/subscribe?" + urlencode(
            {"metric": view["metric"], "split_by": "country", "top": 5, "kind": "series"}
        )
        live = "/v1/live?" + urlencode([("s", table), ("s", chart), ("token", token)])
        stream = await client.get(live)
        assert stream.status == 200, await stream.text()
        firsts = [await next_event(stream.content) for _ in range(2)]
        stream.close()
        assert [f["event"] for f in firsts] == ["answer", "answer"]
        assert "rows" in firsts[0]["data"]["data"]
        assert firsts[1]["data"]["data"]["metric"] == view["metric"]
