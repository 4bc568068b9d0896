"""Every embed — chart, KPI tile, ranking, table — in real Chromium, in both forms: iframes of
tallyd's own pages (ten on one customer page: one live stream for all, through their
SharedWorker) and the web components on a page of another origin (one stream, in the page).
Each draws, follows new events without a reload (the tile's number, the bars' order, the table's
newest minute), says its values in its aria-label, and raises no console error. Screenshots go to
``test-artifacts/`` (TALLYD_ARTIFACTS); the README's gallery is made from them."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from benchmarks.server import free_port
from tests.api.test_live_many import AUTH_CONFIG, WRITER, embed_token
from tests.browser.test_charts import ARTIFACTS, browser
from tests.helpers import BASE_TS, MINUTE_CONFIG, ndjson, running, until
from views.timefmt import format_time

playwright = pytest.importorskip("playwright.async_api")

T0 = BASE_TS - BASE_TS % 60_000
CONFIG = (
    MINUTE_CONFIG.replace('grace = "1h"', 'grace = "30s"')
    + """
[views.products]
sql = "SELECT top_k(product, 5) AS products, count(*) AS n FROM orders"
"""
)
# One of each embed, and more charts and tiles: ten frames from one host.
FRAMES = {
    "chart": "chart?metric=revenue&split_by=country&type=area&stack=true&unit=EUR&from={t0}",
    "tile": "tile?metric=revenue&unit=EUR&title=Revenue",
    "top": "top?metric=revenue&by=country&unit=EUR",
    "table": "table?limit=5",
    "products": "top?column=products",
    "chart-bars": "chart?metric=n&split_by=country&type=bar&from={t0}",
    "chart-line": "chart?metric=n&from={t0}",
    "tile-orders": "tile?metric=n&period=last&title=Orders",
    "tile-fr": "tile?metric=n&country=FR&title=Orders+in+FR",
    "top-count": "top?metric=n&by=country&limit=3",
}


VIEWS = {"products": "products"}  # the others are of per_minute


def orders(spec: list[tuple[int, str, float, str]]) -> list[dict[str, Any]]:
    """(minute after T0, country, amount, product) -> events."""
    return [
        {"ts": T0 + m * 60_000 + i, "country": c, "amount": a, "product": p}
        for i, (m, c, a, p) in enumerate(spec)
    ]


FIRST = orders(
    [(m, c, 10.0 + m, p) for m in range(6) for c, p in (("FR", "p1"), ("DE", "p2"), ("FR", "p1"))]
)
# minute 7: the US arrives with the most revenue; p9 becomes the top product
LATER = orders([(7, "US", 500.0, "p9") for _ in range(20)])


def revenue_by_country(events: list[dict[str, Any]]) -> list[tuple[str, float]]:
    total: dict[str, float] = defaultdict(float)
    for e in events:
        total[e["country"]] += e["amount"]
    return sorted(total.items(), key=lambda kv: -kv[1])


def minute_total(events: list[dict[str, Any]], minute: int, field: str | None) -> float:
    start = T0 + minute * 60_000
    picked = [e for e in events if start <= e["ts"] < start + 60_000]
    return sum(e[field] for e in picked) if field else len(picked)


def minute_label(minute: int) -> str:
    """How a table shows a window start: ``2026-09-21 14:18``."""
    return format_time(T0 + minute * 60_000)[:16].replace("T", " ")


async def live_streams(client: Any) -> int:
    status = await (await client.get("/v1/status")).json()
    return int(status["live"]["streams"])


def watch_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


@pytest.mark.asyncio
async def test_ten_iframes_share_one_stream_and_each_follows_new_events(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with running(CONFIG, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=ndjson(FIRST))
        base = str(client.make_url("/v1/views/"))
        frames = "".join(
            f'<iframe id="{name}" src="{base}{VIEWS.get(name, "per_minute")}/'
            f'{query.format(t0=T0)}" width="440" height="{300 if "chart" in name else 200}" '
            'style="border:0"></iframe>'
            for name, query in FRAMES.items()
        )
        async with playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page(viewport={"width": 920, "height": 1400})
            errors = watch_errors(page)
            port = free_port()
            host = f'<!doctype html><link rel="icon" href="data:,"><body style="margin:0">{frames}'
            async with customer_page(host, port):  # a customer's app, of another origin
                await page.goto(f"http://127.0.0.1:{port}/")
                await _check_iframes(client, page)
            await chromium.close()
        assert errors == []


async def _check_iframes(client: Any, page: Any) -> None:
    """Ten frames: each draws; all of them live over one stream; each follows new events."""

    async def seen(name: str) -> dict[str, Any]:
        handle = await page.query_selector(f"#{name}")
        assert handle is not None
        content = await handle.content_frame()
        assert content is not None
        return dict(await content.evaluate("window.tallyd || {}"))

    async def drawn_all() -> bool:
        return all([(await seen(n)).get("updates", 0) > 0 for n in FRAMES])

    await until(drawn_all, timeout=30)
    await until(lambda: _is(live_streams(client), 1), timeout=10)
    tile = await seen("tile")
    assert tile["value"] == minute_total(FIRST, 5, "amount")  # the newest minute, so far
    assert tile["filling"] is True  # the watermark is in minute 5; grace 30 s
    assert tile["before"] == minute_total(FIRST, 4, "amount")
    assert (await seen("tile-orders"))["value"] == 3  # the newest final minute: 4
    top = await seen("top")
    assert [tuple(i) for i in top["items"]] == revenue_by_country(FIRST)
    table = await seen("table")
    assert table["rows"][0][1] == minute_label(5)  # newest first: minute 5
    chart = await seen("chart")
    assert chart["filling"] >= 1
    assert chart["drawnFilling"] > 0
    for name in ("chart", "tile", "top", "table", "products"):
        await page.locator(f"#{name}").screenshot(path=ARTIFACTS / f"embed-{name}.png")

    await client.post("/v1/sources/orders/events", data=ndjson(LATER))
    everything = FIRST + LATER

    async def followed() -> bool:  # the number, the bars' order, the newest row, the top item
        tile, top = await seen("tile"), await seen("top")
        table, products = await seen("table"), await seen("products")
        return (
            tile.get("value") == minute_total(everything, 7, "amount")
            and [tuple(i) for i in top.get("items", [])] == revenue_by_country(everything)
            and table["rows"][0][1] == minute_label(7)
            and products["items"][0] == ["p9", 20]
        )

    await until(followed, timeout=15)
    label = await page.frame_locator("#tile").locator("tallyd-tile").get_attribute("aria-label")
    assert label is not None
    assert label.startswith("Revenue")
    assert "10,000 EUR" in label  # 20 x 500, this minute so far
    assert await live_streams(client) == 1  # still one, for all ten frames


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


@asynccontextmanager
async def customer_page(html: str, port: int) -> AsyncIterator[None]:
    """A page of another origin (the customer's app), on 127.0.0.1:``port``."""
    app = web.Application()

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_the_web_components_on_another_origin_share_one_stream(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    config = CONFIG + f'\n[auth]\ncors_origins = ["{origin}"]\n'
    async with running(config, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=ndjson(FIRST))
        host = str(client.make_url("")).rstrip("/")
        html = f"""<!doctype html><html><head><link rel="icon" href="data:,">
<script src="{host}/assets/tallyd.js"></script>
<style>body {{ margin: 0; display: grid; grid-template-columns: 1fr 1fr; gap: 8px;
  font-family: sans-serif; }} #top {{ --tallyd-accent: rgb(255, 0, 0); }}</style></head><body>
<tallyd-chart id="chart" view="per_minute" metric="revenue" split-by="country" type="bar"
  stack unit="EUR" from="{T0}" interval="200ms"></tallyd-chart>
<tallyd-tile id="tile" view="per_minute" metric="n" label="Orders"></tallyd-tile>
<tallyd-top id="top" view="per_minute" metric="revenue" by="country" unit="EUR"></tallyd-top>
<tallyd-table id="table" view="per_minute" limit="4"></tallyd-table>
<tallyd-top id="products" view="products" column="products"></tallyd-top>
<tallyd-tile id="bad" view="per_minute" metric="nope"></tallyd-tile>
<tallyd-top id="badby" view="per_minute" metric="revenue" by="minute"></tallyd-top>
</body></html>"""
        async with customer_page(html, port), playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page(viewport={"width": 1000, "height": 900})
            errors = watch_errors(page)
            await page.goto(origin + "/")

            async def seen(name: str) -> dict[str, Any]:
                return dict(await page.evaluate(f"document.getElementById('{name}').observed"))

            async def drawn_all() -> bool:
                names = ("chart", "tile", "top", "table", "products")
                return all([(await seen(n)).get("updates", 0) > 0 for n in names])

            await until(drawn_all, timeout=30)
            await until(lambda: _is(live_streams(client), 1), timeout=10)
            bad = await seen("bad")  # its own error, shown in place; the others unharmed
            assert "metric" in bad["error"]
            badby = await seen("badby")  # named by its attribute, not the query's group_by
            assert badby["error"].startswith("by: 'minute' is not a group key of per_minute")
            assert (await seen("tile"))["value"] == 3
            box = await page.locator("#chart canvas").bounding_box()  # drawn, in its shadow root
            assert box is not None
            assert box["width"] > 300
            chart = await seen("chart")
            assert chart["series"] == ["DE", "FR"]
            assert chart["drawnFilling"] > 0  # the minutes still filling, drawn apart
            # stacked: the axis reaches the minutes' sums (45 EUR), not the largest series (30)
            await page.wait_for_function("document.getElementById('chart').observed.yMax >= 45")
            assert minute_total(FIRST, 5, "amount") == 45
            top_bar = page.locator("#top .bar").first
            color = await top_bar.evaluate("b => getComputedStyle(b).backgroundColor")
            assert color == "rgb(255, 0, 0)"  # themed by the page's CSS variable
            await page.screenshot(path=ARTIFACTS / "components-light.png")
            await page.emulate_media(color_scheme="dark")
            background = await page.locator("#tile").evaluate(
                "t => getComputedStyle(t).backgroundColor"
            )
            assert background == "rgb(13, 17, 23)"  # follows prefers-color-scheme
            await page.wait_for_function(  # the chart's axes too, redrawn
                "document.getElementById('chart').observed.axis === '#e6edf3'"
            )
            await page.screenshot(path=ARTIFACTS / "components-dark.png")

            await client.post("/v1/sources/orders/events", data=ndjson(LATER))
            everything = FIRST + LATER

            async def followed() -> bool:
                tile, top, table = await seen("tile"), await seen("top"), await seen("table")
                return (
                    tile.get("value") == 20
                    and [tuple(i) for i in top["items"]] == revenue_by_country(everything)
                    and table["rows"][0][1] == minute_label(7)
                    and (await seen("products"))["items"][0] == ["p9", 20]
                )

            await until(followed, timeout=15)
            label = await page.locator("#top").get_attribute("aria-label")
            assert label is not None
            assert label.startswith("revenue by country: US 10,000 EUR")
            # an app changes an attribute: the tile asks its new question (revenue, not orders)
            await page.evaluate("document.getElementById('tile').setAttribute('metric', 'revenue')")
            await page.wait_for_function("document.getElementById('tile').observed.value === 10000")
            # the reader sorts by a column: a number largest first, then, clicked again, smallest
            header = page.locator("#table").get_by_role("button", name="n", exact=True)
            await header.click()
            counts = [int(r[2]) for r in (await seen("table"))["rows"]]
            assert counts == sorted(counts, reverse=True)
            assert counts[0] == 20  # the US minute
            await header.click()
            counts = [int(r[2]) for r in (await seen("table"))["rows"]]
            assert counts == sorted(counts)
            sorted_by = page.locator("#table th[aria-sort]")
            assert await sorted_by.get_attribute("aria-sort") == "ascending"
            assert await live_streams(client) == 1
            await chromium.close()
        # the one bad tile's 400, which the browser logs; nothing else
        assert [e for e in errors if "status of 400" not in e] == []
        assert len(errors) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("tile?metric=n&period=soon", "period"),
        ("tile?metric=nope", "metric"),
        ("top?metric=revenue", "metric"),
        ("top?metric=revenue&by=minute", "by"),  # the page's own names, not group_by
        ("top?metric=revenu&by=country", "metric"),  # not order_by
        ("top?column=n", "column"),
        ("table?order_by=nope", "order_by"),
        ("chart?metric=n&stack=maybe", "stack"),
        ("chart?metric=n&format=csv", "format"),
        ("table?colour=red", "colour"),
    ],
)
async def test_a_bad_embed_is_a_400_naming_the_parameter(
    tmp_path: Path, query: str, param: str
) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        response = await client.get(f"/v1/views/per_minute/{query}")
        assert response.status == 400, await response.text()
        assert (await response.json())["error"]["param"] == param


