"""HTML pages: embeddable live charts, KPI tiles, rankings and tables, and the dashboard.

Everything is served by tallyd itself from ``/assets/`` (uPlot vendored from npm, see
api/static/VENDORED.md): the pages work offline, with no CDN. ``tallyd.js`` defines the web
components ``<tallyd-chart>``, ``<tallyd-tile>``, ``<tallyd-top>`` and ``<tallyd-table>``; an
embed page (``/v1/views/{view}/chart``, ``/tile``, ``/top``, ``/table``) is one of them, its
parameters checked here first (a bad one is a 400, not a blank frame). ``chart.js`` draws a
series and formats numbers and rows for the components and the dashboard alike.

Live, a page's embeds share one ``/v1/live`` stream (a browser opens at most six connections per
host), and tallyd's own pages share one across frames through a SharedWorker. Pages expose
``window.tallyd`` (updates applied, values shown) so tests and embedding apps can observe them.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
from api.params import SERIES_PARAMS, bad, row_keys
from api.read import rows_answer, series_answer
from api.stream import live_interval
from views.view import View

STATIC = Path(__file__).parent / "static"
ASSETS = {
    "uPlot.iife.min.js": "application/javascript",
    "uPlot.min.css": "text/css",
    "chart.js": "application/javascript",
    "dashboard.js": "application/javascript",
    "tallyd.js": "application/javascript",
}
# One version for every asset, from all their contents: tallyd.js loads the others with its own
# ?v=, so they are cached for a day, yet never stale after an upgrade (the handler ignores it).
VERSION = hashlib.sha256(b"".join((STATIC / name).read_bytes() for name in ASSETS)).hexdigest()
SCRIPTS = {
    "uplot_js": f"/assets/uPlot.iife.min.js?v={VERSION[:12]}",
    "uplot_css": f"/assets/uPlot.min.css?v={VERSION[:12]}",
    "chart_js": f"/assets/chart.js?v={VERSION[:12]}",
    "dashboard_js": f"/assets/dashboard.js?v={VERSION[:12]}",
    "tallyd_js": f"/assets/tallyd.js?v={VERSION[:12]}",
}
EMBED = Template((STATIC / "embed.html").read_text())
DASHBOARD = Template((STATIC / "dashboard.html").read_text())
ROWS_SHOWN = 10  # a dashboard table shows this many rows, and asks for one more to know if more
TYPES = ("line", "area", "bar")
IN_PROGRESS = ("show", "hide")  # the buckets after complete_until: drawn dashed, or left out
THEMES = ("light", "dark")
PERIODS = ("current", "last")  # a tile's: the newest bucket (so far), or the newest final one
BOOLEANS = ("true", "false")
COMMON = {"theme", "title", "unit", "interval"}  # every embed page's


@dataclass(frozen=True)
class Embed:
    """An embed page: its element, the query parameters it passes on as attributes, and which of
    them take one of a few values."""

    element: str
    params: frozenset[str]
    choices: dict[str, tuple[str, ...]]


EMBEDS = {
    "chart": Embed(
        "tallyd-chart",
        frozenset({*SERIES_PARAMS, "type", "stack", "in_progress"} - {"format"}),
        {"type": TYPES, "in_progress": IN_PROGRESS, "stack": BOOLEANS},
    ),
    "tile": Embed(
        "tallyd-tile", frozenset({"metric", "bucket", "tz", "fill", "period"}), {"period": PERIODS}
    ),
    "top": Embed("tallyd-top", frozenset({"metric", "by", "column", "limit", "from", "to"}), {}),
    "table": Embed(
        "tallyd-table",
        frozenset({"limit", "order_by", "columns", "from", "to", "group_by", "bucket"}),
        {},
    ),
}


def embed_json(data: Any) -> str:
    """JSON safe inside a <script> element (no ``</script>`` can close it early)."""
    return orjson.dumps(data).decode().replace("<", "\\u003c").replace(">", "\\u003e")


def embed_page(kind: str, view: str, attributes: dict[str, str], title: str) -> str:
    """The page of one embed: its element with ``attributes`` (parameter names as attribute
    names: ``split_by`` as ``split-by``, ``title`` as ``label``)."""
    shown = " ".join(
        f'{name.replace("_", "-")}="{html.escape(value)}"'
        for name, value in {"view": view, **attributes}.items()
    )
    element = f'<{EMBEDS[kind].element} id="embed" {shown}></{EMBEDS[kind].element}>'
    return EMBED.substitute(SCRIPTS, title=html.escape(title), element=element)


def dashboard_page(views: list[dict[str, Any]]) -> str:
    return DASHBOARD.substitute(SCRIPTS, config=embed_json(views))


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise ApiError(404, f"no asset named '{name}'")
    return web.Response(
        body=(STATIC / name).read_bytes(),
        content_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )


def embed_handler(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``/v1/views/{view}/<kind>``: the page of one embed. Its parameters are checked as the
    component will use them — a bad one is a 400 naming it, not a blank frame."""
    embed = EMBEDS[kind]

    async def page(request: web.Request) -> web.Response:
        engine = engine_of(request)
        view = view_of(engine, request)
        spec = view.spec
        keys = {c.name for c in spec.columns if c.role == "key"}
        attributes: dict[str, str] = {}
        filters: list[tuple[str, str]] = []
        for name, value in request.query.items():
            if name in keys:
                filters.append((name, value))
            elif name in embed.params or name in COMMON:
                if name in attributes:
                    raise bad(name, "given twice")
                attributes[name] = value
            else:
                known = sorted(embed.params | COMMON)
                hint = f"; group keys you can filter on: {', '.join(sorted(keys))}" if keys else ""
                raise bad(name, f"unknown parameter of a {kind}; known: {', '.join(known)}{hint}")
        for name, allowed in {**embed.choices, "theme": THEMES}.items():
            if name in attributes and attributes[name] not in allowed:
                raise bad(name, f"{attributes[name]!r} is not one of {', '.join(allowed)}")
        _check(kind, engine, view, attributes, filters)
        if filters:
            attributes["filter"] = urlencode(filters)
        secret = request.get(URL_SECRET)
        if secret is not None:  # what the page loads is authorized as the page was
            attributes["token"] = secret
        if "title" in attributes:
            attributes["label"] = attributes.pop("title")
        if kind == "chart":
            attributes["height"] = "fill"
        title = attributes.get("label") or f"{spec.name} · {attributes.get('metric', kind)}"
        body = embed_page(kind, spec.name, attributes, title)
        return web.Response(text=body, content_type="text/html")

    return page


