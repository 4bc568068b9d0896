"""The application: one route table, one error middleware, one engine context."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler

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
    ("GET", "/v1/status", h.status, "Sources, views, snapshots, ingest and live figures (JSON)."),
    ("GET", "/metrics", h.metrics, "The same, and latency histograms, for Prometheus."),
)


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request latency by route template (never the raw path: bounded label values)."""
    started = time.perf_counter()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = f"{request.method} {resource.canonical if resource is not None else 'unmatched'}"
    request.app[ENGINE].metrics.requests.labels(route, f"{response.status // 100}xx").observe(
        time.perf_counter() - started
    )
    return response


def make_app(config: Config, settings: Settings, manage_gc: bool = False) -> web.Application:
    # client_max_size bounds the body *after* aiohttp's transparent gzip decoding.
    app = web.Application(
        middlewares=[timing_middleware, error_middleware], client_max_size=settings.max_body_bytes
    )
    app[ENGINE] = Engine(config, settings, manage_gc)
    app.cleanup_ctx.append(engine_context)
    for method, path, handler, _ in ROUTES:
        app.router.add_route(method, path, handler)
    return app