@pytest.mark.asyncio
async def test_an_embed_page_passes_filters_and_options_as_attributes(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        response = await client.get(
            "/v1/views/per_minute/tile?metric=n&country=FR&country=DE&title=<b>Orders</b>"
        )
        assert response.status == 200
        page = await response.text()
        assert 'filter="country=FR&amp;country=DE"' in page
        assert 'label="&lt;b&gt;Orders&lt;/b&gt;"' in page  # escaped, never markup
        assert "<b>Orders" not in page


@pytest.mark.asyncio
async def test_a_tenants_embed_token_shows_only_its_rows_live_and_loads_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embed token (per_minute, country FR only) on the iframe pages: the tile and the
    ranking show FR's figures only, follow a new FR event, and the page asks nothing of any host
    but tallyd (no CDN: it works offline)."""
    token = embed_token(monkeypatch, ["per_minute"])
    writer = {"Authorization": f"Bearer {WRITER}"}
    async with running(AUTH_CONFIG, tmp_path) as (client, _):
        sent = orders([(0, "FR", 10.0, "p1"), (0, "DE", 500.0, "p2"), (1, "FR", 7.0, "p1")])
        assert (
            await client.post("/v1/sources/orders/events", data=ndjson(sent), headers=writer)
        ).ok
        tallyd = str(client.make_url("")).rstrip("/")
        async with playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page()
            errors = watch_errors(page)
            hosts: set[str] = set()
            page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
            for kind, query in (("tile", "metric=revenue"), ("top", "metric=revenue&by=country")):
                await page.goto(f"{tallyd}/v1/views/per_minute/{kind}?{query}&token={token}")
                await page.wait_for_function("window.tallyd && window.tallyd.status === 'live'")
                seen = await page.evaluate("window.tallyd")
                if kind == "tile":
                    assert seen["value"] == 7.0  # FR's minute 1; DE is not this tenant's
                else:
                    assert seen["items"] == [["FR", 17.0]]
            later = orders([(1, "FR", 5.0, "p1"), (1, "DE", 900.0, "p2")])
            await client.post("/v1/sources/orders/events", data=ndjson(later), headers=writer)
            await page.wait_for_function("window.tallyd.items[0][1] === 22")
            await chromium.close()
        assert hosts == {tallyd.split("/")[2]}
        assert errors == []


@pytest.mark.asyncio
async def test_a_refused_stream_is_retried_and_one_bad_subscription_fails_alone(
    tmp_path: Path,
) -> None:
    """The page's first /v1/live answers 503 (a server restarting): the hub retries, and the
    embeds go live. One component asks a live interval the server refuses: it alone shows why;
    the others, on the same stream, stay live. A table of a column without its keys still
    tells its rows apart; a top_k of a keyed view merges every key's items."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    config = (
        CONFIG
        + """
[views.products_by_country]
sql = "SELECT country, top_k(product, 5) AS products FROM orders GROUP BY country"
"""
        + f'\n[auth]\ncors_origins = ["{origin}"]\n'
    )
    async with running(config, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=ndjson(FIRST))
        host = str(client.make_url("")).rstrip("/")
        html = f"""<!doctype html><html><head><link rel="icon" href="data:,">
<script src="{host}/assets/tallyd.js"></script></head><body>
<tallyd-tile id="tile" view="per_minute" metric="n"></tallyd-tile>
<tallyd-table id="table" view="per_minute" columns="revenue" limit="20"></tallyd-table>
<tallyd-top id="merged" view="products_by_country" column="products"></tallyd-top>
</body></html>"""
        async with customer_page(html, port), playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page()
            refused: list[str] = []

            restarting_until = time.monotonic() + 2.0  # every embed has asked by then

            async def first_refused(route: Any) -> None:
                if time.monotonic() < restarting_until:  # streams and the hub's look at why
                    refused.append(route.request.url)
                    await route.fulfill(
                        status=503,
                        content_type="application/json",
                        body='{"error": {"status": 503, "message": "restoring state"}}',
                    )
                else:
                    await route.continue_()

            await page.route("**/v1/live?*", first_refused)
            await page.goto(origin + "/")

            async def seen(name: str) -> dict[str, Any]:
                return dict(await page.evaluate(f"document.getElementById('{name}').observed"))

            async def live() -> bool:
                states = [(await seen(n))["status"] for n in ("tile", "table", "merged")]
                return states == ["live", "live", "live"]

            await until(live, timeout=20)  # retried, backing off
            assert len(refused) >= 2
            # An app adds a component whose live interval the server refuses: it fails alone.
            await page.evaluate(
                """() => { const t = document.createElement("tallyd-tile");
                  Object.entries({ id: "fast", view: "per_minute", metric: "n", interval: "5ms" })
                    .forEach(([k, v]) => t.setAttribute(k, v));
                  document.body.append(t); }"""
            )
            await page.wait_for_function(
                "document.getElementById('fast').observed.status === 'error'"
            )
            assert "interval" in (await seen("fast"))["error"]
            await until(live, timeout=10)  # the others: reopened without it, live
            rows = len((await seen("table"))["rows"])
            assert rows == 12  # 6 minutes x 2 countries, told apart by keys it does not show
            merged = await seen("merged")
            assert merged["items"] == [["p1", 12], ["p2", 6]]  # FR's and DE's, merged
            await client.post("/v1/sources/orders/events", data=ndjson(LATER))

            async def followed() -> bool:
                table = await seen("table")
                return (await seen("tile"))["value"] == 20 and len(table["rows"]) == 13

            await until(followed, timeout=15)
            assert (await seen("merged"))["items"][0] == ["p9", 20]
            await chromium.close()


