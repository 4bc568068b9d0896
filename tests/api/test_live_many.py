"""``GET /v1/live``: several subscriptions over one SSE stream, over real HTTP — each answered,
each change routed to its subscription, each resumed by Last-Event-ID, each authorized as its own
``/subscribe`` would be, and a bad one refused before streaming, by its index."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from api.auth import mint_embed, new_token
from tests.api.test_live import next_event
from tests.helpers import MINUTE_CONFIG, minute_orders, running, until

VIEWS = """
[views.totals]
sql = "SELECT country, count(*) AS n FROM orders GROUP BY country"

[views.all_time]
sql = "SELECT count(*) AS n FROM orders"
"""
CONFIG = MINUTE_CONFIG + VIEWS
PER_MINUTE = "/v1/views/per_minute/subscribe?interval=100ms"
SERIES = "/v1/views/per_minute/subscribe?kind=series&metric=revenue&split_by=country&interval=100ms"
TOTALS = "/v1/views/totals/subscribe?interval=100ms"
BOUNDED = aiohttp.ClientTimeout(total=10)
KEYS = {
    "per_minute": ("minute", "country"),  # the default order: window, then keys
    "totals": ("country",),
    "all_time": (),
}


def live(*subscriptions: str) -> str:
    return "/v1/live?" + urlencode([("s", s) for s in subscriptions])


def endpoint(subscription: str) -> str:
    """The JSON endpoint answering the same question as ``subscription``."""
    path, _, query = subscription.partition("?")
    params = [p for p in query.split("&") if not p.startswith(("interval=", "kind="))]
    base = path.removesuffix("/subscribe") + ("/series" if "kind=series" in query else "")
    return base + "?" + "&".join(params)


def patched(state: dict[str, Any], event: dict[str, Any], view: str) -> dict[str, Any]:
    """A subscription's answer after one message (a full answer, or a change applied to it)."""
    data = event["data"]["data"]
    if event["event"] == "answer":
        return dict(data)
    if "rows" in state:
        keys = KEYS[view]
        rows = {tuple(r[k] for k in keys): r for r in state["rows"]}
        for gone in data["delete"]:
            del rows[tuple(gone[k] for k in keys)]
        rows |= {tuple(r[k] for k in keys): r for r in data["upsert"]}
        return {**state, "rows": sorted(rows.values(), key=lambda r: [str(r[k]) for k in keys])}
    x = data.get("x", state["x"])
    values = {s["name"]: dict(zip(state["x"], s["values"], strict=True)) for s in state["series"]}
    for name, at, value in data.get("points", []):
        values.setdefault(name, {})[at] = value
    for name in data.get("removed", []):
        del values[name]
    series = [{"name": n, "values": [v.get(t) for t in x]} for n, v in sorted(values.items())]
    return {**state, "x": x, "series": series}


def view_of(subscription: str) -> str:
    return subscription.split("/")[3]


async def current(client: Any, subscriptions: list[str]) -> list[Any]:
    answers = [await (await client.get(endpoint(s))).json() for s in subscriptions]
    return [{k: a[k] for k in ("rows", "x", "series") if k in a} for a in answers]


def shown(states: list[dict[str, Any]]) -> list[Any]:
    return [{k: s[k] for k in ("rows", "x", "series") if k in s} for s in states]


async def follow(
    client: Any, stream: Any, subs: list[str], states: list[Any], seen: list[int]
) -> str:
    """Read messages until every subscription's state is the JSON endpoints' answer; count the
    messages per subscription in ``seen``; return the last message's id."""
    last = ""
    for _ in range(100):
        if shown(states) == await current(client, subs):
            return last
        event = await next_event(stream.content)
        index = event["data"]["s"]
        states[index] = patched(states[index], event, view_of(subs[index]))
        seen[index] += 1
        last = event["id"]
    raise AssertionError(f"never caught up: {shown(states)}")


async def settled(engine: Any) -> bool:
    version = engine.registry.sources["orders"].version
    return all(t.answered_at == version for t in engine.hub.topics.values())


