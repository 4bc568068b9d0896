"""The server's own OpenAPI 3.1 document, served at ``/openapi.json``.

Built from the route table (api/app.py) and the parameter lists below, so a route cannot be added
without being described: tests/api/test_openapi.py fuzzes every operation with Schemathesis
against a real server and fails on any 5xx or any answer the document does not allow.
"""

from __future__ import annotations

from typing import Any

from api.pages import ASSETS
from api.settings import Settings

LIVE_MAX = Settings.max_live_subscriptions  # the default: a server may allow fewer (400 beyond)

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
        }
    },
}
JSON_OBJECT = {"type": "object"}


def _q(name: str, schema: dict[str, Any], description: str, required: bool = False) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


STRING = {"type": "string"}
TIME = {
    "type": "string",
    "description": "RFC 3339, epoch milliseconds, or -<duration> before the watermark (-1h)",
}
LIMIT = {"type": "integer", "minimum": 1}
SUBSCRIPTION = {
    "type": "string",
    "pattern": r"^/v1/views/[A-Za-z_][A-Za-z0-9_]*/subscribe(\?[^#]*)?$",
}
TOKEN = _q("token", STRING, "An API or embed token, for what a browser loads by URL.")
QUERY = [
    _q("from", TIME, "Window starts from (inclusive)."),
    _q("to", TIME, "Window starts up to (exclusive)."),
    _q("group_by", STRING, "Keys to keep, comma-separated; the rest are merged."),
    _q("bucket", STRING, "A multiple of the window (e.g. 1h), or 'all'."),
    _q("order_by", STRING, "A column, '-' for descending."),
    _q("limit", LIMIT, "Rows per page."),
    _q("cursor", STRING, "next_cursor of the previous page."),
    _q("columns", STRING, "Projection, comma-separated."),
    _q("format", {"type": "string", "enum": ["json", "csv", "ndjson"]}, "Answer format."),
    _q(
        "min_position",
        STRING,
        "Cluster members: wait (up to 10 s) until every partition named "
        "(topic:partition@offset, comma-separated, as a post answered) is applied.",
    ),
]
SERIES = [
    _q("metric", STRING, "An aggregate column.", required=True),
    _q("bucket", STRING, "A multiple of the window (e.g. 1h)."),
    _q("from", TIME, "Range start."),
    _q("to", TIME, "Range end."),
    _q("tz", STRING, "IANA time zone for day and week buckets."),
    _q("split_by", STRING, "A group key: one series per value."),
    _q("top", LIMIT, "Keep the N largest series, fold the rest into 'other'."),
    _q("fill", {"type": "string", "enum": ["null", "zero", "previous"]}, "Empty buckets."),
    _q("format", {"type": "string", "enum": ["json", "csv"]}, "Answer format."),
    _q(
        "min_position",
        STRING,
        "Cluster members: wait (up to 10 s) until every partition named "
        "(topic:partition@offset, comma-separated, as a post answered) is applied.",
    ),
]
EMBED = [  # every embed page's options
    _q("theme", {"type": "string", "enum": ["light", "dark"]}, "Colours (default: the reader's)."),
    _q("title", STRING, "Title."),
    _q("unit", STRING, "Unit shown with values."),
    _q("interval", STRING, "Most often it updates (e.g. 1s)."),
]
TABLE = ("from", "to", "group_by", "bucket", "order_by", "limit", "columns")
PARAMETERS: dict[tuple[str, str], list[Any]] = {
    ("GET", "/v1/views/{view}"): QUERY,
    ("GET", "/v1/views/{view}/series"): SERIES,
    ("GET", "/v1/views/{view}/chart"): [
        *SERIES[:-2],
        _q("type", {"type": "string", "enum": ["line", "area", "bar"]}, "Chart type."),
        _q("stack", {"type": "string", "enum": ["true", "false"]}, "Stack areas and bars."),
        _q(
            "in_progress",
            {"type": "string", "enum": ["show", "hide"]},
            "The buckets after complete_until (still filling): drawn dashed, or left out.",
        ),
        *EMBED,
    ],
    ("GET", "/v1/views/{view}/tile"): [
        *(q for q in SERIES if q["name"] in ("metric", "bucket", "tz", "fill")),
        _q(
            "period",
            {"type": "string", "enum": ["current", "last"]},
            "The newest bucket (so far) or the newest final one.",
        ),
        *EMBED,
    ],
    ("GET", "/v1/views/{view}/top"): [
        _q("metric", STRING, "Rank the values of `by` by this aggregate."),
        _q("by", STRING, "A group key."),
        _q("column", STRING, "Or: a top_k column, its items ranked by count."),
        _q("limit", LIMIT, "Bars shown (default 10)."),
        *(q for q in QUERY if q["name"] in ("from", "to")),
        *EMBED,
    ],
    ("GET", "/v1/views/{view}/table"): [
        *(q for q in QUERY if q["name"] in TABLE),
        *EMBED,
    ],
    ("GET", "/v1/views/{view}/subscribe"): [
        *QUERY[:-1],
        _q("kind", {"type": "string", "enum": ["rows", "series"]}, "What to follow."),
        _q("interval", STRING, "Most often a change is sent (e.g. 1s)."),
    ],
    ("GET", "/v1/live"): [
        {
            **_q(
                "s",
                {"type": "array", "items": SUBSCRIPTION, "minItems": 1, "maxItems": LIVE_MAX},
                "A subscription: the path and query of /v1/views/{view}/subscribe; repeat it "
                f"(at most max_live_subscriptions, {LIVE_MAX} by default). Each message says "
                "which (its index, from 0) it is for.",
                required=True,
            ),
            "style": "form",
            "explode": True,
        }
    ],
    ("GET", "/v1/views/{view}/late"): [_q("limit", LIMIT, "How many.")],
    ("GET", "/v1/sources/{source}/rejected"): [_q("limit", LIMIT, "How many.")],
    ("POST", "/v1/sources/{source}/events"): [
        _q("on_error", {"type": "string", "enum": ["fail", "skip"]}, "Invalid lines."),
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": "Makes a retry of this request count nothing twice.",
        },
    ],
}
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/admin/config"): {
        "required": True,
        "content": {"application/toml": {"schema": {"type": "string"}}},
    },
    ("POST", "/v1/sources/{source}/events"): {
        "required": True,
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": JSON_OBJECT}},
        },
    },
}
CONTENT = {
    "GET /metrics": "text/plain",
    "GET /": "text/html",
    "GET /v1/views/{view}/chart": "text/html",
    "GET /v1/views/{view}/tile": "text/html",
    "GET /v1/views/{view}/top": "text/html",
    "GET /v1/views/{view}/table": "text/html",
    "GET /v1/views/{view}/subscribe": "text/event-stream",
    "GET /v1/live": "text/event-stream",
    "GET /assets/{name}": ASSETS["uPlot.iife.min.js"],
}


