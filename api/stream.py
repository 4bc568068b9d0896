"""Live answers: ``GET /v1/views/{view}/subscribe`` as Server-Sent Events.

The handler parses the question (a query or a series, and how often it may change) and attaches
the connection to the question's topic in the hub (``api/live.py``), which computes the answer
once per interval for every subscriber.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from multidict import MultiDict

from api.auth import TOKEN
from api.context import engine_of, freshness, view_of
from api.engine import Engine
from api.errors import ApiError
from api.live import Topic
from api.params import bad
from api.read import rows_answer, series_answer
from views.durations import parse_duration

LIVE_PARAMS = {"kind", "interval"}


async def subscribe(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the answer to a query (``kind=rows``, its parameters) or a series
    (``kind=series``), then its changes at most once per ``interval`` (api/live.py)."""
    engine = engine_of(request)
    view = view_of(engine, request)
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
            answer = rows_answer(engine, view, params).answer
        else:
            answer = series_answer(engine, view, params).answer
        return {**answer, "freshness": freshness(engine, view.spec.source)}

    key = ("live", view.spec.name, kind, interval, tuple(sorted(params.items())))
    topic = engine.hub.topic(key, compute, lambda: source.version, kind, interval)
    if topic.answer is None:
        topic.refresh()  # the first subscriber's request is checked here: a 400 before streaming
    token = request.get(TOKEN)
    holder = None if token is None else token.key
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


async def _stream(request: web.Request, engine: Engine, topic: Topic) -> web.StreamResponse:
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
