"""The dashboard with many views stays live: one connection, every table and chart updating.

Issue 14 item 1: one SSE stream per table and chart (8 with the demo's views) over HTTP/1.1 met
the browser's 6 connections per host, and table refreshes queued forever behind open streams. So
this test shows ten views (five charted), posts events over HTTP while the page is open, and waits
until every table and every chart has updated several times, counted by the page itself
(``window.tallyd.updates``), then asserts the server held exactly one stream for the page (its
components' hub, in tallyd.js's SharedWorker).
"""

from __future__ import annotations

import itertools
import random
import re
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.api.test_backfill import ADDED, TWIN
from tests.api.test_backfill import body as backfill_body
from tests.browser.test_charts import ARTIFACTS, T0, browser
from tests.browser.test_embeds import live_streams
from tests.helpers import ndjson, running
from views.config import parse

playwright = pytest.importorskip("playwright.async_api")

CONFIG = """
[sources.orders]
time = "ts"
fields = { country = "string", device = "string", product = "string", user_id = "string" }

[views.per_minute]
description = "Revenue per country and minute"
sql = '''SELECT country, tumble(ts, '1 minute') AS minute, count(*) AS n, sum(amount) AS revenue
         FROM orders GROUP BY country, minute'''
grace = "1h"

[views.by_device]
description = "Orders per device and minute (charted: the average, declared)"
sql = '''SELECT device, tumble(ts, '1 minute') AS minute, count(*) AS n,
                sum(amount) AS revenue, avg(amount) AS avg_amount
         FROM orders GROUP BY device, minute'''
grace = "1h"
chart = "avg_amount"

[views.amount_percentiles]
description = "Amount percentiles per minute (charted: p95, the first non-count aggregate)"
sql = '''SELECT tumble(ts, '1 minute') AS minute, count(*) AS n, p95(amount) AS p95,
                max(amount) AS biggest
         FROM orders GROUP BY minute'''
grace = "1h"

[views.buyers_hourly]
sql = '''SELECT country, tumble(ts, '1 hour') AS hour, approx_count_distinct(user_id) AS buyers
         FROM orders GROUP BY country, hour'''
grace = "1h"

[views.rolling]
description = "Revenue over ten minutes, every minute"
sql = '''SELECT hop(ts, '10 minutes', '1 minute') AS span, sum(amount) AS revenue
         FROM orders GROUP BY span'''
grace = "1h"

[views.totals]
sql = "SELECT country, count(*) AS n, sum(amount) AS revenue FROM orders GROUP BY country"

[views.by_status]
sql = "SELECT status, count(*) AS n, avg(amount) AS avg_amount FROM orders GROUP BY status"

[views.top_products]
sql = "SELECT top_k(product, 3) AS products, count(*) AS n FROM orders"

[views.buyers]
sql = "SELECT count_distinct(user_id) AS buyers, count(*) AS n FROM orders"

[views.by_country_device]
sql = '''SELECT country, device, count(*) AS n, min(amount) AS smallest, max(amount) AS biggest
         FROM orders GROUP BY country, device'''
"""
CHARTED = {"per_minute", "by_device", "amount_percentiles", "buyers_hourly", "rolling"}
UPDATES = 3  # each table and chart must be seen updating this many times after the first answer
COUNT_EVENT_SOURCES = """
(() => {
  const Real = window.EventSource;
  window.__eventSources = 0;
  window.EventSource = class extends Real {
    constructor(...args) { super(...args); window.__eventSources += 1; }
  };
})();
"""


def orders(minute: int, rng: random.Random) -> bytes:
    """One minute of orders touching every view: each country, device, status and product."""
    users = itertools.count(minute * 1000)
    return ndjson(
        [
            {
                "ts": T0 + minute * 60_000 + i,
                "country": country,
                "device": rng.choice(["ios", "android", "web"]),
                "product": f"p{rng.randrange(8)}",
                "status": rng.choice(["paid", "refunded"]),
                "user_id": f"u{next(users)}",
                "amount": round(rng.uniform(1, 2000), 6),  # many decimals: the page rounds
            }
            for i, country in enumerate(["FR", "DE", "US", "JP"] * 3)
        ]
    )