@pytest.mark.asyncio
async def test_answers_then_changes_each_for_its_subscription(tmp_path: Path) -> None:
    subs = [PER_MINUTE, SERIES, TOTALS, PER_MINUTE, f"{PER_MINUTE}&country=DE"]
    async with running(CONFIG, tmp_path) as (client, engine):
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 1.0)]))
        stream = await client.get(live(*subs))
        assert stream.status == 200, await stream.text()
        assert stream.headers["Content-Type"] == "text/event-stream"
        firsts = [await next_event(stream.content) for _ in subs]
        assert [(f["event"], f["data"]["s"]) for f in firsts] == [("answer", i) for i in range(5)]
        states = [f["data"]["data"] for f in firsts]
        assert shown(states) == await current(client, subs)
        assert states[0]["freshness"]["position"] == "wal:1"
        # Its id lists every subscription's last id; a question asked twice is one topic.
        ids = firsts[-1]["id"].split(",")
        assert len(ids) == 5
        assert all(ids)
        assert len(engine.hub.topics) == 4

        seen = [0] * len(subs)
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 2.0)]))
        await until(lambda: settled(engine), timeout=10)
        await follow(client, stream, subs, states, seen)
        assert seen == [1, 1, 1, 1, 0]  # no DE row changed: nothing for the DE subscription
        await client.post("/v1/sources/orders/events", data=minute_orders([(1, "DE", 5.0)]))
        await until(lambda: settled(engine), timeout=10)
        await follow(client, stream, subs, states, seen)
        assert seen == [2, 2, 2, 2, 1]
        assert [r["country"] for r in states[4]["rows"]] == ["DE"]
        stream.close()


@pytest.mark.asyncio
async def test_last_event_id_resumes_each_subscription(tmp_path: Path) -> None:
    subs = [PER_MINUTE, TOTALS, SERIES]
    async with running(CONFIG, tmp_path) as (client, engine):
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 1.0)]))
        stream = await client.get(live(*subs))
        states = [(await next_event(stream.content))["data"]["data"] for _ in subs]
        last = await follow(client, stream, subs, states, [0] * 3)
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 2.0)]))
        await until(lambda: settled(engine), timeout=10)
        last = await follow(client, stream, subs, states, [0] * 3)
        stream.close()
        for minute, country in ((1, "DE"), (2, "US")):  # two changes each, missed while away
            await client.post(
                "/v1/sources/orders/events", data=minute_orders([(minute, country, 3.0)])
            )
            await until(lambda: settled(engine), timeout=10)
        back = await client.get(live(*subs), headers={"Last-Event-ID": last})
        seen = [0] * 3
        last = await follow(client, back, subs, states, seen)
        assert seen == [2, 2, 2]  # exactly the changes missed, no full answer
        back.close()

        # One subscription's id from another epoch (a restart): a full answer for it alone.
        parts = last.split(",")
        parts[1] = "0-1"
        again = await client.get(live(*subs), headers={"Last-Event-ID": ",".join(parts)})
        first = await next_event(again.content)
        assert (first["event"], first["data"]["s"]) == ("answer", 1)
        assert first["id"].split(",")[0] == parts[0]  # the others carry on from where they were
        again.close()
        # An id that is not this stream's (another number of subscriptions): answers for all.
        other = await client.get(live(*subs), headers={"Last-Event-ID": parts[0]})
        firsts = [await next_event(other.content) for _ in subs]
        assert [f["event"] for f in firsts] == ["answer"] * 3
        other.close()