@pytest.mark.asyncio
async def test_a_tile_compares_a_filling_period_with_the_same_point_of_the_one_before(
    tmp_path: Path,
) -> None:
    """Orders per 5 minutes, 1 minute 10 s into the current five: against the previous five's
    first 1 min 10 s (from the view's minute windows: its minute 0, and a sixth of minute 1),
    not its whole; a sum the same. A mean is not additive: the previous value beside, no %."""
    t5 = BASE_TS - BASE_TS % 300_000
    counts = [3, 2, 7, 1, 4, 5]  # orders in minutes 0-4 (the previous five) and 5 (this one)
    sent = [
        {"ts": t5 + m * 60_000 + i, "country": "FR", "amount": 10.0}
        for m, n in enumerate(counts)
        for i in range(n)
    ]
    sent.append({"ts": t5 + 6 * 60_000 + 10_000, "country": "FR", "amount": 10.0})  # newest
    means = """
[views.means]
sql = "SELECT tumble(ts, '1 minute') AS minute, avg(amount) AS mean FROM orders GROUP BY minute"
grace = "30s"
"""
    async with running(CONFIG + means, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=ndjson(sent))
        async with playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page()
            errors = watch_errors(page)
            url = client.make_url("/v1/views/per_minute/tile?metric=n&bucket=5m&title=Orders")
            await page.goto(str(url))
            await page.wait_for_function("window.tallyd && window.tallyd.like != null")
            seen = await page.evaluate("window.tallyd")
            # minute 0 whole, and 10 s of minute 1's 60 (as if spread evenly): 3 + 2 / 6
            assert (seen["value"], seen["before"]) == (6, sum(counts[:5]))
            assert seen["like"] == pytest.approx(3 + 2 / 6)
            text = await page.locator("tallyd-tile .delta").inner_text()
            assert text == "\u25b2 +80.0 % vs the same point of the previous 5 minutes"
            await page.goto(
                str(client.make_url("/v1/views/per_minute/tile?metric=revenue&bucket=5m"))
            )
            await page.wait_for_function("window.tallyd && window.tallyd.like != null")
            like = await page.evaluate("window.tallyd.like")
            assert like == pytest.approx(10 * (3 + 2 / 6))  # a sum: orders of 10
            await page.goto(str(client.make_url("/v1/views/means/tile?metric=mean&bucket=5m")))
            await page.wait_for_function("window.tallyd && window.tallyd.updates > 0")
            await page.wait_for_function("window.tallyd.status === 'live'")
            assert await page.evaluate("window.tallyd.like") is None  # an avg: not additive
            text = await page.locator("tallyd-tile .delta").inner_text()
            assert text == "previous 5 minutes: 10"  # its value beside, no %
            await chromium.close()
        assert errors == []


