"""The chart page in real headless Chromium (Debian's, driven by Playwright); the dashboard's
tests are in test_dashboard.py.

Screenshots go to ``test-artifacts/`` (override with TALLYD_ARTIFACTS) for a person to look at.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BASE_TS, MINUTE_CONFIG, ndjson, running

playwright = pytest.importorskip("playwright.async_api")

CHROMIUM = os.environ.get("TALLYD_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(
    os.environ.get("TALLYD_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)
CONFIG = (
    MINUTE_CONFIG
    + """
[views.totals]
sql = "SELECT country, count(*) AS n FROM orders GROUP BY country"
"""
)
T0 = BASE_TS - BASE_TS % 60_000


def orders(minutes: range, countries: list[str], amount: float) -> bytes:
    return ndjson(
        [
            {"ts": T0 + m * 60_000 + i, "country": c, "amount": amount + m}
            for m in minutes
            for i, c in enumerate(countries)
        ]
    )


async def browser(p: Any) -> Any:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    return await p.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )


@pytest.mark.asyncio
async def test_the_chart_draws_and_follows_new_events_without_a_reload(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with running(CONFIG, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=orders(range(10), ["FR", "DE"], 10))
        url = client.make_url(
            f"/v1/views/per_minute/chart?metric=revenue&split_by=country&from={T0}"
            f"&to={T0 + 15 * 60_000}&unit=EUR&type=area&interval=200ms"
        )
        async with playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page(viewport={"width": 900, "height": 420})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(str(url))
            await page.wait_for_function("window.tallyd && window.tallyd.points === 20")
            canvas = page.locator("#embed canvas")
            # The chart may be laying its canvas out again (its 200 ms refresh): read its box
            # once it is attached and visible, polling that condition until a 5 s deadline.
            deadline = time.monotonic() + 5
            box = None
            while box is None and time.monotonic() < deadline:
                await canvas.wait_for(state="visible", timeout=5000)
                box = await canvas.bounding_box()
                if box is None:
                    await asyncio.sleep(0.1)  # polling a condition, bounded by the deadline
            assert box is not None, "the chart's canvas never had a box"
            assert box["width"] > 400
            assert box["height"] > 150
            assert await page.evaluate("window.tallyd.series") == ["DE", "FR"]
            await page.screenshot(path=ARTIFACTS / "chart-before.png")
            updates = await page.evaluate("window.tallyd.updates")
            await client.post(
                "/v1/sources/orders/events", data=orders(range(10, 13), ["FR", "US"], 50)
            )
            await page.wait_for_function(
                f"window.tallyd.updates > {updates} && window.tallyd.points === 26"
            )
            assert await page.evaluate("window.tallyd.series") == ["DE", "FR", "US"]
            await page.screenshot(path=ARTIFACTS / "chart-after.png")
            assert errors == []
            await chromium.close()


@pytest.mark.asyncio
async def test_the_buckets_still_filling_are_drawn_apart_and_can_be_left_out(
    tmp_path: Path,
) -> None:
    """With a 30 s grace, the buckets after complete_until (watermark - grace) are drawn dashed
    (their own series, the last final bucket joining them); in_progress=hide leaves them out;
    new events move the edge, live."""
    config = CONFIG.replace('grace = "1h"', 'grace = "30s"')
    async with running(config, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=orders(range(10), ["FR"], 10))
        base = f"/v1/views/per_minute/chart?metric=n&from={T0}&to={T0 + 15 * 60_000}&interval=200ms"
        async with playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page(viewport={"width": 900, "height": 420})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(str(client.make_url(base)))
            await page.wait_for_function("window.tallyd && window.tallyd.points === 10")
            seen = await page.evaluate("window.tallyd")
            # watermark T0 + 9 min: minutes 0-7 end by 8:30 (final); 8 and 9 are filling
            assert seen["completeUntil"] == T0 + 9 * 60_000 - 30_000
            assert seen["filling"] == 7  # minutes 8-14 of the range
            assert (seen["drawnFinal"], seen["drawnFilling"]) == (8, 3)  # 7, 8, 9: joined
            legend = await page.locator(".u-legend .u-series:visible").count()
            assert legend == 2  # time and n: the filling part has no entry of its own
            await page.screenshot(path=ARTIFACTS / "chart-filling.png")
            await client.post("/v1/sources/orders/events", data=orders(range(12, 13), ["FR"], 1))
            await page.wait_for_function("window.tallyd.points === 11")
            seen = await page.evaluate("window.tallyd")
            assert seen["completeUntil"] == T0 + 12 * 60_000 - 30_000
            assert (seen["drawnFinal"], seen["drawnFilling"]) == (10, 1)  # 12 (10, 11: no data)
            await page.goto(str(client.make_url(base + "&in_progress=hide")))
            await page.wait_for_function("window.tallyd && window.tallyd.points === 11")
            seen = await page.evaluate("window.tallyd")
            assert (seen["drawnFinal"], seen["drawnFilling"]) == (10, 0)
            await chromium.close()
            assert errors == []
        bad = await client.get(base + "&in_progress=maybe")
        assert bad.status == 400
        assert (await bad.json())["error"]["param"] == "in_progress"


@pytest.mark.asyncio
async def test_an_axis_labels_every_tick_in_one_form(tmp_path: Path) -> None:
    """Revenue of 8,000 and 36,000 a minute: every label of the axis is compact ("10K EUR"),
    none "8,000 EUR" beside "36K EUR"; small values keep the plain form."""
    async with running(CONFIG, tmp_path) as (client, _):
        body = ndjson(
            [
                {"ts": T0 + 1, "country": "FR", "amount": 8_000},
                {"ts": T0 + 60_000 + 1, "country": "FR", "amount": 36_000},
            ]
        )
        await client.post("/v1/sources/orders/events", data=body)
        async with playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page(viewport={"width": 900, "height": 420})
            for metric, form in (("revenue", r"^(0|\d+K) EUR$"), ("n", r"^\d+(\.\d+)? EUR$")):
                url = client.make_url(
                    f"/v1/views/per_minute/chart?metric={metric}&from={T0}"
                    f"&to={T0 + 5 * 60_000}&unit=EUR"
                )
                await page.goto(str(url))
                await page.wait_for_function("window.tallyd && window.tallyd.points === 2")
                labels = await page.evaluate("window.tallyd.ticks")
                assert len(labels) >= 3, labels
                assert all(re.match(form, t) for t in labels), (metric, labels)
            await chromium.close()


@pytest.mark.asyncio
async def test_a_fresh_charts_one_bucket_spans_one_bucket_not_years(tmp_path: Path) -> None:
    """The demo's first minute: one bucket of data, the default range starting at it. The time
    axis spans that minute (uPlot alone guessed years around a single point)."""
    async with running(CONFIG, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=orders(range(1), ["FR", "DE"], 10))
        async with playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page(viewport={"width": 900, "height": 420})
            url = "/v1/views/per_minute/chart?metric=revenue&split_by=country"
            for kind in ("line", "bar"):
                await page.goto(str(client.make_url(f"{url}&type={kind}")))
                await page.wait_for_function("window.tallyd && window.tallyd.xRange")
                low, high = await page.evaluate("window.tallyd.xRange")
                assert (low, high) == (T0, T0 + 60_000), kind
            await chromium.close()


@pytest.mark.asyncio
async def test_the_time_axis_is_in_the_zone_asked_for(tmp_path: Path) -> None:
    """tz= (the series' own parameter) sets the axis's zone: the same minutes read 9 hours
    later in Tokyo than in UTC (the browser's own zone here)."""
    async with running(CONFIG, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=orders(range(3), ["FR"], 10))
        async with playwright.async_playwright() as p:
            chromium = await browser(p)
            context = await chromium.new_context(timezone_id="UTC")
            page = await context.new_page()
            hours = {}
            for tz in ("UTC", "Asia/Tokyo"):
                await page.goto(
                    str(client.make_url(f"/v1/views/per_minute/chart?metric=n&tz={tz}"))
                )
                await page.wait_for_function("window.tallyd && window.tallyd.xTicks")
                ticks = await page.evaluate("window.tallyd.xTicks")
                found = [re.search(r"(\d{1,2}):\d\d\s*([ap]m)", t) for t in ticks]
                hour, half = next((m.group(1), m.group(2)) for m in found if m is not None)
                hours[tz] = int(hour) % 12 + (12 if half == "pm" else 0)
            assert (hours["Asia/Tokyo"] - hours["UTC"]) % 24 == 9, hours
            await chromium.close()
