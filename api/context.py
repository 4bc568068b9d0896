"""What every handler needs from a request: the engine (once restored), the view or source it
names, the views its token may read, strict parameters, and the freshness of an answer."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from api.auth import TOKEN, Token
from api.engine import ENGINE, Engine
from api.errors import ApiError
from api.params import bad
from views.timefmt import format_optional
from views.view import View


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def engine_of(request: web.Request) -> Engine:
    engine = request.app[ENGINE]
    if not engine.ready.is_set():
        raise ApiError(503, "restoring state; try again shortly", {"Retry-After": "1"})
    return engine


def readable(request: web.Request, engine: Engine) -> list[str]:
    """The views this request's token may read (all of them when authorization is off)."""
    names = list(engine.registry.views)
    token: Token | None = request.get(TOKEN)
    return names if token is None else token.readable(names)


def view_of(engine: Engine, request: web.Request) -> View:
    name = request.match_info["view"]
    view = engine.registry.views.get(name)
    if view is None:
        raise ApiError(404, f"no view named '{name}'", views=sorted(engine.registry.views))
    return view


def source_of(engine: Engine, request: web.Request) -> str:
    name = request.match_info["source"]
    if name not in engine.sources:
        raise ApiError(404, f"no source named '{name}'", sources=sorted(engine.sources))
    return name


def only(request: web.Request, allowed: set[str]) -> None:
    """Unknown parameters are errors, so a typo never silently changes an answer."""
    for name in request.query:
        if name not in allowed:
            raise bad(
                name,
                f"unknown parameter; this endpoint takes: {', '.join(sorted(allowed)) or 'none'}",
            )


def keep_limit(request: web.Request, engine: Engine) -> int:
    """``?limit=`` of the endpoints listing kept events (rejected, late)."""
    only(request, {"limit"})
    text = request.query.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= engine.settings.keep_rejected:
        raise bad("limit", f"must be an integer from 1 to {engine.settings.keep_rejected}")
    return int(text)


def freshness(engine: Engine, source: str, view: str | None = None) -> dict[str, Any]:
    """Which events an answer reflects: the source's watermark and position; for a view's
    answer, whether it is still filling from retained history (then it counts only part of
    it: ``backfill`` says how far it is)."""
    watermark = engine.watermark(source)
    out: dict[str, Any] = {
        "source": source,
        "watermark": format_optional(watermark),
        "watermark_ms": watermark,
        "position": engine.sources[source].position(),
    }
    if view is not None:
        out["backfilling"] = engine.registry.backfilling(view)
        if out["backfilling"]:
            out["backfill"] = engine.backfill_progress(view)
    return out
