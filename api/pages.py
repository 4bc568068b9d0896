"""HTML pages: an embeddable live chart of a series, and the dashboard of every view.

Both are self-contained apart from uPlot, which tallyd serves itself from ``/assets/`` (vendored
from npm, see api/static/VENDORED.md): they work offline, with no CDN. The chart reads its series
once, then follows the series' live stream (``subscribe?kind=series``); the page exposes
``window.tallyd`` (updates applied, points drawn) so tests and embedding apps can observe it.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from multidict import MultiDict

from api.auth import URL_SECRET
from api.context import engine_of, only, readable, view_of
from api.errors import ApiError
from api.params import bad
from api.read import series_answer

STATIC = Path(__file__).parent / "static"
ASSETS = {
    "uPlot.iife.min.js": "application/javascript",
    "uPlot.min.css": "text/css",
}
CHART_PARAMS = {"type", "theme", "title", "unit", "interval"}
TYPES = ("line", "area", "bar")
THEMES = ("light", "dark")


def embed_json(data: Any) -> str:
    """JSON safe inside a <script> element (no ``</script>`` can close it early)."""
    return orjson.dumps(data).decode().replace("<", "\\u003c").replace(">", "\\u003e")


CHART = Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>$title</title>
<link rel="stylesheet" href="/assets/uPlot.min.css">
<style>
  :root { --bg: #ffffff; --fg: #1f2328; --grid: #d0d7de; --muted: #656d76; }
  :root[data-theme="dark"] { --bg: #0d1117; --fg: #e6edf3; --grid: #30363d; --muted: #8d96a0; }
  html, body { margin: 0; background: var(--bg); color: var(--fg);
    font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
  #chart { padding: 8px 8px 0 8px; }
  h1 { font-size: 14px; font-weight: 600; margin: 8px 12px 0 12px; }
  #status { color: var(--muted); font-size: 11px; margin: 0 12px 6px 12px; }
  .u-legend { color: var(--fg); }
</style></head>
<body>
<h1 id="title">$title</h1>
<div id="status">loading…</div>
<div id="chart"></div>
<script id="config" type="application/json">$config</script>
<script src="/assets/uPlot.iife.min.js"></script>
<script>
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("config").textContent);
  document.documentElement.dataset.theme = config.theme;
  const css = getComputedStyle(document.documentElement);
  const palette = ["#2f81f7", "#e8590c", "#2da44e", "#bf3989", "#8250df", "#d4a72c",
                   "#1b7c83", "#cf222e", "#6e7781", "#953800"];
  const state = { x: [], series: [], freshness: null };
  const observed = window.tallyd = { updates: 0, points: 0, series: [], error: null };
  let plot = null;

  function fmt(v) {
    if (v == null) return "\u2013";
    const abs = Math.abs(v);
    const text = abs >= 1e6 ? (v / 1e6).toFixed(2) + "M" : abs >= 1e4 ? (v / 1e3).toFixed(1) + "k"
      : Number.isInteger(v) ? String(v) : v.toFixed(2);
    return config.unit ? text + " " + config.unit : text;
  }

  function data() {
    return [state.x.map((ms) => ms / 1000), ...state.series.map((s) => s.values)];
  }

  function build() {
    const el = document.getElementById("chart");
    if (plot) plot.destroy();
    const bars = config.type === "bar" && uPlot.paths.bars
      ? uPlot.paths.bars({ size: [0.8] }) : null;
    const opts = {
      width: Math.max(200, el.clientWidth - 16),
      height: Math.max(160, window.innerHeight - 90),
      scales: { x: { time: true } },
      axes: [
        { stroke: css.getPropertyValue("--fg"), grid: { stroke: css.getPropertyValue("--grid") } },
        { stroke: css.getPropertyValue("--fg"), grid: { stroke: css.getPropertyValue("--grid") },
          label: config.metric + (config.unit ? " (" + config.unit + ")" : ""),
          values: (u, ticks) => ticks.map(fmt), size: 70 },
      ],
      series: [{ label: "time" }, ...state.series.map((s, i) => ({
        label: s.name, stroke: palette[i % palette.length], width: 2,
        fill: config.type === "area" ? palette[i % palette.length] + "33"
          : config.type === "bar" ? palette[i % palette.length] + "aa" : undefined,
        paths: bars || undefined, value: (u, v) => fmt(v), spanGaps: false,
      }))],
      legend: { live: true },
    };
    plot = new uPlot(opts, data(), el);
    observed.series = state.series.map((s) => s.name);
  }

  function draw(rebuild) {
    observed.points = state.series.reduce(
      (n, s) => n + s.values.filter((v) => v != null).length, 0);
    if (rebuild || !plot) build(); else plot.setData(data());
    observed.updates += 1;
    observed.lastX = state.x[state.x.length - 1];
    const f = state.freshness;
    document.getElementById("status").textContent = f
      ? "live · data up to " + (f.watermark || "\u2013") + " · " + f.position : "live";
  }

  function answer(a) {
    state.x = a.x; state.series = a.series; state.freshness = a.freshness; draw(true);
  }

  function change(c) {
    let rebuild = false;
    if (c.x) {
      const old = new Map(state.x.map((x, i) => [x, i]));
      state.series.forEach((s) => {
        s.values = c.x.map((x) => (old.has(x) ? s.values[old.get(x)] : null));
      });
      state.x = c.x;
    }
    (c.points || []).forEach(([name, x, v]) => {
      let s = state.series.find((t) => t.name === name);
      if (!s) {
        s = { name, values: state.x.map(() => null) }; state.series.push(s); rebuild = true;
      }
      const i = state.x.indexOf(x);
      if (i >= 0) s.values[i] = v;
    });
    if (c.removed && c.removed.length) {
      state.series = state.series.filter((s) => !c.removed.includes(s.name)); rebuild = true;
    }
    if (c.freshness) state.freshness = c.freshness;
    draw(rebuild);
  }

  const stream = new EventSource(config.subscribe);
  stream.addEventListener("answer", (e) => answer(JSON.parse(e.data)));
  stream.addEventListener("change", (e) => change(JSON.parse(e.data)));
  stream.onerror = () => {
    document.getElementById("status").textContent = "reconnecting…";
  };
  fetch(config.series).then((r) => r.json()).then((a) => {
    if (a.error) { observed.error = a.error.message;
      document.getElementById("status").textContent = a.error.message; return; }
    if (!plot) answer(a);
  });
  new ResizeObserver(() => plot && plot.setSize({
    width: Math.max(200, document.getElementById("chart").clientWidth - 16),
    height: Math.max(160, window.innerHeight - 90) })).observe(document.body);
})();
</script>
</body></html>
"""
)


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
        "series": f"/v1/views/{view}/series?{query}",
        "subscribe": f"/v1/views/{view}/subscribe?kind=series&{query}"
        + (f"&interval={extra['interval']}" if "interval" in extra else ""),
    }
    title = extra.get("title") or f"{view} · {params.get('metric', '')}"
    return CHART.substitute(title=html.escape(title), config=embed_json(config))