@pytest.mark.asyncio
async def test_after_a_split_a_changed_component_leaves_its_old_question(tmp_path: Path) -> None:
    """Three subscriptions a stream: five tiles are split into two streams; one tile then asks
    another metric. Its old question leaves (the server holds five subscriptions on two
    streams, none twice), and the tile shows only the new metric's figures."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    config = CONFIG + f'\n[auth]\ncors_origins = ["{origin}"]\n'
    async with running(config, tmp_path, max_live_subscriptions=3) as (client, _):
        await client.post("/v1/sources/orders/events", data=ndjson(FIRST))
        host = str(client.make_url("")).rstrip("/")
        tiles = "".join(
            f'<tallyd-tile id="t{i}" view="per_minute" metric="n" filter="country=FR" '
            f'bucket="{i + 1}m" period="last"></tallyd-tile>'  # five questions, five topics
            for i in range(5)
        )
        html = f"""<!doctype html><html><head><link rel="icon" href="data:,">
<script src="{host}/assets/tallyd.js"></script></head><body>{tiles}</body></html>"""
        async with customer_page(html, port), playwright.async_playwright() as p:
            chromium = await browser(p)
            page = await chromium.new_page()

            async def held() -> tuple[int, int]:
                live = (await (await client.get("/v1/status")).json())["live"]
                return int(live["streams"]), int(live["subscribers"])

            async def settled(want: tuple[int, int]) -> bool:
                states = await page.evaluate(
                    "[...document.querySelectorAll('tallyd-tile')].map((t) => t.observed.status)"
                )
                return states == ["live"] * 5 and await held() == want

            await page.goto(origin + "/")
            await until(lambda: settled((2, 5)), timeout=20)
            await page.evaluate("document.getElementById('t0').setAttribute('metric', 'revenue')")
            fr = [e for e in FIRST if e["country"] == "FR"]
            final = minute_total(fr, 3, "amount")  # minute 3: the newest final (grace 30 s)
            await page.wait_for_function(
                f"document.getElementById('t0').observed.value === {final}"
            )
            await until(lambda: settled((2, 5)), timeout=20)
            await client.post("/v1/sources/orders/events", data=ndjson(LATER))  # US only
            # minute 7's events make minute 5 the newest final one: FR's revenue of it, 30
            await page.wait_for_function(
                f"document.getElementById('t0').observed.value === {minute_total(fr, 5, 'amount')}"
            )
            assert await held() == (2, 5)  # still five questions on two streams, none twice
            await chromium.close()
