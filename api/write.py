"""Ingest: ``POST /v1/sources/{source}/events``. The handler parses the request and makes one call
to the source (``ingest.http.HttpSource.append``), which admits, reads, checks, logs and applies
the body, or refuses it (``ingest.http.Rejected``, which the error middleware answers)."""

from __future__ import annotations

from aiohttp import web

from api.context import engine_of, json_response, only, source_of
from api.errors import ApiError
from api.params import bad
from ingest.http import Body, HttpSource
from ingest.kafka import KafkaSource


async def post_events(request: web.Request) -> web.Response:
    engine = engine_of(request)
    name = source_of(engine, request)
    only(request, {"on_error"})
    on_error = request.query.get("on_error", "fail")
    if on_error not in ("fail", "skip"):
        raise bad("on_error", "must be 'fail' (reject the whole body) or 'skip'")
    source = engine.sources[name]
    if not isinstance(source, HttpSource | KafkaSource):
        raise ApiError(
            405,
            f"source '{name}' reads from {source.kind}; events are posted to HTTP sources "
            "(and, in a cluster, to Kafka sources)",
        )
    limit = engine.settings.max_body_bytes
    ack = await source.append(
        Body(request.content_length, lambda: _read(request, limit)),
        on_error,
        request.headers.get("Idempotency-Key"),
    )
    headers = {"Idempotent-Replayed": "true"} if ack.replayed else None
    return json_response(ack.to_json(), headers=headers)


async def _read(request: web.Request, limit: int) -> bytes:
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
