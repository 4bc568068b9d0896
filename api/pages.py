"""HTML pages: an embeddable live chart of a series, and the dashboard of every view.

Both are self-contained apart from uPlot, which tallyd serves itself from ``/assets/`` (vendored
from npm, see api/static/VENDORED.md): they work offline, with no CDN. Their markup and scripts
are files in ``api/static/``: ``chart.js`` draws a series and applies its changes for both pages.

The chart page reads its series once, then follows its live stream (``subscribe?kind=series``).
The dashboard follows every table and chart it shows over one ``/v1/live`` stream: a browser
opens at most six connections per host, so a stream each would leave its other requests queued.
Both expose ``window.tallyd`` (updates applied, points drawn) so tests and embedding apps can
observe them.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Callable
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from multidict import MultiDict

from api.auth import TOKEN, URL_SECRET, Token
from api.context import engine_of, only, readable, view_of
from api.engine import Engine
from api.errors import ApiError
from api.params import bad
from api.read import series_answer

STATIC = Path(__file__).parent / "static"
ASSETS = {
    "uPlot.iife.min.js": "application/javascript",
    "uPlot.min.css": "text/css",
    "chart.js": "application/javascript",
    "dashboard.js": "application/javascript",
}


def _versioned(name: str) -> str:
    """An asset's URL with its content hash: cached for a day, yet never stale after an upgrade
    (the asset handler ignores the query)."""
    return f"/assets/{name}?v={hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]}"


SCRIPTS = {
    "uplot_js": _versioned("uPlot.iife.min.js"),
    "uplot_css": _versioned("uPlot.min.css"),
    "chart_js": _versioned("chart.js"),
    "dashboard_js": _versioned("dashboard.js"),
}
CHART = Template((STATIC / "chart.html").read_text())
DASHBOARD = Template((STATIC / "dashboard.html").read_text())
ROWS_SHOWN = 10  # a dashboard table shows this many rows, and asks for one more to know if more
CHART_PARAMS = {"type", "theme", "title", "unit", "interval", "in_progress"}
TYPES = ("line", "area", "bar")
IN_PROGRESS = ("show", "hide")  # the buckets after complete_until: drawn dashed, or left out
THEMES = ("light", "dark")


def embed_json(data: Any) -> str:
    """JSON safe inside a <script> element (no ``</script>`` can close it early)."""
    return orjson.dumps(data).decode().replace("<", "\\u003c").replace(">", "\\u003e")


def chart_page(
    view: str, params: dict[str, str], extra: dict[str, str], token: str | None = None
) -> str:
    """``params``: the series query; ``extra``: chart options (type, theme, title, unit);
    ``token``: the secret the page itself was loaded with, passed on to what it loads."""
    query = urlencode(params if token is None else {**params, "token": token})
    config = {
        "view": view,
        "metric": params.get("metric", ""),
        "type": extra.get("type", "line"),
        "theme": extra.get("theme", "light"),
        "unit": extra.get("unit", ""),
        "in_progress": extra.get("in_progress", "show"),
        "series": f"/v1/views/{view}/series?{query}",
        "subscribe": f"/v1/views/{view}/subscribe?kind=series&{query}"
        + (f"&interval={extra['interval']}" if "interval" in extra else ""),
    }
    title = extra.get("title") or f"{view} · {params.get('metric', '')}"
    return CHART.substitute(SCRIPTS, title=html.escape(title), config=embed_json(config))


def dashboard_page(views: list[dict[str, Any]], live: str | None) -> str:
    return DASHBOARD.substitute(SCRIPTS, config=embed_json(views), live=embed_json(live))


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise ApiError(404, f"no asset named '{name}'")
    return web.Response(
        body=(STATIC / name).read_bytes(),
        content_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )


async def chart(request: web.Request) -> web.Response:
    """An embeddable live chart of ``series`` (same parameters, plus type/theme/title/unit)."""
    engine = engine_of(request)
    view = view_of(engine, request)
    extra = {k: v for k, v in request.query.items() if k in CHART_PARAMS}
    params = MultiDict((k, v) for k, v in request.query.items() if k not in CHART_PARAMS)
    if extra.get("type", "line") not in TYPES:
        raise bad("type", f"{extra['type']!r} is not one of {', '.join(TYPES)}")
    if extra.get("theme", "light") not in THEMES:
        raise bad("theme", f"{extra['theme']!r} is not one of {', '.join(THEMES)}")
    if extra.get("in_progress", "show") not in IN_PROGRESS:
        raise bad("in_progress", f"{extra['in_progress']!r} is not one of show, hide")
    if params.get("format", "json") != "json":
        raise bad("format", "a chart reads the JSON series")
    series_answer(engine, view, params)  # a bad series request is a 400 here, not a blank page
    body = chart_page(view.spec.name, dict(params.items()), extra, request.get(URL_SECRET))
    return web.Response(text=body, content_type="text/html")


async def dashboard(request: web.Request) -> web.Response:
    """Every view: a live table, and a live chart for windowed views, with embed snippets; all
    of them followed over one ``/v1/live`` stream."""
    engine = engine_of(request)
    only(request, set())
    secret = request.get(URL_SECRET)
    carry = "" if secret is None else "&" + urlencode({"token": secret})
    token: Token | None = request.get(TOKEN)
    subscriptions: list[str] = []

    def follow(question: str) -> int | None:
        """Its index in the page's stream; None past max_live_subscriptions (read once)."""
        if len(subscriptions) >= engine.settings.max_live_subscriptions:
            return None
        subscriptions.append(question)
        return len(subscriptions) - 1

    views = [
        _dashboard_view(engine, name, carry, follow)
        for name in readable(request, engine)
        if token is None or _filters_apply(engine, token, name)
    ]
    live = None
    if subscriptions:
        # Unescaped / ? , keep the URL short (aiohttp reads request lines up to 8 KiB).
        asked = urlencode([("s", q) for q in subscriptions], safe="/?,")
        live = f"/v1/live?{asked}{carry}"
    return web.Response(text=dashboard_page(views, live), content_type="text/html")


