"""Operations: liveness, readiness, sources and their rejected events, status and metrics, and
a snapshot on demand."""

from __future__ import annotations

import tomllib

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import AuthError
from api.context import engine_of, freshness, json_response, keep_limit, only, source_of
from api.engine import ENGINE
from api.errors import ApiError
from api.metrics import engine_status
from views.config import ConfigError, parse
from views.plan import NotLive


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    if engine.fatal.is_set():
        raise ApiError(503, engine.fatal_reason or "failed")
    if engine.http.failed is not None:
        raise ApiError(503, engine.http.failed)
    if not engine.ready.is_set():
        raise ApiError(503, "restoring state", {"Retry-After": "1"})
    sources = {name: source.status() for name, source in engine.sources.items()}
    unhealthy = sorted(n for n, s in sources.items() if not s["healthy"])
    if unhealthy:
        raise ApiError(
            503,
            f"source(s) {', '.join(unhealthy)} unhealthy; queries are answered "
            "from the state already counted",
            sources=sources,
        )
    return json_response(
        {"status": "ready", "recovery": engine.recovery, "position": engine.http.position}
    )


async def list_sources(request: web.Request) -> web.Response:
    engine = engine_of(request)
    only(request, set())
    out = []
    for name, state in engine.registry.sources.items():
        out.append(
            {
                "name": name,
                "time": state.spec.time_field,
                "fields": state.spec.schema,
                "accepted": state.accepted,
                "rejected": state.rejected,
                "views": [v.spec.name for v in engine.registry.by_source[name]],
                "freshness": freshness(engine, name),
                "status": engine.sources[name].status(),
            }
        )
    return json_response({"sources": out})


async def rejected_events(request: web.Request) -> web.Response:
    engine = engine_of(request)
    name = source_of(engine, request)
    limit = keep_limit(request, engine)
    state = engine.registry.sources[name]
    newest = list(state.rejected_events)[-limit:][::-1]
    return json_response({"source": name, "rejected": state.rejected, "events": newest})


async def status(request: web.Request) -> web.Response:
    only(request, set())
    return json_response(engine_status(engine_of(request)))


async def running_config(request: web.Request) -> web.Response:
    """The config this server runs, as it read it (``tallyd plan --url`` compares a new one)."""
    only(request, set())
    engine = engine_of(request)
    config = engine.config
    history = await engine.history_sizes()
    return json_response({"path": config.path, "config": config.raw, "history": history})


async def apply_config(request: web.Request) -> web.Response:
    """Apply a config (the body: its TOML) without a restart, when all it changes can change
    live (``views.plan.live_refusals``); 409 with the reasons otherwise, 400 for an invalid one.
    Nothing changes unless everything does."""
    only(request, set())
    engine = engine_of(request)
    text = await request.text()
    try:
        plan = await engine.apply_config(parse(tomllib.loads(text), engine.config.path))
    except tomllib.TOMLDecodeError as err:
        raise ApiError(400, f"the posted config is not valid TOML: {err}") from None
    except (ConfigError, AuthError) as err:
        raise ApiError(400, f"the posted config: {err}") from None
    except NotLive as err:
        raise ApiError(
            409,
            "this config cannot be applied to the running server: " + "; ".join(err.reasons),
            plan=err.plan.to_json(),
        ) from None
    return json_response({"applied": plan.to_json(), "file": engine.config_file_note()})


async def metrics(request: web.Request) -> web.Response:
    only(request, set())
    body = generate_latest(engine_of(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def take_snapshot(request: web.Request) -> web.Response:
    engine = engine_of(request)
    only(request, set())
    try:
        info = await engine.snapshot()
    except OSError as err:
        raise ApiError(507, f"snapshot failed: {err.strerror or str(err) or 'I/O error'}") from None
    return json_response(info)
