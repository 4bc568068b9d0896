"""The application: one route table, one error middleware, one engine context."""

from __future__ import annotations

from aiohttp import web

from api import handlers as h
from api import pages
from api.engine import ENGINE, Engine, engine_context
from api.errors import error_middleware
from api.settings import Settings
from views.config import Config

# (method, path, handler, summary) — the README's API section is checked against this table.
ROUTES = (
    ("GET", "/", h.dashboard, "Dashboard: every view as a live chart and table."),
    ("GET", "/assets/{name}", pages.asset, "Vendored chart library (uPlot)."),
    ("GET", "/healthz", h.healthz, "Liveness: 200 while the process runs."),
    ("GET", "/readyz", h.readyz, "Readiness: 200 once state is restored, else 503."),
    ("GET", "/v1/views", h.list_views, "Every view: columns, keys, window, counters."),
    ("GET", "/v1/views/{view}", h.query_view, "Query a view's rows."),
    ("GET", "/v1/views/{view}/series", h.series_view, "Chart-ready series of one metric."),
    ("GET", "/v1/views/{view}/subscribe", h.subscribe, "Live answer and changes (SSE)."),
    ("GET", "/v1/views/{view}/chart", h.chart, "Embeddable live chart (HTML)."),
    ("GET", "/v1/views/{view}/late", h.late_events, "Late events kept for inspection."),
    ("GET", "/v1/sources", h.list_sources, "Every source: schema, counters, freshness."),
    ("POST", "/v1/sources/{source}/events", h.post_events, "Ingest NDJSON or a JSON array."),
    ("GET", "/v1/sources/{source}/rejected", h.rejected_events, "Rejected lines kept."),
    ("POST", "/v1/admin/snapshot", h.take_snapshot, "Write a snapshot now."),
)


def make_app(config: Config, settings: Settings, manage_gc: bool = False) -> web.Application:
    # client_max_size bounds the body *after* aiohttp's transparent gzip decoding.
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app[ENGINE] = Engine(config, settings, manage_gc)
    app.cleanup_ctx.append(engine_context)
    for method, path, handler, _ in ROUTES:
        app.router.add_route(method, path, handler)
    return app
