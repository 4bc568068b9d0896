"""The dashboard page's own configuration, over real HTTP: one ``/v1/live`` URL that its token
may open and that answers every table and chart it shows; what does not fit is read once."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_live import next_event
from tests.api.test_live_many import AUTH_CONFIG, CONFIG, embed_token
from tests.helpers import minute_orders, running


def page_parts(page: str) -> tuple[list[dict[str, Any]], str | None]:
    def element(name: str) -> Any:
        found = re.search(rf'id="{name}" type="application/json">(.*?)</script>', page)
        assert found is not None, name
        return json.loads(found.group(1))

    return element("config"), element("live")


async def answers(client: Any, live: str, count: int) -> list[dict[str, Any]]:
    stream = await client.get(live)
    assert stream.status == 200, await stream.text()
    firsts = [await next_event(stream.content) for _ in range(count)]
    stream.close()
    return firsts


@pytest.mark.asyncio
async def test_one_stream_answers_every_table_and_chart(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 1.0)]))
        views, live = page_parts(await (await client.get("/")).text())
        assert [v["name"] for v in views] == ["per_minute", "totals", "all_time"]
        assert [v["live"] for v in views] == [
            {"table": 0, "chart": 1},
            {"table": 2, "chart": None},
            {"table": 3, "chart": None},
        ]
        assert live is not None
        firsts = await answers(client, live, 4)
        assert [f["data"]["s"] for f in firsts] == [0, 1, 2, 3]
        assert firsts[1]["data"]["data"]["metric"] == "revenue"
        assert len(firsts[0]["data"]["data"]["rows"]) == 1


@pytest.mark.asyncio
async def test_past_the_stream_limit_a_view_is_read_once(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path, max_live_subscriptions=2) as (client, _):
        views, live = page_parts(await (await client.get("/")).text())
        assert [v["live"] for v in views] == [
            {"table": 0, "chart": 1},
            {"table": None, "chart": None},
            {"table": None, "chart": None},
        ]
        assert live is not None
        assert live.count("s=") == 2
        for view in views[1:]:
            assert (await client.get(view["rows"])).status == 200


@pytest.mark.asyncio
async def test_an_embed_dashboard_shows_what_its_filters_apply_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = embed_token(monkeypatch, ["per_minute", "all_time"])
    async with running(AUTH_CONFIG, tmp_path) as (client, _):
        views, live = page_parts(await (await client.get(f"/?token={token}")).text())
        # all_time has no country to filter by: refused to this token, so not on its page (one
        # refused subscription would refuse the page's whole stream).
        assert [v["name"] for v in views] == ["per_minute"]
        assert live is not None
        assert live.endswith(f"&token={token}")
        firsts = await answers(client, live, 2)
        assert [f["event"] for f in firsts] == ["answer", "answer"]