def _filters_apply(engine: Engine, token: Token, name: str) -> bool:
    """An embed token's filters name group keys; a view without them is refused to it (403), and
    one refused subscription would refuse the page's whole stream: such a view is not shown."""
    spec = engine.registry.views[name].spec
    return all(spec.column(key) is not None for key, _ in token.filters)


def _dashboard_view(
    engine: Engine, name: str, carry: str, follow: Callable[[str], int | None]
) -> dict[str, Any]:
    spec = engine.registry.views[name].spec
    order = {} if spec.window is None else {"order_by": f"-{spec.window.name}"}
    rows = urlencode({"limit": ROWS_SHOWN + 1, **order})
    entry: dict[str, Any] = {
        "name": name,
        "description": engine.config.descriptions.get(name, ""),
        "query": f"/v1/views/{name}?{urlencode({'limit': ROWS_SHOWN, **order})}{carry}",
        "rows": f"/v1/views/{name}?{rows}{carry}",
        "limit": ROWS_SHOWN,
        "newest_first": bool(order),
        "live": {"table": follow(f"/v1/views/{name}/subscribe?{rows}"), "chart": None},
        "metric": engine.config.charts.get(name),
        "chart": None,
        "series": None,
    }
    if entry["metric"] is not None:
        keys = [c.name for c in spec.columns if c.role == "key"]
        split = {"split_by": keys[0], "top": "5"} if keys else {}
        series = urlencode({"metric": entry["metric"], **split})
        entry["chart"] = f"/v1/views/{name}/chart?{series}{carry}"
        entry["series"] = f"/v1/views/{name}/series?{series}{carry}"
        entry["live"]["chart"] = follow(f"/v1/views/{name}/subscribe?kind=series&{series}")
    return entry
