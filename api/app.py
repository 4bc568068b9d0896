"""The application: one route table, one error middleware, one engine context."""

from __future__ import annotations

import math
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiDict, MultiMapping

from api import admin, cluster, pages, read, stream, write
from api.auth import TOKEN, URL_SECRET, Auth, Token, parse_auth
from api.engine import ENGINE, Engine, engine_context
from api.errors import ApiError, error_middleware
from api.openapi import document
from api.settings import Settings
from views.config import Config


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document(ROUTES, "1"))


# (method, path, handler, permission, summary) — the README's API section is checked against
# this table. Permission: None (public), or (action, the path parameter naming its target).
READ_ANY = ("read", None)
ROUTES = (
    ("GET", "/", pages.dashboard, READ_ANY, "Dashboard: every view as a live chart and table."),
    (
        "GET",
        "/assets/{name}",
        pages.asset,
        None,
        "Chart scripts: the web components, uPlot (vendored).",
    ),
    ("GET", "/openapi.json", openapi_json, None, "This API, as an OpenAPI 3.1 document."),
    ("GET", "/healthz", admin.healthz, None, "Liveness: 200 while the process runs."),
    ("GET", "/readyz", admin.readyz, None, "Readiness: 200 once state is restored, else 503."),
    ("GET", "/v1/views", read.list_views, READ_ANY, "Every view: columns, keys, window, counters."),
    ("GET", "/v1/views/{view}", read.query_view, ("read", "view"), "Query a view's rows."),
    ("GET", "/v1/views/{view}/series", read.series_view, ("read", "view"), "Chart-ready series."),
    ("GET", "/v1/views/{view}/subscribe", stream.subscribe, ("read", "view"), "Live (SSE)."),
    ("GET", "/v1/live", stream.live, READ_ANY, "Several live subscriptions, one SSE stream."),
    (
        "GET",
        "/v1/views/{view}/chart",
        pages.embed_handler("chart"),
        ("read", "view"),
        "Embeddable live chart of a series (HTML).",
    ),
    (
        "GET",
        "/v1/views/{view}/tile",
        pages.embed_handler("tile"),
        ("read", "view"),
        "Embeddable KPI tile: a metric this period, its change, a sparkline (HTML).",
    ),
    (
        "GET",
        "/v1/views/{view}/top",
        pages.embed_handler("top"),
        ("read", "view"),
        "Embeddable live ranking: horizontal bars (HTML).",
    ),
    (
        "GET",
        "/v1/views/{view}/table",
        pages.embed_handler("table"),
        ("read", "view"),
        "Embeddable live table (HTML).",
    ),
    ("GET", "/v1/views/{view}/late", read.late_events, ("read", "view"), "Late events kept."),
    ("GET", "/v1/sources", admin.list_sources, ("admin", None), "Every source: schema, counters."),
    ("POST", "/v1/sources/{source}/events", write.post_events, ("append", "source"), "Ingest."),
    ("GET", "/v1/sources/{source}/rejected", admin.rejected_events, ("admin", None), "Rejects."),
    ("POST", "/v1/admin/snapshot", admin.take_snapshot, ("admin", None), "Write a snapshot now."),
    ("GET", "/v1/status", admin.status, ("admin", None), "Figures of sources, views, ingest."),
    ("GET", "/v1/admin/config", admin.running_config, ("admin", None), "The config it runs."),
    ("POST", "/v1/admin/config", admin.apply_config, ("admin", None), "Apply a config live."),
    ("GET", cluster.PARTS_PATH, cluster.view_parts, None, "Members only: partition states."),
    ("GET", "/metrics", admin.metrics, ("admin", None), "The same for Prometheus."),
)
PERMISSIONS = {(method, path): permission for method, path, _, permission, _ in ROUTES}
CORS_HEADERS = "Authorization, Content-Type, Content-Encoding, Idempotency-Key, Last-Event-ID"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who may call what (api/auth.py); CORS for the allowed origins."""
    auth = request.app[AUTH]
    origin = request.headers.get("Origin")
    allowed_origin = origin if origin is not None and origin in auth.cors_origins else None
    if request.method == "OPTIONS" and allowed_origin is not None:  # a CORS preflight
        return web.Response(status=204, headers=_cors(allowed_origin, preflight=True))
    resource = request.match_info.route.resource
    permission = PERMISSIONS.get((request.method, resource.canonical if resource else ""))
    secret = _secret(request)
    if "token" in request.query:  # never seen by handlers' parameters, caches or logs
        in_url = request.query["token"]
        rest = MultiDict((k, v) for k, v in request.query.items() if k != "token")
        request = request.clone(rel_url=request.rel_url.with_query(rest))
        request[URL_SECRET] = in_url
    if auth.enabled and permission is not None:
        token = (auth.identify(secret) or auth.embedded(secret)) if secret else None
        if token is None:
            raise ApiError(
                401,
                "a valid token is required: Authorization: Bearer <token> (or ?token=)",
                {"WWW-Authenticate": 'Bearer realm="tallyd"'},
            )
        action, key = permission
        target = request.match_info.get(key) if key else None
        if not token.allows(action, target) and not (
            permission == READ_ANY and any(s.startswith("read:") for s in token.scopes)
        ):
            raise ApiError(403, _refusal(request, action, key, target))
        if token.filters and key == "view" and target is not None:
            request = _forced(request, token, target)
        if resource is not None and resource.canonical == "/v1/live":
            request = _subscriptions(request, token)
        _rate(request.app[ENGINE], token)
        request[TOKEN] = token
    return await handler(request)


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """CORS for the allowed origins on every answer as it is sent: errors too (an app on another
    origin reads why it was refused, not 'failed to fetch'), and streams, whose headers leave
    before their handler returns."""
    auth = request.app[AUTH]
    origin = request.headers.get("Origin")
    if origin is not None and origin in auth.cors_origins and request.method != "OPTIONS":
        response.headers.update(_cors(origin, preflight=False))
    if auth.cors_origins and response.content_type == "text/html":
        ancestors = " ".join(("'self'", *auth.cors_origins))
        response.headers["Content-Security-Policy"] = f"frame-ancestors {ancestors}"


def _refusal(request: web.Request, action: str, key: str | None, target: str | None) -> str:
    """Why a token may not: what it asked, and which scope would allow it."""
    asked = f"{request.method} {request.path}"
    if target is None:
        needed = "the 'admin' scope" if action == "admin" else f"an '{action}' scope"
        return f"this token lacks {needed}, which {asked} needs"
    thing = "view" if key == "view" else "source"
    return (
        f"this token may not {action} {thing} '{target}' ({asked}): it needs the "
        f"'{action}' or '{action}:{target}' scope"
    )


def _rate(engine: Engine, token: Token) -> None:
    """A token bucket per token: ``rate_limit`` per second on average, ``rate_burst`` at once."""
    rate, burst = engine.settings.rate_limit, engine.settings.rate_burst
    now = time.monotonic()
    allowance, at = engine.buckets.get(token.key, (float(burst), now))
    allowance = min(float(burst), allowance + (now - at) * rate)
    if allowance < 1:
        wait = max(1, math.ceil((1 - allowance) / rate))
        raise ApiError(
            429,
            f"this token is over its rate limit ({rate} requests/s, bursts of {burst}); "
            "retry after the Retry-After seconds",
            {"Retry-After": str(wait)},
        )
    if len(engine.buckets) > 10_000:  # embed grants are unbounded in number: forget idle ones
        engine.buckets.clear()
    engine.buckets[token.key] = (allowance - 1, now)


def _forced(request: web.Request, token: Token, view: str) -> web.Request:
    """An embed token's filters, forced onto a read of ``view`` (``_force``)."""
    if request.path.endswith("/late"):  # raw events of every tenant: nothing to filter them by
        raise ApiError(403, "late events are not available to a filtered (embed) token")
    query = _force(request.app[ENGINE], token, view, request.query)
    return request.clone(rel_url=request.rel_url.with_query(query))