def _check(
    kind: str,
    engine: Engine,
    view: View,
    attributes: dict[str, str],
    filters: list[tuple[str, str]],
) -> None:
    """Ask the question the component will ask (api/static/tallyd.js), once: a bad one fails
    here, with its reason, instead of in the page — or, worse, in the live stream its page
    shares with others."""
    attributes = {k: v for k, v in attributes.items() if v != ""}  # as the component: unset
    if "interval" in attributes:
        live_interval(attributes["interval"])
    asked = MultiDict(filters)
    keys = [c.name for c in view.spec.columns if c.role == "key"]
    window = view.spec.window.name if view.spec.window is not None else None
    if kind in ("chart", "tile"):
        for name in EMBEDS[kind].params & SERIES_PARAMS:
            if name in attributes:
                asked[name] = attributes[name]
        series_answer(engine, view, asked)
        return
    for name in ("from", "to", "group_by", "bucket"):
        if name in attributes:
            asked[name] = attributes[name]
    if kind == "table":
        if attributes.get("bucket") == "all":
            window = None
        limit = attributes.get("limit", "10")
        asked["limit"] = str(int(limit) + 1) if limit.isdigit() else limit  # one more: any more?
        order = attributes.get("order_by") or (f"-{window}" if window else None)
        if order:
            asked["order_by"] = order
        if "columns" in attributes:  # the rows' window and keys come too, to tell rows apart
            shown = [c.strip() for c in attributes["columns"].split(",") if c.strip()]
            asked["columns"] = ",".join(dict.fromkeys([*row_keys(view.spec, asked), *shown]))
        rows_answer(engine, view, asked)
        return
    column, metric, by = (attributes.get(n) for n in ("column", "metric", "by"))
    if "limit" in attributes:
        asked["limit"] = attributes["limit"]
    if column is not None:
        found = view.spec.column(column)
        if found is None or found.type != "array":
            raise bad("column", f"{column!r} is not a top_k column of {view.spec.name}")
        asked.update({"group_by": "", "limit": "1"})  # every key's items, merged
    elif metric is None or by is None:
        raise bad("metric", "give metric= and by= (a group key), or column= (a top_k column)")
    else:  # named as the page's parameters, not as the query's group_by / order_by
        numbers = [c.name for c in view.spec.columns if c.role == "aggregate" and c.type != "array"]
        if by not in keys:
            raise bad("by", f"{by!r} is not a group key of {view.spec.name}; keys: {keys}")
        if metric not in numbers:
            raise bad("metric", f"{metric!r} is not a numeric aggregate; one of {numbers}")
        asked.update({"group_by": by, "order_by": f"-{metric}"})
        if window is not None:
            asked["bucket"] = "all"
    rows_answer(engine, view, asked)


async def dashboard(request: web.Request) -> web.Response:
    """Every view: a live table, and a live chart for windowed views, with embed snippets. They
    are tallyd.js's components, which share one live stream for the page."""
    engine = engine_of(request)
    only(request, set())
    secret = request.get(URL_SECRET)
    token: Token | None = request.get(TOKEN)
    views = [
        _dashboard_view(engine, name, secret)
        for name in readable(request, engine)
        if token is None or _filters_apply(engine, token, name)
    ]
    return web.Response(text=dashboard_page(views), content_type="text/html")


def _filters_apply(engine: Engine, token: Token, name: str) -> bool:
    """An embed token's filters name group keys; a view without them is refused to it (403), and
    one refused subscription would refuse the page's whole stream: such a view is not shown."""
    spec = engine.registry.views[name].spec
    return all(spec.column(key) is not None for key, _ in token.filters)


def _dashboard_view(engine: Engine, name: str, secret: str | None) -> dict[str, Any]:
    spec = engine.registry.views[name].spec
    carry = "" if secret is None else "&" + urlencode({"token": secret})
    order = {} if spec.window is None else {"order_by": f"-{spec.window.name}"}
    entry: dict[str, Any] = {
        "name": name,
        "description": engine.config.descriptions.get(name, ""),
        "query": f"/v1/views/{name}?{urlencode({'limit': ROWS_SHOWN, **order})}{carry}",
        "limit": ROWS_SHOWN,
        "token": secret,  # the page's own, for what its components load
        "metric": engine.config.charts.get(name),
        "chart": None,
        "tile": None,
        "table": f"/v1/views/{name}/table?{urlencode({'limit': ROWS_SHOWN})}{carry}",
        "split_by": None,
    }
    if entry["metric"] is not None:
        keys = [c.name for c in spec.columns if c.role == "key"]
        split = {"split_by": keys[0], "top": "5"} if keys else {}
        series = urlencode({"metric": entry["metric"], **split})
        entry["chart"] = f"/v1/views/{name}/chart?{series}{carry}"
        entry["tile"] = f"/v1/views/{name}/tile?{urlencode({'metric': entry['metric']})}{carry}"
        entry["split_by"] = split.get("split_by")
    return entry
