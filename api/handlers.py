"""Handlers: parse → query → encode. Nothing here mutates view state except through the pipeline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from api.encode import row_dicts, to_csv, to_ndjson
from api.engine import ENGINE, Engine
from api.errors import ApiError
from api.params import bad, encode_cursor, parse_query
from ingest.pipeline import Unavailable
from views import query as q
from views.durations import format_duration
from views.registry import Batch, SourceState
from views.spec import ViewSpec
from views.timefmt import format_time
from views.view import View

OFFLOAD_BYTES = 256 << 10  # decode bodies larger than this in a worker thread


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _engine(request: web.Request) -> Engine:
    engine = request.app[ENGINE]
    if not engine.ready.is_set():
        raise ApiError(503, "restoring state; try again shortly", {"Retry-After": "1"})
    return engine


def _view(engine: Engine, request: web.Request) -> View:
    name = request.match_info["view"]
    view = engine.registry.views.get(name)
    if view is None:
        raise ApiError(404, f"no view named '{name}'", views=sorted(engine.registry.views))
    return view


def _only(request: web.Request, allowed: set[str]) -> None:
    for name in request.query:
        if name not in allowed:
            raise bad(
                name,
                f"unknown parameter; this endpoint takes: {', '.join(sorted(allowed)) or 'none'}",
            )


def _time_or_none(ms: int | None) -> str | None:
    return None if ms is None else format_time(ms)


def freshness(engine: Engine, source: str) -> dict[str, Any]:
    state = engine.registry.sources[source]
    watermark = engine.watermark(source)
    return {
        "source": source,
        "watermark": _time_or_none(watermark),
        "watermark_ms": watermark,
        "position": position_text(state),
    }


def position_text(state: SourceState) -> str:
    """Opaque to clients: ``wal:N`` for HTTP sources, ``part@position,...`` for partitioned."""
    if state.spec.logged:
        return f"wal:{state.positions.get('', 0)}"
    return ",".join(f"{part}@{pos}" for part, pos in sorted(state.positions.items()))


def describe_view(view: View, description: str) -> dict[str, Any]:
    spec: ViewSpec = view.spec
    window = spec.window
    return {
        "name": spec.name,
        "source": spec.source,
        "description": description,
        "sql": spec.sql,
        "columns": [c.describe() for c in spec.columns],
        "keys": [c.name for c in spec.columns if c.role == "key"],
        "window": None
        if window is None
        else {
            "column": window.name,
            "kind": window.kind,
            "size": format_duration(window.size),
            "size_ms": window.size,
            "slide": format_duration(window.slide),
            "slide_ms": window.slide,
        },
        "retention": None if spec.retention is None else format_duration(spec.retention),
        "grace": format_duration(spec.grace) if spec.grace else "0s",
        "max_groups": spec.max_groups,
        "stats": view.stats(),
    }


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    if engine.fatal.is_set():
        raise ApiError(503, engine.fatal_reason or "failed")
    if engine.pipeline.failed is not None:
        raise ApiError(503, engine.pipeline.failed)
    if not engine.ready.is_set():
        raise ApiError(503, "restoring state", {"Retry-After": "1"})
    sources = {name: engine.source_status(name) for name in engine.registry.sources}
    unhealthy = sorted(n for n, s in sources.items() if not s["healthy"])
    if unhealthy:
        raise ApiError(
            503,
            f"source(s) {', '.join(unhealthy)} unhealthy; queries are answered "
            "from the state already counted",
            sources=sources,
        )
    return _json(
        {"status": "ready", "recovery": engine.recovery, "position": engine.registry.position}
    )


async def list_views(request: web.Request) -> web.Response:
    engine = _engine(request)
    _only(request, set())
    views = [
        describe_view(v, engine.config.descriptions.get(n, ""))
        for n, v in engine.registry.views.items()
    ]
    return _json({"views": views})


async def query_view(request: web.Request) -> web.Response:
    engine = _engine(request)
    view = _view(engine, request)
    settings = engine.settings
    source = view.spec.source
    version = engine.registry.sources[source].version
    key = ("query", view.spec.name, tuple(sorted(request.query.items())))
    cached = engine.answers.get(key, version)
    if cached is None:
        query, output = parse_query(
            view.spec, request.query, settings.default_limit, settings.max_limit
        )
        try:
            result = q.run(view, query)
        except q.QueryError as err:
            raise bad(err.param, str(err)) from None
        cursor = (
            None if result.next_offset is None else encode_cursor(result.next_offset, request.query)
        )
        meta = {"output": output, "cursor": cursor, "truncated": result.truncated}
        if output == "json":
            # Everything but the closing freshness, which is added per response.
            body = orjson.dumps(
                {
                    "view": view.spec.name,
                    "columns": [c.describe() for c in result.columns],
                    "rows": row_dicts(result),
                    "truncated": result.truncated,
                    "next_cursor": cursor,
                }
            )[:-1]
        else:
            body = to_csv(result) if output == "csv" else to_ndjson(result)
        engine.answers.put(key, version, body, meta)
    else:
        body, meta = cached.body, cached.meta
    fresh = freshness(engine, source)
    if meta["output"] == "json":
        return web.Response(
            body=body + b',"freshness":' + orjson.dumps(fresh) + b"}",
            content_type="application/json",
        )
    headers = {
        "X-Tallyd-Truncated": str(meta["truncated"]).lower(),
        "X-Tallyd-Position": fresh["position"],
    }
    if fresh["watermark"] is not None:
        headers["X-Tallyd-Watermark"] = fresh["watermark"]
    if meta["cursor"] is not None:
        headers["X-Tallyd-Next-Cursor"] = meta["cursor"]
    if meta["output"] == "csv":
        return web.Response(body=body, content_type="text/csv", charset="utf-8", headers=headers)
    return web.Response(body=body, content_type="application/x-ndjson", headers=headers)


def _keep_limit(request: web.Request, engine: Engine) -> int:
    _only(request, {"limit"})
    text = request.query.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= engine.settings.keep_rejected:
        raise bad("limit", f"must be an integer from 1 to {engine.settings.keep_rejected}")
    return int(text)


async def late_events(request: web.Request) -> web.Response:
    engine = _engine(request)
    view = _view(engine, request)
    limit = _keep_limit(request, engine)
    newest = view.late_events()[-limit:][::-1]
    return _json({"view": view.spec.name, "late": view.counter("late"), "events": newest})


async def list_sources(request: web.Request) -> web.Response:
    engine = _engine(request)
    _only(request, set())
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
                "status": engine.source_status(name),
            }
        )
    return _json({"sources": out})


def _source(engine: Engine, request: web.Request) -> str:
    name = request.match_info["source"]
    if name not in engine.registry.sources:
        raise ApiError(404, f"no source named '{name}'", sources=sorted(engine.registry.sources))
    return name


async def rejected_events(request: web.Request) -> web.Response:
    engine = _engine(request)
    name = _source(engine, request)
    limit = _keep_limit(request, engine)
    state = engine.registry.sources[name]
    newest = list(state.rejected_events)[-limit:][::-1]
    return _json({"source": name, "rejected": state.rejected, "events": newest})


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(
            413,
            f"request body is {request.content_length} bytes; the limit is "
            f"{limit} (max_body_bytes)",
        )
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(
            413, f"request body exceeds {limit} bytes (max_body_bytes), counted after decompression"
        ) from None


async def post_events(request: web.Request) -> web.Response:
    engine = _engine(request)
    name = _source(engine, request)
    _only(request, {"on_error"})
    on_error = request.query.get("on_error", "fail")
    if on_error not in ("fail", "skip"):
        raise bad("on_error", "must be 'fail' (reject the whole body) or 'skip'")
    body = await _read_body(request, engine.settings.max_body_bytes)
    decoder = engine.decoders[name]
    if len(body) > OFFLOAD_BYTES:
        table = await asyncio.to_thread(decoder.table, body)
        if table is not None:  # a large, clean NDJSON body: the column-wise path
            try:
                position = await engine.pipeline.submit(Batch(name, [], 0, table=table), body)
            except Unavailable as err:
                raise ApiError(503, str(err), {"Retry-After": "5"}) from None
            return _json({"accepted": len(table), "rejected": 0, "position": f"wal:{position}"})
        decoded = await asyncio.to_thread(decoder.decode, body)
    else:
        decoded = decoder.decode(body)
    if decoded.errors and on_error == "fail":
        shown = decoded.errors[:100]
        first = shown[0]
        where = f"line {first.line}" + (f", field '{first.field}'" if first.field else "")
        raise ApiError(
            400,
            f"{len(decoded.errors)} of {decoded.lines} lines are invalid, nothing was applied; "
            f"first: {where}: {first.reason}",
            errors=[e.describe() for e in shown],
            invalid_lines=len(decoded.errors),
        )
    if not decoded.events and not decoded.errors:
        current = position_text(engine.registry.sources[name])
        return _json({"accepted": 0, "rejected": 0, "position": current})
    received = format_time(int(time.time() * 1000))  # wall clock: when it reached us
    rejected = [{**e.describe(), "text": e.text, "received_at": received} for e in decoded.errors]
    try:
        position = await engine.pipeline.submit(Batch(name, decoded.events, 0, rejected))
    except Unavailable as err:
        raise ApiError(503, str(err), {"Retry-After": "5"}) from None
    return _json(
        {
            "accepted": len(decoded.events),
            "rejected": len(decoded.errors),
            "position": f"wal:{position}",
        }
    )


async def take_snapshot(request: web.Request) -> web.Response:
    engine = _engine(request)
    _only(request, set())
    try:
        info = await engine.pipeline.snapshot()
    except OSError as err:
        raise ApiError(507, f"snapshot failed: {err.strerror or 'I/O error'}") from None
    return _json(info)