def _force(engine: Engine, token: Token, view: str, params: MultiMapping[str]) -> MultiDict[str]:
    """``params`` of a read of ``view`` with the token's filters forced: a parameter may narrow
    them, never widen or replace them (403, not a silent merge)."""
    spec = engine.registry.views[view].spec
    keys = {c.name for c in spec.columns if c.role == "key"}
    query = MultiDict(params)
    for key, allowed in token.filters:
        if key not in keys:
            raise ApiError(403, f"this token's filters do not apply to view {view}")
        asked = query.getall(key, [])
        if asked and not set(asked) <= allowed:
            raise ApiError(403, f"parameter '{key}': outside what this token may read")
        if not asked:
            for value in sorted(allowed):
                query.add(key, value)
    return query


def _subscriptions(request: web.Request, token: Token) -> web.Request:
    """``/v1/live``: each subscription is a read of its view, authorized as ``/subscribe`` would
    be — the token must be allowed to read that view, and an embed token's filters are forced
    onto it."""
    engine = request.app[ENGINE]
    query: MultiDict[str] = MultiDict()
    for name, text in request.query.items():
        if name != "s":
            query.add(name, text)  # the handler refuses it
            continue
        sub = stream.Subscription.parse(len(query.getall("s", [])), text)
        if not token.allows("read", sub.view):
            raise sub.error(f"this token may not read {sub.view}", 403)
        if token.filters and sub.view in engine.registry.views:
            try:
                sub = sub.with_query(_force(engine, token, sub.view, sub.query))
            except ApiError as err:
                raise sub.error(err.message, err.status) from None
        query.add("s", sub.text)
    return request.clone(rel_url=request.rel_url.with_query(query))


def _secret(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.query.get("token")


def _cors(origin: str, preflight: bool) -> dict[str, str]:
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if preflight:
        headers |= {
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": "600",
        }
    else:
        headers["Access-Control-Expose-Headers"] = (
            "X-Tallyd-Position, X-Tallyd-Watermark, X-Tallyd-Truncated, X-Tallyd-Next-Cursor, "
            "Retry-After, Idempotent-Replayed"
        )
    return headers


AUTH = web.AppKey("auth", Auth)


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
        middlewares=[timing_middleware, error_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[AUTH] = parse_auth(config.auth, config.path, list(config.views), list(config.sources))
    app.on_response_prepare.append(cors_headers)
    app[ENGINE] = Engine(config, settings, manage_gc)
    app.cleanup_ctx.append(engine_context)
    for method, path, handler, _, _ in ROUTES:
        app.router.add_route(method, path, handler)
    return app