async def counters(page: Any) -> dict[str, dict[str, int]]:
    return dict(await page.evaluate("window.tallyd ? window.tallyd.updates : null") or {})


async def wait_for_updates(page: Any, expected: dict[str, dict[str, int]]) -> None:
    """Until every counter has passed ``expected`` (bounded); on timeout, say which lagged."""
    check = """(want) => {
      const seen = (window.tallyd && window.tallyd.updates) || {};
      return Object.entries(want).every(([view, parts]) =>
        Object.entries(parts).every(([part, n]) => ((seen[view] || {})[part] || 0) > n));
    }"""
    try:
        await page.wait_for_function(check, arg=expected, timeout=20_000)
    except playwright.TimeoutError:
        seen = await counters(page)
        pytest.fail(f"not every table and chart updated: wanted > {expected}, saw {seen}")


@pytest.mark.asyncio
async def test_every_table_and_chart_keeps_updating_over_one_connection(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    rng = random.Random(14)
    async with running(CONFIG, tmp_path) as (client, engine):
        for minute in range(20):  # more than a table shows: the page says so
            await client.post("/v1/sources/orders/events", data=orders(minute, rng))
        async with playwright.async_playwright() as p:
            chromium = await browser(p)
            context = await chromium.new_context(
                viewport={"width": 1280, "height": 1000}, locale="en-US"
            )
            await context.add_init_script(COUNT_EVENT_SOURCES)
            page = await context.new_page()
            problems: list[str] = []
            streams: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on(
                "request",
                lambda r: streams.append(r.url) if r.resource_type == "eventsource" else None,
            )
            await page.goto(str(client.make_url("/")))
            views = list(engine.registry.views)
            first = {v: {"table": 0, **({"chart": 0} if v in CHARTED else {})} for v in views}
            await wait_for_updates(page, first)  # every table and chart has its first answer
            for minute in range(20, 20 + UPDATES):
                expected = await counters(page)
                await client.post("/v1/sources/orders/events", data=orders(minute, rng))
                await wait_for_updates(page, expected)
            await page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)
            await page.screenshot(path=ARTIFACTS / "dashboard-top.png")  # docs/dashboard.png
            for name in ("by_device", "rolling", "top_products"):  # close-ups
                await page.locator(f"#view-{name}").screenshot(path=ARTIFACTS / f"view-{name}.png")
            final = await counters(page)
            assert set(final) == set(views)
            for view, parts in final.items():
                assert parts["table"] >= UPDATES + 1, (view, parts)  # the answer, then changes
                assert parts.get("chart", 0) >= (UPDATES + 1 if view in CHARTED else 0), view
            # One live connection for the whole page, whatever it shows: its components' hub, in
            # tallyd.js's SharedWorker (the page itself opens none), counted by the server.
            opened = [await f.evaluate("window.__eventSources || 0") for f in page.frames]
            assert sum(opened) == 0, opened
            assert streams == []
            assert await live_streams(client) == 1
            await readable(page)
            assert problems == []
            await context.close()
            await chromium.close()