DASHBOARD = Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>tallyd</title>
<style>
  body { margin: 0 auto; max-width: 1200px; padding: 16px;
    font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; }
  h1 { font-size: 20px; } h2 { font-size: 16px; margin: 0; }
  .view { border: 1px solid #d0d7de; border-radius: 8px; padding: 12px 16px; margin: 16px 0; }
  .meta { color: #656d76; font-size: 12px; }
  iframe { width: 100%; height: 320px; border: 0; }
  table { border-collapse: collapse; font-size: 12px; margin-top: 8px; }
  th, td { border-bottom: 1px solid #eaeef2; padding: 3px 10px; text-align: right; }
  th:first-child, td:first-child { text-align: left; }
  code, pre { background: #f6f8fa; border-radius: 4px; font-size: 12px; }
  pre { padding: 8px; overflow-x: auto; }
  details { margin-top: 8px; }
</style></head>
<body>
<h1>tallyd · live views</h1>
<p class="meta">Every view of this server, live. Each chart is an embeddable page; copy its
<code>&lt;iframe&gt;</code>. Tables refresh as events arrive.</p>
<div id="views"></div>
<script id="config" type="application/json">$config</script>
<script>
(function () {
  "use strict";
  const views = JSON.parse(document.getElementById("config").textContent);
  const root = document.getElementById("views");
  const seen = window.tallyd = { views: views.map((v) => v.name), tables: 0 };
  function text(tag, content, cls) {
    const el = document.createElement(tag); el.textContent = content;
    if (cls) el.className = cls; return el;
  }
  function table(box, answer) {
    const old = box.querySelector("table"); if (old) old.remove();
    const t = document.createElement("table");
    const names = answer.columns.map((c) => c.name);
    const head = t.insertRow(); names.forEach((n) => head.appendChild(text("th", n)));
    const show = (v) => typeof v === "number" && !Number.isInteger(v)
      ? String(Number(v.toPrecision(10)))  // exact sums can end in ...0000001: display only
      : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
    answer.rows.forEach((r) => { const row = t.insertRow();
      names.forEach((n) => row.insertCell().textContent = show(r[n])); });
    box.appendChild(t); seen.tables += 1;
  }
  views.forEach((v) => {
    const box = document.createElement("section");
    box.className = "view"; box.id = "view-" + v.name;
    box.appendChild(text("h2", v.name));
    box.appendChild(text("div", v.description || "", "meta"));
    if (v.chart) {
      const frame = document.createElement("iframe");
      frame.src = v.chart; frame.title = v.name; frame.loading = "lazy"; box.appendChild(frame);
    }
    const links = document.createElement("details");
    links.appendChild(text("summary", "embed and query"));
    if (v.chart) links.appendChild(text("pre", '<iframe src="' + location.origin + v.chart +
      '" width="100%" height="320" style="border:0"></iframe>'));
    links.appendChild(text("pre", location.origin + v.query));
    box.appendChild(links);
    root.appendChild(box);
    const stream = new EventSource(v.live);
    const apply = (e) => { const d = JSON.parse(e.data); if (d.rows) table(box, d);
      else fetch(v.query).then((r) => r.json()).then((a) => table(box, a)); };
    stream.addEventListener("answer", apply);
    stream.addEventListener("change", apply);
  });
})();
</script>
</body></html>
"""
)


def dashboard_page(views: list[dict[str, Any]]) -> str:
    return DASHBOARD.substitute(config=embed_json(views))


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
    if params.get("format", "json") != "json":
        raise bad("format", "a chart reads the JSON series")
    series_answer(engine, view, params)  # a bad series request is a 400 here, not a blank page
    body = chart_page(view.spec.name, dict(params.items()), extra, request.get(URL_SECRET))
    return web.Response(text=body, content_type="text/html")


async def dashboard(request: web.Request) -> web.Response:
    """Every view: a live chart (windowed views) and a live table, with embed snippets."""
    engine = engine_of(request)
    only(request, set())
    secret = request.get(URL_SECRET)
    carry = "" if secret is None else "&" + urlencode({"token": secret})
    views = []
    for name in readable(request, engine):
        spec = engine.registry.views[name].spec
        newest_first = "" if spec.window is None else f"&order_by=-{spec.window.name}"
        entry: dict[str, Any] = {
            "name": name,
            "description": engine.config.descriptions.get(name, ""),
            "query": f"/v1/views/{name}?limit=10{newest_first}{carry}",
            "live": f"/v1/views/{name}/subscribe?kind=rows&limit=10{newest_first}{carry}",
            "chart": None,
        }
        metric = next(
            (c.name for c in spec.columns if c.role == "aggregate" and c.type != "array"), None
        )
        if spec.window is not None and metric is not None:
            params = {"metric": metric}
            keys = [c.name for c in spec.columns if c.role == "key"]
            if keys:
                params |= {"split_by": keys[0], "top": "5"}
            entry["chart"] = f"/v1/views/{name}/chart?{urlencode(params)}{carry}"
        views.append(entry)
    return web.Response(text=dashboard_page(views), content_type="text/html")