FORMATS = {  # other content types a 200 may have (format=csv / ndjson answers, assets)
    "GET /v1/views/{view}": ("text/csv", "application/x-ndjson"),
    "GET /v1/views/{view}/series": ("text/csv",),
    "GET /assets/{name}": tuple(sorted(set(ASSETS.values()) - {ASSETS["uPlot.iife.min.js"]})),
}


def document(routes: tuple[tuple[Any, ...], ...], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, _, permission, summary in routes:
        parameters = [
            {"name": name[1:-1], "in": "path", "required": True, "schema": STRING}
            for name in _path_params(path)
        ]
        parameters += PARAMETERS.get((method, path), [])
        if permission is not None:
            parameters.append(TOKEN)
        content_type = CONTENT.get(f"{method} {path}", "application/json")
        ok_schema = JSON_OBJECT if content_type == "application/json" else STRING
        ok_content = {content_type: {"schema": ok_schema}}
        for other in FORMATS.get(f"{method} {path}", ()):
            ok_content[other] = {"schema": STRING}
        operation: dict[str, Any] = {
            "summary": summary,
            "operationId": method.lower() + "".join(c if c.isalnum() else "_" for c in path),
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK", "content": ok_content},
                "default": {
                    "description": "An error, always this shape",
                    "content": {"application/json": {"schema": ERROR}},
                },
            },
        }
        if permission is not None:
            operation["security"] = [{"bearer": []}]
        if (method, path) in BODIES:
            operation["requestBody"] = BODIES[(method, path)]
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "tallyd", "version": version},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR},
        },
    }


def _path_params(path: str) -> list[str]:
    return [part for part in path.split("/") if part.startswith("{")]
