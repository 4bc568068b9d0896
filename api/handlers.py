"""Handlers: parse → query → encode. Nothing here mutates view state except through the pipeline."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import io
import time
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from multidict import MultiDict, MultiMapping
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import pages
from api.auth import TOKEN, URL_SECRET, Token
from api.encode import row_dicts, to_csv, to_ndjson
from api.engine import ENGINE, Engine
from api.errors import ApiError
from api.metrics import engine_status
from api.params import bad, check_range, encode_cursor, parse_query, parse_series
from ingest import faults
from ingest.pipeline import Unavailable
from views import query as q
from views.durations import format_duration, parse_duration
from views.registry import Batch, Receipt, SourceState
from views.series import Series, SeriesError, series
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


def _readable(request: web.Request, engine: Engine) -> list[str]:
    """The views this request's token may read (all of them when authorization is off)."""
    names = list(engine.registry.views)
    token: Token | None = request.get(TOKEN)
    return names if token is None else token.readable(names)


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
        describe_view(engine.registry.views[n], engine.config.descriptions.get(n, ""))
        for n in _readable(request, engine)
    ]
    return _json({"views": views})


def rows_answer(
    engine: Engine, view: View, params: MultiMapping[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A query's answer (without freshness) and what the response needs besides it."""
    settings = engine.settings
    query, output = parse_query(view.spec, params, settings.default_limit, settings.max_limit)
    check_range(query.time_from, query.time_to, settings.max_time_range)
    query = dataclasses.replace(query, max_scan=settings.max_groups_scanned)
    try:
        result = q.run(view, query)
    except q.QueryError as err:
        raise bad(err.param, str(err)) from None
    cursor = None if result.next_offset is None else encode_cursor(result.next_offset, params)
    meta: dict[str, Any] = {"output": output, "cursor": cursor, "truncated": result.truncated}
    if output != "json":
        meta["result"] = result
        return {}, meta
    answer = {
        "view": view.spec.name,
        "columns": [c.describe() for c in result.columns],
        "rows": row_dicts(result),
        "truncated": result.truncated,
        "next_cursor": cursor,
    }
    return answer, meta


def series_answer(
    engine: Engine, view: View, params: MultiMapping[str]
) -> tuple[dict[str, Any], str]:
    newest = engine.watermark(view.spec.source)
    query, output = parse_series(
        view.spec,
        params,
        newest if newest is not None else int(time.time() * 1000),
        engine.settings.max_series_points,
    )
    check_range(query.time_from, query.time_to, engine.settings.max_time_range)
    try:
        answer = series(view, query)
    except SeriesError as err:
        raise bad(err.param, str(err)) from None
    if output == "csv":
        return {"csv": series_csv(answer)}, output
    return {"view": view.spec.name, "metric": query.metric, **answer.to_json()}, output


def _cached(request: web.Request, kind: str) -> tuple[Engine, View, tuple[Any, ...], int, Any]:
    """(engine, view, cache key, source version, cached answer or None) of a GET on a view."""
    engine = _engine(request)
    view = _view(engine, request)
    version = engine.registry.sources[view.spec.source].version
    key = (kind, view.spec.name, tuple(sorted(request.query.items())))
    return engine, view, key, version, engine.answers.get(key, version)


async def query_view(request: web.Request) -> web.Response:
    engine, view, key, version, cached = _cached(request, "query")
    source = view.spec.source
    if cached is None:
        answer, meta = rows_answer(engine, view, request.query)
        if meta["output"] == "json":  # everything but the closing freshness, added per response
            body = orjson.dumps(answer)[:-1]
        else:
            result = meta.pop("result")
            body = to_csv(result) if meta["output"] == "csv" else to_ndjson(result)
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


async def series_view(request: web.Request) -> web.Response:
    """Chart-ready columns: ``{"x": [bucket starts], "series": [{"name", "values"}]}``."""
    engine, view, key, version, cached = _cached(request, "series")
    source = view.spec.source
    if cached is not None and "to" in request.query:  # no default range: it moves with time
        body, meta = cached.body, cached.meta
    else:
        answer, output = series_answer(engine, view, request.query)
        body = orjson.dumps(answer)[:-1] if output == "json" else answer["csv"]
        meta = {"output": output}
        engine.answers.put(key, version, body, meta)
    fresh = freshness(engine, source)
    if meta["output"] == "json":
        return web.Response(
            body=body + b',"freshness":' + orjson.dumps(fresh) + b"}",
            content_type="application/json",
        )
    return web.Response(
        body=body,
        content_type="text/csv",
        charset="utf-8",
        headers={"X-Tallyd-Position": fresh["position"]},
    )


def series_csv(answer: Series) -> bytes:
    """``time,<series>...`` with one row per bucket (RFC 3339 UTC times)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time", *[s["name"] for s in answer.series]])
    for i, x in enumerate(answer.x):
        writer.writerow(
            [format_time(x), *["" if (v := s["values"][i]) is None else v for s in answer.series]]
        )
    return out.getvalue().encode()


async def chart(request: web.Request) -> web.Response:
    """An embeddable live chart of ``series`` (same parameters, plus type/theme/title/unit)."""
    engine = _engine(request)
    view = _view(engine, request)
    extra = {k: v for k, v in request.query.items() if k in pages.CHART_PARAMS}
    params = MultiDict((k, v) for k, v in request.query.items() if k not in pages.CHART_PARAMS)
    if extra.get("type", "line") not in pages.TYPES:
        raise bad("type", f"{extra['type']!r} is not one of {', '.join(pages.TYPES)}")
    if extra.get("theme", "light") not in pages.THEMES:
        raise bad("theme", f"{extra['theme']!r} is not one of {', '.join(pages.THEMES)}")
    if params.get("format", "json") != "json":
        raise bad("format", "a chart reads the JSON series")
    series_answer(engine, view, params)  # a bad series request is a 400 here, not a blank page
    body = pages.chart_page(view.spec.name, dict(params.items()), extra, request.get(URL_SECRET))
    return web.Response(text=body, content_type="text/html")


async def dashboard(request: web.Request) -> web.Response:
    """Every view: a live chart (windowed views) and a live table, with embed snippets."""
    engine = _engine(request)
    _only(request, set())
    secret = request.get(URL_SECRET)
    carry = "" if secret is None else "&" + urlencode({"token": secret})
    views = []
    for name in _readable(request, engine):
        view = engine.registry.views[name]
        spec = view.spec
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
    return web.Response(text=pages.dashboard_page(views), content_type="text/html")


LIVE_PARAMS = {"kind", "interval"}


async def subscribe(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the answer to a query (``kind=rows``, its parameters) or a series
    (``kind=series``), then its changes at most once per ``interval`` (api/live.py)."""
    engine = _engine(request)
    view = _view(engine, request)
    params = MultiDict((k, v) for k, v in request.query.items() if k not in LIVE_PARAMS)
    kind = request.query.get("kind", "rows")
    if kind not in ("rows", "series"):
        raise bad("kind", f"{kind!r} is not one of rows, series")
    try:
        interval = parse_duration(request.query.get("interval", "1s")) / 1000
    except ValueError as err:
        raise bad("interval", str(err)) from None
    if not 0.1 <= interval <= 3600:
        raise bad("interval", "must be between 100ms and 1h")
    if params.get("format", "json") != "json":
        raise bad("format", "live answers are JSON")
    source = engine.registry.sources[view.spec.source]

    def compute() -> dict[str, Any]:
        if kind == "rows":
            answer, _ = rows_answer(engine, view, params)
        else:
            answer, _ = series_answer(engine, view, params)
        return {**answer, "freshness": freshness(engine, view.spec.source)}

    key = ("live", view.spec.name, kind, interval, tuple(sorted(params.items())))
    topic = engine.hub.topic(key, compute, lambda: source.version, kind, interval)
    if topic.answer is None:
        topic.refresh()  # the first subscriber's request is checked here: a 400 before streaming
    holder = _holder(request)
    if holder is not None:
        if engine.streams_by_token.get(holder, 0) >= engine.settings.max_subscribers_per_token:
            raise ApiError(
                429,
                f"this token already holds {engine.settings.max_subscribers_per_token} live "
                "streams (max_subscribers_per_token); close one first",
                {"Retry-After": "5"},
            )
        engine.streams_by_token[holder] = engine.streams_by_token.get(holder, 0) + 1
    try:
        return await _stream(request, engine, topic)
    finally:
        if holder is not None:
            engine.streams_by_token[holder] -= 1
            if not engine.streams_by_token[holder]:
                del engine.streams_by_token[holder]


def _holder(request: web.Request) -> str | None:
    token = request.get(TOKEN)
    return None if token is None else token.key


async def _stream(request: web.Request, engine: Engine, topic: Any) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    transport = request.transport
    subscriber = engine.hub.subscribe(topic, transport.abort if transport is not None else None)
    try:
        for first in topic.since(request.headers.get("Last-Event-ID")):
            await response.write(first.encode())
        while True:
            try:
                message = await asyncio.wait_for(
                    subscriber.queue.get(), engine.settings.sse_heartbeat / 1000
                )
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if message is None:  # dropped: it fell too far behind
                break
            await response.write(message.encode())
    except ConnectionError:
        pass
    finally:
        engine.hub.unsubscribe(topic, subscriber)
    return response


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


KEY_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


def _idempotency(
    request: web.Request, engine: Engine, name: str, on_error: str, body: bytes
) -> tuple[Receipt | None, web.Response | None]:
    """The request's receipt (None without an Idempotency-Key), or the answer a retry gets."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None, None
    if not 1 <= len(key) <= 255 or not set(key) <= KEY_CHARS:
        raise ApiError(
            400,
            "header 'Idempotency-Key': 1 to 255 visible ASCII characters (a UUID is typical)",
            param="Idempotency-Key",
        )
    digest = hashlib.sha256(b"%s\0%s\0%s" % (name.encode(), on_error.encode(), body)).hexdigest()
    now = int(time.time() * 1000)
    seen = engine.registry.receipts.get(key)
    if seen is not None and seen["at"] >= now - engine.settings.idempotency_ttl:
        if seen["digest"] != digest or seen["source"] != name:
            raise ApiError(
                422,
                "this Idempotency-Key was already used with a different request (source, body "
                "or on_error); use a new key for new events",
                param="Idempotency-Key",
            )
        answer = {k: seen[k] for k in ("accepted", "rejected")}
        answer["position"] = f"wal:{seen['position']}"
        return None, _json(answer, headers={"Idempotent-Replayed": "true"})
    if key in engine.keys_in_flight:
        raise ApiError(
            409,
            "a request with this Idempotency-Key is being processed; retry when it has answered",
            {"Retry-After": "1"},
            param="Idempotency-Key",
        )
    return Receipt(key, digest, now), None


async def post_events(request: web.Request) -> web.Response:
    engine = _engine(request)
    name = _source(engine, request)
    _only(request, {"on_error"})
    on_error = request.query.get("on_error", "fail")
    if on_error not in ("fail", "skip"):
        raise bad("on_error", "must be 'fail' (reject the whole body) or 'skip'")
    _admit(engine, request.content_length or 0)  # before reading: shed load, not memory
    body = await _read_body(request, engine.settings.max_body_bytes)
    _admit(engine, len(body))
    engine.ingest_bytes += len(body)
    engine.ingest_peak = max(engine.ingest_peak, engine.ingest_bytes)
    try:
        receipt, replayed = _idempotency(request, engine, name, on_error, body)
        if replayed is not None:
            return replayed
        if receipt is None:
            return await _ingest(engine, name, on_error, body, None)
        engine.keys_in_flight.add(receipt.key)
        try:
            return await _ingest(engine, name, on_error, body, receipt)
        finally:
            engine.keys_in_flight.discard(receipt.key)
    finally:
        engine.ingest_bytes -= len(body)


def _admit(engine: Engine, size: int) -> None:
    """Refuse a body that would take the ingest backlog past ``max_ingest_backlog_bytes``: a
    503 with Retry-After now instead of a timeout later, and memory that stays bounded."""
    limit = engine.settings.max_ingest_backlog_bytes
    if engine.ingest_bytes and engine.ingest_bytes + size > limit:
        engine.shed += 1
        raise ApiError(
            503,
            f"overloaded: {engine.ingest_bytes} bytes of events are being written "
            f"(max_ingest_backlog_bytes is {limit}); retry after the Retry-After seconds",
            {"Retry-After": "1"},
        )


async def _ingest(
    engine: Engine, name: str, on_error: str, body: bytes, receipt: Receipt | None
) -> web.Response:
    decoder = engine.decoders[name]
    if len(body) > OFFLOAD_BYTES:
        table = await asyncio.to_thread(decoder.table, body)
        if table is not None:  # a large, clean NDJSON body: the column-wise path
            batch = Batch(name, [], 0, table=table, receipt=receipt)
            position = await _submit(engine, batch, body)
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
    batch = Batch(name, decoded.events, 0, rejected, receipt=receipt)
    position = await _submit(engine, batch, None)
    return _json(
        {
            "accepted": len(decoded.events),
            "rejected": len(decoded.errors),
            "position": f"wal:{position}",
        }
    )


async def _submit(engine: Engine, batch: Batch, body: bytes | None) -> int:
    try:
        position = await engine.pipeline.submit(batch, body)
    except Unavailable as err:
        raise ApiError(err.status, str(err), {"Retry-After": "5"}) from None
    faults.reached("before_response")
    return position


async def status(request: web.Request) -> web.Response:
    _only(request, set())
    return _json(engine_status(_engine(request)))


async def metrics(request: web.Request) -> web.Response:
    _only(request, set())
    body = generate_latest(_engine(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def take_snapshot(request: web.Request) -> web.Response:
    engine = _engine(request)
    _only(request, set())
    try:
        info = await engine.pipeline.snapshot()
    except OSError as err:
        raise ApiError(507, f"snapshot failed: {err.strerror or 'I/O error'}") from None
    return _json(info)
