"""One error shape for every 4xx/5xx: ``{"error": {"status": 400, "message": "...", ...}}``.

Handlers raise ``ApiError`` (sources ``ingest.http.Rejected``, the same thing); the middleware
translates it, aiohttp's own HTTP errors (unknown route, wrong method) and anything unexpected.
A 500 never echoes the exception: it logs it with an id and returns only that id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ingest.http import Rejected

log = logging.getLogger("tallyd.api")


class ApiError(Rejected):
    """A request a handler refuses: the same refusal as a source's, raised by ``api/``."""


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **detail: Any
) -> web.Response:
    body = {"error": {"status": status, "message": message, **detail}}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Rejected as err:  # ApiError, or a source's refusal
        return error_response(err.status, err.message, err.headers, **err.detail)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        message = {404: "no such endpoint", 405: f"method {request.method} not allowed here"}.get(
            err.status, err.reason
        )
        headers = {"Allow": err.headers["Allow"]} if "Allow" in err.headers else None
        return error_response(err.status, message, headers)
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        log.exception(
            "event=internal_error id=%s method=%s path=%s", error_id, request.method, request.path
        )
        return error_response(500, "internal error", error_id=error_id)
