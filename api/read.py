"""Reads: the list of views, a view's rows, its series, its late events.

Each handler parses its parameters, asks ``views/`` (``query.run``, ``series.series``) and encodes
the answer. Answers are cached by request until the view's source next changes; freshness is
added per response, never cached.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiMapping

from api.cluster import Whole, whole_at, whole_view
from api.context import engine_of, freshness, json_response, keep_limit, only, readable, view_of
from api.encode import row_dicts, to_csv, to_ndjson
from api.engine import Engine
from api.params import (
    bad,
    check_range,
    encode_cursor,
    parse_query,
    parse_series,
    pinned_watermark,
)
from views import query as q
from views.durations import format_duration
from views.series import Series, SeriesError, series
from views.spec import ViewSpec
from views.timefmt import format_optional, format_time
from views.view import View


@dataclass(frozen=True)
class Rows:
    """A query's answer before freshness is added: the JSON answer, or the result to encode as
    CSV / NDJSON, and what the response headers need."""

    output: str  # json | csv | ndjson
    answer: dict[str, Any]  # the JSON answer (empty for csv / ndjson)
    result: q.Result
    cursor: str | None
    truncated: bool


@dataclass(frozen=True)
class SeriesAnswer:
    output: str  # json | csv
    answer: dict[str, Any]  # the JSON answer (empty for csv)
    csv: bytes


@dataclass(frozen=True)
class Encoded:
    """What a cached answer keeps besides its bytes."""

    output: str
    cursor: str | None = None
    truncated: bool = False


def describe_view(view: View, description: str, chart: str | None) -> dict[str, Any]:
    """A view as ``GET /v1/views`` lists it; ``chart``: the aggregate the dashboard plots."""
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
        "chart": chart,
        "stats": view.stats(),
    }


async def list_views(request: web.Request) -> web.Response:
    engine = engine_of(request)
    only(request, set())
    config = engine.config
    views = []
    for name in readable(request, engine):
        view = engine.registry.views[name]
        whole = await whole_view(engine, view)  # a cluster member: the whole topic's figures
        shown = view if whole is None else await whole.view()
        entry = describe_view(shown, config.descriptions.get(name, ""), config.charts.get(name))
        if whole is not None:
            entry["freshness"] = whole.freshness
        if name in engine.registry.backfills:  # added or changed, filling from its history
            entry["backfill"] = engine.backfill_progress(name)
        views.append(entry)
    return json_response({"views": views})


def rows_answer(
    engine: Engine, view: View, params: MultiMapping[str], whole: Whole | None = None
) -> Rows:
    """A query's answer (without freshness); ``whole``: a cluster's, whose watermark a relative
    ``from``/``to`` counts back from."""
    settings = engine.settings
    newest = engine.watermark(view.spec.source) if whole is None else whole.watermark
    query, output = parse_query(
        view.spec, params, settings.default_limit, settings.max_limit, newest
    )
    check_range(query.time_from, query.time_to, settings.max_time_range)
    query = dataclasses.replace(query, max_scan=settings.max_groups_scanned)
    try:
        result = q.run(view, query)
    except q.QueryError as err:
        raise bad(err.param, str(err)) from None
    cursor = (
        None
        if result.next_offset is None
        else encode_cursor(result.next_offset, params, _pinned(params, newest))
    )
    answer: dict[str, Any] = {}
    if output == "json":
        answer = {
            "view": view.spec.name,
            "columns": [c.describe() for c in result.columns],
            "rows": row_dicts(result),
            "truncated": result.truncated,
            "next_cursor": cursor,
        }
    return Rows(output, answer, result, cursor, result.truncated)


def _pinned(params: MultiMapping[str], newest: int | None) -> int | None:
    """The watermark this page's relative range was counted from: its cursor's, or now's."""
    return pinned_watermark(params) if params.get("cursor") else newest


def series_answer(
    engine: Engine, view: View, params: MultiMapping[str], whole: Whole | None = None
) -> SeriesAnswer:
    """A series' answer (without freshness); ``whole``: over a cluster's every partition, its
    default range ending at the whole topic's watermark."""
    newest = engine.watermark(view.spec.source) if whole is None else whole.watermark
    query, output = parse_series(
        view.spec,
        params,
        newest if newest is not None else int(time.time() * 1000),
        engine.settings.max_series_points,
        engine.settings.max_time_range,
        view.first_start(),
    )
    check_range(query.time_from, query.time_to, engine.settings.max_time_range)
    try:
        answer = series(view, query)
    except SeriesError as err:
        raise bad(err.param, str(err)) from None
    if output == "csv":
        return SeriesAnswer(output, {}, series_csv(answer))
    json = {
        "view": view.spec.name,
        "metric": query.metric,
        **answer.to_json(),
        **complete_until(newest, view.spec.grace),
    }
    return SeriesAnswer(output, json, b"")


def complete_until(watermark: int | None, grace: int) -> dict[str, Any]:
    """Up to when the series' buckets are final: an event before ``watermark - grace`` is late
    (not counted), so a bucket that ends at or before it can no longer change; the buckets after
    it are still filling. None before the source has a watermark."""
    until = None if watermark is None else watermark - grace
    return {"complete_until": format_optional(until), "complete_until_ms": until}