@pytest.mark.asyncio
async def test_a_bad_subscription_is_a_400_naming_its_index(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path, max_live_subscriptions=3) as (client, engine):
        bad = {
            1: (live(PER_MINUTE, f"{PER_MINUTE}&kind=nope"), "'kind'"),
            0: (live("/v1/views/per_minute?limit=5"), "not the path and query of"),
            2: (live(TOTALS, TOTALS, f"{TOTALS}&kind=rows&kind=series"), "more than once"),
            3: (
                live(SERIES, SERIES, SERIES, "https://x/v1/views/totals/subscribe"),
                "1 to 3 subscriptions",
            ),
            4: (live(f"{TOTALS}&format=csv"), "live answers are JSON"),
            5: (live(f"{TOTALS}&token=abc"), "the token goes on /v1/live's URL"),
            6: (live(f"{TOTALS}&limt=5"), "'limt'"),
            7: (live(f"{SERIES.replace('metric=revenue', 'metric=nope')}"), "'metric'"),
        }
        for case, (url, why) in bad.items():
            response = await client.get(url, timeout=BOUNDED)  # a stream here would never end
            body = await response.json()
            assert response.status == 400, (case, body)
            error = body["error"]
            assert error["param"] == "s", case
            assert why in error["message"], (case, error)
            if case < 3:
                assert error["index"] == case
                assert error["message"].startswith(f"parameter 's' [{case}] (/v1/views/"), case
        for url in ("/v1/live", f"{live(TOTALS)}&interval=1s"):
            assert (await client.get(url)).status == 400
        missing = await client.get(live(TOTALS, "/v1/views/nope/subscribe"))  # as /subscribe: 404
        assert missing.status == 404
        error = (await missing.json())["error"]
        assert error["index"] == 1
        assert "no view named 'nope'" in error["message"]
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 1.0)]))
        engine.hub.linger = 0.1  # a refused request's good subscriptions are not kept either
        await until(lambda: _no_topics(engine), timeout=10)


async def _no_topics(engine: Any) -> bool:
    return not engine.hub.topics


READER, READER_LINE = new_token("reader", ["read:per_minute"])
WRITER, WRITER_LINE = new_token("writer", ["append:orders"])
EMBED_KEY = "m" * 48
AUTH_CONFIG = f"""{CONFIG}
[auth]
tokens = [{READER_LINE}, {WRITER_LINE}]
embed_secret_env = "TALLYD_TEST_LIVE_EMBED_KEY"
"""


def embed_token(monkeypatch: pytest.MonkeyPatch, views: list[str]) -> str:
    """A tenant's token for AUTH_CONFIG's server: these views, country FR only."""
    monkeypatch.setenv("TALLYD_TEST_LIVE_EMBED_KEY", EMBED_KEY)
    return mint_embed(EMBED_KEY.encode(), views, {"country": ["FR"]}, 600, int(time.time()))


@pytest.mark.asyncio
async def test_each_subscription_is_authorized_and_filtered_as_its_own_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embed = embed_token(monkeypatch, ["per_minute", "totals", "all_time"])
    async with running(AUTH_CONFIG, tmp_path, max_subscribers_per_token=1) as (client, _):
        reader = {"Authorization": f"Bearer {READER}"}
        allowed = await client.get(live(PER_MINUTE), headers=reader)  # any read token: the route
        assert allowed.status == 200
        allowed.close()
        refused = await client.get(live(PER_MINUTE, TOTALS), headers=reader)
        assert refused.status == 403
        error = (await refused.json())["error"]
        assert error["index"] == 1
        assert "may not read totals" in error["message"]

        # An embed token's filters are forced onto each subscription, as onto /subscribe.
        both = minute_orders([(0, "FR", 1.0), (0, "DE", 2.0)])
        writer = {"Authorization": f"Bearer {WRITER}"}
        assert (await client.post("/v1/sources/orders/events", data=both, headers=writer)).ok
        url = live(PER_MINUTE, SERIES, TOTALS)
        stream = await client.get(f"{url}&token={embed}")
        assert stream.status == 200, await stream.text()
        firsts = [(await next_event(stream.content))["data"]["data"] for _ in range(3)]
        assert {r["country"] for r in firsts[0]["rows"]} == {"FR"}
        assert [s["name"] for s in firsts[1]["series"]] == ["FR"]
        assert [r["country"] for r in firsts[2]["rows"]] == ["FR"]
        # One stream, however many subscriptions, counts once against max_subscribers_per_token.
        busy = await client.get(f"{live(TOTALS)}&token={embed}")
        assert busy.status == 429
        stream.close()
        for subs, index, why in (
            ([PER_MINUTE, f"{TOTALS}&country=DE"], 1, "outside what this token may read"),
            (["/v1/views/all_time/subscribe"], 0, "filters do not apply to view all_time"),
        ):
            response = await client.get(f"{live(*subs)}&token={embed}")
            assert response.status == 403
            error = (await response.json())["error"]
            assert error["index"] == index
            assert why in error["message"]
