"""Live answers as Server-Sent Events: ``GET /v1/views/{view}/subscribe`` follows one question,
``GET /v1/live?s=...&s=...`` several over one connection.

A handler parses each question (a query or a series, and how often it may change) and attaches
the connection to the questions' topics in the hub (``api/live.py``), which computes each answer
once per interval for every subscriber, whichever endpoint it came through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiMapping
from yarl import URL

from api.auth import TOKEN
from api.cluster import Whole, membership_of, whole_view
from api.context import engine_of, freshness, only, view_of
from api.engine import Engine
from api.errors import ApiError
from api.live import Feed, Topic
from api.params import bad, row_keys
from api.read import rows_answer, series_answer
from views.durations import parse_duration
from views.view import View

LIVE_PARAMS = {"kind", "interval"}
SUBSCRIBE = "/v1/views/{view}/subscribe"


async def subscribe(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the answer to a query (``kind=rows``, its parameters) or a series
    (``kind=series``), then its changes at most once per ``interval`` (api/live.py)."""
    engine = engine_of(request)
    topic = await question(engine, view_of(engine, request), request.query)
    return await _serve(request, engine, Feed([topic], multiplexed=False))


async def live(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events for several questions at once: each ``s`` is what a page would pass to
    ``/subscribe`` (its path and query); each message says which ``s`` it is for."""
    engine = engine_of(request)
    only(request, {"s"})
    texts = request.query.getall("s", [])
    cap = engine.settings.max_live_subscriptions
    if not 1 <= len(texts) <= cap:
        raise bad("s", f"give 1 to {cap} subscriptions (max_live_subscriptions), not {len(texts)}")
    topics = []
    for index, text in enumerate(texts):
        sub = Subscription.parse(index, text)
        view = engine.registry.views.get(sub.view)
        if view is None:  # as /subscribe answers it
            raise sub.error(f"no view named '{sub.view}'", 404)
        if "token" in sub.query:  # its own URL's token authorizes every subscription of it
            raise sub.error("the token goes on /v1/live's URL, not in a subscription")
        try:
            topics.append(await question(engine, view, sub.query))
        except ApiError as err:
            if err.status != 400:
                raise
            raise sub.error(err.message) from None
    return await _serve(request, engine, Feed(topics, multiplexed=True))


@dataclass(frozen=True)
class Subscription:
    """One ``s`` of ``/v1/live``: ``/v1/views/{view}/subscribe?...``, parsed."""

    index: int
    text: str
    view: str
    query: MultiDict[str]

    @classmethod
    def parse(cls, index: int, text: str) -> Subscription:
        try:
            url = URL(text)
        except (ValueError, TypeError):
            url = None
        parts = [] if url is None or url.absolute or url.fragment else url.path.split("/")
        if len(parts) != 5 or parts[:3] != ["", "v1", "views"] or parts[4] != "subscribe":
            raise _error(index, text, f"not the path and query of {SUBSCRIBE}")
        assert url is not None
        return cls(index, text, parts[3], MultiDict(url.query))

    def with_query(self, query: MultiMapping[str]) -> Subscription:
        text = str(URL.build(path=SUBSCRIBE.format(view=self.view), query=query))
        return Subscription(self.index, text, self.view, MultiDict(query))

    def error(self, why: str, status: int = 400) -> ApiError:
        return _error(self.index, self.text, why, status)


def _error(index: int, text: str, why: str, status: int = 400) -> ApiError:
    """Which ``s`` (counted from 0, in the order given) was refused, and why."""
    shown = text if len(text) <= 200 else text[:200] + "…"
    return ApiError(status, f"parameter 's' [{index}] ({shown}): {why}", param="s", index=index)


def _keeps_row_keys(view: View, params: MultiMapping[str]) -> None:
    """A live answer's changes name rows by their window and group keys (``diff_rows``): a
    ``columns=`` that leaves one out would merge rows in every change. Say so instead."""
    keys = row_keys(view.spec, params)
    shown = {c.strip() for c in params.get("columns", "").split(",")}
    missing = [k for k in keys if k not in shown]
    if missing:
        raise bad(
            "columns",
            f"a live answer's rows are told apart by {', '.join(keys)}: keep "
            f"{', '.join(missing)} in columns",
        )


def live_interval(text: str) -> float:
    """How often a live answer may change, in seconds: a duration from 100ms to 1h."""
    try:
        interval = parse_duration(text) / 1000
    except ValueError as err:
        raise bad("interval", str(err)) from None
    if not 0.1 <= interval <= 3600:
        raise bad("interval", "must be between 100ms and 1h")
    return interval


async def question(engine: Engine, view: View, query: MultiMapping[str]) -> Topic:
    """The topic of a live question, answered once already: a bad one is a 400 here."""
    params = MultiDict((k, v) for k, v in query.items() if k not in LIVE_PARAMS)
    for name in LIVE_PARAMS:
        if len(query.getall(name, [])) > 1:
            raise bad(name, "given more than once")
    kind = query.get("kind", "rows")
    if kind not in ("rows", "series"):
        raise bad("kind", f"{kind!r} is not one of rows, series")
    interval = live_interval(query.get("interval", "1s"))
    if params.get("format", "json") != "json":
        raise bad("format", "live answers are JSON")
    if kind == "rows" and "columns" in params:
        _keeps_row_keys(view, params)
    source = engine.registry.sources[view.spec.source]
    # A cluster member's topic follows the whole topic: before each refresh it asks its peers
    # (a 304 while their state is unchanged) and rebuilds the view when any part changed.
    cluster: dict[str, Any] = {}

    async def update() -> None:
        whole = await whole_view(engine, view)
        if whole is None:
            return
        if "whole" not in cluster or cluster["whole"].version != whole.version:
            cluster["view"] = await whole.view()
        cluster["whole"] = whole

    def compute() -> dict[str, Any]:
        whole: Whole | None = cluster.get("whole")
        # The view as defined now: a changed view that finished backfilling has replaced the
        # one this stream was opened on, and its next answer is the new definition's.
        target: View = cluster.get("view") or engine.registry.views.get(view.spec.name, view)
        if kind == "rows":
            answer = rows_answer(engine, target, params, whole).answer
        else:
            answer = series_answer(engine, target, params, whole).answer
        fresh = (
            freshness(engine, view.spec.source, view.spec.name)
            if whole is None
            else whole.freshness
        )
        return {**answer, "freshness": fresh}

    def version() -> Hashable:
        whole: Whole | None = cluster.get("whole")
        return source.version if whole is None else whole.version

    clustered = membership_of(engine, view.spec.source) is not None
    if clustered:
        await update()
    key = ("live", view.spec.name, kind, interval, tuple(sorted(params.items())))
    return engine.hub.topic(key, compute, version, kind, interval, update if clustered else None)


async def _serve(request: web.Request, engine: Engine, feed: Feed) -> web.StreamResponse:
    """Stream ``feed``, counted against the token's ``max_subscribers_per_token``: one per
    connection, however many subscriptions it carries (``max_live_subscriptions`` bounds those)."""
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
        return await _stream(request, engine, feed)
    finally:
        if holder is not None:
            engine.streams_by_token[holder] -= 1
            if not engine.streams_by_token[holder]:
                del engine.streams_by_token[holder]


async def _stream(request: web.Request, engine: Engine, feed: Feed) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    transport = request.transport
    subscriber = engine.hub.subscribe(feed, transport.abort if transport is not None else None)
    try:
        for frame in feed.start(request.headers.get("Last-Event-ID")):
            await response.write(frame)
        while True:
            try:
                item = await asyncio.wait_for(
                    subscriber.queue.get(), engine.settings.sse_heartbeat / 1000
                )
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if item is None:  # dropped: it fell too far behind
                break
            for frame in feed.frames(*item):
                await response.write(frame)
    except ConnectionError:
        pass
    finally:
        engine.hub.unsubscribe(feed, subscriber)
    return response