@dataclass(frozen=True)
class Lookup:
    """A GET on a view: where its answer is cached, and the cached answer if still current."""

    engine: Engine
    view: View
    key: tuple[Any, ...]
    version: int
    body: bytes | None
    encoded: Encoded | None


def _lookup(request: web.Request, kind: str) -> Lookup:
    engine = engine_of(request)
    view = view_of(engine, request)
    version = engine.registry.sources[view.spec.source].version
    key = (kind, view.spec.name, tuple(sorted(request.query.items())))
    cached = engine.answers.get(key, version)
    if cached is None:
        return Lookup(engine, view, key, version, None, None)
    return Lookup(engine, view, key, version, cached.body, cached.meta)


def _with_freshness(body: bytes, fresh: dict[str, Any]) -> web.Response:
    """A cached JSON answer (everything but its closing brace) with this response's freshness."""
    return web.Response(
        body=body + b',"freshness":' + orjson.dumps(fresh) + b"}", content_type="application/json"
    )


def _encoded_rows(rows: Rows) -> tuple[bytes, Encoded]:
    if rows.output == "json":
        body = orjson.dumps(rows.answer)[:-1]  # the closing brace follows the freshness
    else:
        body = to_csv(rows.result) if rows.output == "csv" else to_ndjson(rows.result)
    return body, Encoded(rows.output, rows.cursor, rows.truncated)


async def query_view(request: web.Request) -> web.Response:
    found = _lookup(request, "query")
    engine, view = found.engine, found.view
    body, encoded = found.body, found.encoded
    whole, params = await whole_at(engine, view, request.query)  # a cluster: every partition
    if whole is not None:  # cached under every member's version of the view
        cached = engine.answers.get(("cluster", *found.key), whole.version)
        if cached is not None:
            body, encoded = cached.body, cached.meta
        else:
            scratch = await whole.view()
            body, encoded = _encoded_rows(rows_answer(engine, scratch, params, whole))
            engine.answers.put(("cluster", *found.key), whole.version, body, encoded)
        fresh = whole.freshness
    else:
        if body is None or encoded is None:
            body, encoded = _encoded_rows(rows_answer(engine, view, request.query))
            engine.answers.put(found.key, found.version, body, encoded)
        fresh = freshness(engine, view.spec.source, view.spec.name)
    if encoded.output == "json":
        return _with_freshness(body, fresh)
    headers = {
        "X-Tallyd-Truncated": str(encoded.truncated).lower(),
        "X-Tallyd-Position": fresh["position"],
    }
    if "partial" in fresh:
        headers["X-Tallyd-Partial"] = str(fresh["partial"]).lower()
    if fresh["watermark"] is not None:
        headers["X-Tallyd-Watermark"] = fresh["watermark"]
    if encoded.cursor is not None:
        headers["X-Tallyd-Next-Cursor"] = encoded.cursor
    if encoded.output == "csv":
        return web.Response(body=body, content_type="text/csv", charset="utf-8", headers=headers)
    return web.Response(body=body, content_type="application/x-ndjson", headers=headers)


async def series_view(request: web.Request) -> web.Response:
    """Chart-ready columns: ``{"x": [bucket starts], "series": [{"name", "values"}]}``."""
    found = _lookup(request, "series")
    engine, view = found.engine, found.view
    body, encoded = found.body, found.encoded
    whole, params = await whole_at(engine, view, request.query)  # a cluster: every partition
    if whole is not None:
        cached = engine.answers.get(("cluster", *found.key), whole.version)
        if cached is not None and "to" in request.query:
            body, encoded = cached.body, cached.meta
        else:
            answer = series_answer(engine, await whole.view(), params, whole)
            body = orjson.dumps(answer.answer)[:-1] if answer.output == "json" else answer.csv
            encoded = Encoded(answer.output)
            engine.answers.put(("cluster", *found.key), whole.version, body, encoded)
        fresh = whole.freshness
    else:
        if body is None or encoded is None or "to" not in request.query:  # the default range moves
            answer = series_answer(engine, view, request.query)
            body = orjson.dumps(answer.answer)[:-1] if answer.output == "json" else answer.csv
            encoded = Encoded(answer.output)
            engine.answers.put(found.key, found.version, body, encoded)
        fresh = freshness(engine, view.spec.source, view.spec.name)
    if encoded.output == "json":
        return _with_freshness(body, fresh)
    headers = {"X-Tallyd-Position": fresh["position"]}
    if "partial" in fresh:
        headers["X-Tallyd-Partial"] = str(fresh["partial"]).lower()
    return web.Response(body=body, content_type="text/csv", charset="utf-8", headers=headers)


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


async def late_events(request: web.Request) -> web.Response:
    engine = engine_of(request)
    view = view_of(engine, request)
    limit = keep_limit(request, engine)
    newest = view.late_events()[-limit:][::-1]
    events = [_late(record, view.time_field) for record in newest]
    return json_response({"view": view.spec.name, "late": view.counter("late"), "events": events})


def _late(record: dict[str, Any], time_field: str) -> dict[str, Any]:
    """A kept late event with its times in RFC 3339, as every other answer gives them."""
    event, watermark, grace = record["event"], record["watermark"], record["grace"]
    return {
        "event": event,
        "event_time": format_time(event[time_field]),
        "late_before": format_time(watermark - grace),
        "watermark": format_time(watermark),
        "grace": format_duration(grace) if grace else "0s",
        "part": record["part"],
    }