async def readable(page: Any) -> None:
    """Item 8: the declared or sensible chart metric, readable cells, and a note when cut."""
    charted = await page.evaluate(
        "Object.fromEntries(JSON.parse(document.getElementById('config').textContent)"
        ".map((v) => [v.name, v.metric]))"
    )
    assert charted == {
        **dict.fromkeys(
            ["totals", "by_status", "top_products", "buyers", "by_country_device"], None
        ),
        "per_minute": "revenue",
        "by_device": "avg_amount",  # declared
        "amount_percentiles": "p95",  # not n, the count listed first
        "buyers_hourly": "buyers",
        "rolling": "revenue",
    }
    assert await page.evaluate("window.tallyd.charts.by_device.series") == [
        "android",
        "ios",
        "web",
    ]
    top = await page.locator("#view-top_products .rows td").first.inner_text()
    assert re.fullmatch(r"p\d \(\d+\), p\d \(\d+\), p\d \(\d+\)", top), top
    numbers = await page.locator(".rows td.number").all_inner_texts()
    assert len(numbers) > 100
    assert all(re.fullmatch(r"-?\d{1,3}(,\d{3})*(\.\d{1,3})?", n) for n in numbers), numbers
    assert any("," in n for n in numbers)  # thousands separated
    notes = {
        name: await page.locator(f"#view-{name} .note").inner_text()
        for name in ("per_minute", "totals", "buyers")
    }
    assert notes == {
        "per_minute": "10 of more rows, newest first",
        "totals": "4 rows",
        "buyers": "1 row",
    }
    assert await page.locator("#view-per_minute .rows tbody tr").count() == 10
    minutes = await page.locator("#view-per_minute .rows td:nth-child(2)").all_inner_texts()
    assert minutes == sorted(minutes, reverse=True)  # newest first, after every change
    snippet = await page.locator("#view-per_minute pre").first.text_content() or ""
    assert snippet.startswith('<iframe src="http://127.0.0.1:')
    assert "/chart?metric=revenue&split_by=country" in snippet
    snippets = await page.locator("#view-per_minute pre").all_text_contents()
    component = next(s for s in snippets if "tallyd.js" in s)
    assert '<tallyd-chart view="per_minute" metric="revenue" split-by="country"' in component
    for url in [s.split('src="')[1].split('"')[0] for s in snippets if s.startswith("<iframe")]:
        async with aiohttp.ClientSession() as session, session.get(url) as embedded:
            assert embedded.status == 200, url  # every snippet's page answers


@pytest.mark.asyncio
async def test_past_the_servers_subscriptions_per_stream_the_page_opens_more_streams(
    tmp_path: Path,
) -> None:
    """max_live_subscriptions = 3: the first stream of all 15 is refused, saying 3; the page's
    hub splits them into 5 streams of 3, and every table and chart is live."""
    rng = random.Random(1)
    async with running(CONFIG, tmp_path, max_live_subscriptions=3) as (client, engine):
        await client.post("/v1/sources/orders/events", data=orders(0, rng))
        async with playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            await page.goto(str(client.make_url("/")))
            first = {
                v: {"table": 0, **({"chart": 0} if v in CHARTED else {})}
                for v in engine.registry.views
            }
            await wait_for_updates(page, first)
            expected = await counters(page)
            await client.post("/v1/sources/orders/events", data=orders(1, rng))
            await wait_for_updates(page, expected)  # live, every one of them
            assert await live_streams(client) == 5
            notes = await page.locator(".note").all_inner_texts()
            assert not any("not live" in n for n in notes)
            assert problems == []
            await chromium.close()


@pytest.mark.asyncio
async def test_a_view_filling_from_history_says_so(tmp_path: Path) -> None:
    """A view added live answers partial until its backfill is done; its box says so, with the
    progress its answers carry (here a backfill whose reader never started: it stays put)."""
    async with running(TWIN, tmp_path) as (client, engine):
        data, _ = backfill_body(random.Random(2), 0, large=False)
        assert (await client.post("/v1/sources/orders/events", data=data)).status == 200
        async with engine.committer.step() as step:
            step.reconfigure(parse(tomllib.loads(ADDED), "test.toml").views)
        async with playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page()
            await page.goto(str(client.make_url("/")))
            box = page.locator(".view", has=page.locator("h2", has_text=re.compile("^added$")))
            fresh = box.locator(".fresh")
            await fresh.filter(has_text="filling from history").wait_for(timeout=20_000)
            assert "filling from history: 0 of 0 records" in await fresh.inner_text()
            other = page.locator(".view", has=page.locator("h2", has_text=re.compile("^twin$")))
            assert "filling" not in await other.locator(".fresh").inner_text()
            await chromium.close()
