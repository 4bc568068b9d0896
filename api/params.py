"""Query-string → ``views.query.Query``. Every bad parameter is a 400 naming it; unknown
parameters are refused too, so a typo (``limt=5``) is an error, not a silently ignored ask."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import orjson
from multidict import MultiMapping

from api.errors import ApiError
from views.durations import parse_duration
from views.query import ALL, Query
from views.series import SeriesQuery, series_step
from views.spec import ViewSpec
from views.timefmt import query_time

RESERVED = {"from", "to", "group_by", "bucket", "order_by", "limit", "cursor", "columns", "format"}
FORMATS = ("json", "csv", "ndjson")


def bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"parameter '{param}': {message}", param=param)


def _one(params: MultiMapping[str], name: str) -> str | None:
    values = params.getall(name, [])
    if len(values) > 1:
        raise bad(name, "given more than once")
    return values[0] if values else None


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _time(params: MultiMapping[str], name: str, newest: int | None) -> int | None:
    """Epoch ms, RFC 3339, or ``-<duration>`` (``-1h``): that long before ``newest``, the
    source's watermark (or now, before its first event) — resolved at each answer, so a live
    subscription's range follows the data."""
    text = _one(params, name)
    if text is None:
        return None
    stripped = text.strip()
    if stripped.startswith("-") and not stripped[1:].strip().isdigit():
        try:
            back = parse_duration(stripped[1:].strip())
        except ValueError as err:
            raise bad(name, f"{err}; a relative time is '-' and a duration, e.g. -1h") from None
        return (newest if newest is not None else int(time.time() * 1000)) - back
    try:
        return query_time(stripped)
    except ValueError as err:
        raise bad(
            name, f"{err}; give epoch milliseconds, RFC 3339, or -<duration> (e.g. -1h)"
        ) from None


def _limit(params: MultiMapping[str], default: int, cap: int) -> int:
    text = _one(params, "limit")
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise bad("limit", f"{text!r} is not a positive integer")
    if int(text) > cap:
        raise bad("limit", f"{text} exceeds the maximum of {cap}; page with next_cursor")
    return int(text)


def _bucket(params: MultiMapping[str]) -> int | None:
    text = _one(params, "bucket")
    if text is None:
        return None
    if text == "all":
        return ALL
    try:
        return parse_duration(text)
    except ValueError as err:
        raise bad("bucket", str(err)) from None


def fingerprint(params: MultiMapping[str]) -> str:
    """What a cursor is bound to: the query minus paging and format."""
    items = sorted((k, v) for k, v in params.items() if k not in ("cursor", "limit", "format"))
    return hashlib.sha256(orjson.dumps(items)).hexdigest()[:12]


def encode_cursor(offset: int, params: MultiMapping[str], newest: int | None = None) -> str:
    """``newest``: the watermark a relative ``from``/``to`` was counted back from, kept so that
    the next pages read the same range (not one moved by events arrived meanwhile)."""
    data: dict[str, Any] = {"o": offset, "q": fingerprint(params)}
    if newest is not None and any(_relative(params, name) for name in ("from", "to")):
        data["w"] = newest
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def _relative(params: MultiMapping[str], name: str) -> bool:
    text = (_one(params, name) or "").strip()
    return text.startswith("-") and not text[1:].strip().isdigit()


def _cursor(params: MultiMapping[str]) -> tuple[int, int | None]:
    """(offset, the watermark the first page's relative range was counted from, if any)."""
    text = _one(params, "cursor")
    if text is None:
        return 0, None
    try:
        data: Any = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        offset = int(data["o"])
        bound = str(data["q"])
        pinned = None if data.get("w") is None else int(data["w"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise bad("cursor", "not a cursor this server issued") from None
    if bound != fingerprint(params) or offset < 0:
        raise bad("cursor", "this cursor belongs to a different query")
    return offset, pinned


def row_keys(spec: ViewSpec, params: MultiMapping[str]) -> list[str]:
    """What tells a query's rows apart: its window (none with ``bucket=all``), then its group
    keys (``group_by``'s, else the view's)."""
    grouped = params.get("group_by")
    keys = (
        [c.name for c in spec.columns if c.role == "key"]
        if grouped is None
        else [k.strip() for k in grouped.split(",") if k.strip()]
    )
    if spec.window is not None and params.get("bucket") != "all":
        keys.insert(0, spec.window.name)
    return keys


def pinned_watermark(params: MultiMapping[str]) -> int | None:
    """The watermark a cursor keeps for its query's relative range (None: none kept)."""
    return _cursor(params)[1]


def check_range(time_from: int | None, time_to: int | None, max_range: int) -> None:
    """A cost cap: an explicit range may span at most ``max_time_range`` (an open-ended query
    is bounded by ``max_groups_scanned`` instead)."""
    if time_from is not None and time_to is not None and time_to - time_from > max_range:
        raise bad(
            "to",
            f"the range spans {(time_to - time_from) // 1000} s, more than max_time_range "
            f"({max_range // 1000} s); ask for less at a time",
        )


def parse_query(
    spec: ViewSpec,
    params: MultiMapping[str],
    default_limit: int,
    max_limit: int,
    newest: int | None = None,
) -> tuple[Query, str]:
    """``newest``: the source's watermark, which a relative ``from``/``to`` counts back from —
    on a later page, the first page's (its cursor keeps it)."""
    offset, pinned = _cursor(params)
    newest = pinned if pinned is not None else newest
    filters = _filters(spec, params, RESERVED)
    group_by = _one(params, "group_by")
    order_by = _one(params, "order_by")
    columns = _one(params, "columns")
    output = _one(params, "format") or "json"
    if output not in FORMATS:
        raise bad("format", f"{output!r} is not one of {', '.join(FORMATS)}")
    query = Query(
        filters=filters,
        time_from=_time(params, "from", newest),
        time_to=_time(params, "to", newest),
        group_by=None if group_by is None else _names(group_by),
        bucket=_bucket(params),
        order_by=order_by.lstrip("-") if order_by else None,
        descending=bool(order_by and order_by.startswith("-")),
        limit=_limit(params, default_limit, max_limit),
        offset=offset,
        columns=_names(columns) if columns is not None else None,
    )
    if (
        query.time_from is not None
        and query.time_to is not None
        and query.time_to < query.time_from
    ):
        raise bad("to", "is before 'from'")
    return query, output


SERIES_PARAMS = {"metric", "bucket", "from", "to", "tz", "split_by", "top", "fill", "format"}
FILLS = ("null", "zero", "previous")


def _filters(spec: ViewSpec, params: MultiMapping[str], reserved: set[str]) -> dict[str, Any]:
    keys = {c.name for c in spec.columns if c.role == "key"}
    filters: dict[str, frozenset[str]] = {}
    for name in params:
        if name in reserved:
            continue
        if name not in keys:
            hint = (
                f"group keys you can filter on: {', '.join(sorted(keys))}"
                if keys
                else ("this view has no group keys")
            )
            raise bad(
                name, f"unknown parameter; {hint}; other parameters: {', '.join(sorted(reserved))}"
            )
        filters[name] = frozenset(params.getall(name))
    return filters


def parse_series(
    spec: ViewSpec,
    params: MultiMapping[str],
    newest: int | None,
    max_points: int,
    max_range: int | None = None,
    oldest: int | None = None,
) -> tuple[SeriesQuery, str]:
    """``newest``: the source's watermark (or now), for the default range: the last 60 buckets
    — fewer when 60 would span more than ``max_range`` (the default is ours to keep within the
    server's own cap; only an explicit range is the caller's to fix) — starting no earlier than
    ``oldest``'s bucket, the view's first data: a fresh chart is not mostly empty space."""
    filters = _filters(spec, params, SERIES_PARAMS)
    metric = _one(params, "metric")
    if metric is None:
        names = [c.name for c in spec.columns if c.role == "aggregate"]
        raise bad("metric", f"required: one of {', '.join(names)}")
    bucket = _bucket(params)
    if bucket == ALL:
        raise bad("bucket", "a series needs time buckets, e.g. 1h")
    size = bucket or (series_step(spec.window) if spec.window is not None else 1)
    to = _time(params, "to", newest)
    if to is None:
        latest = newest if newest is not None else 0
        to = latest - latest % size + size
    time_from = _time(params, "from", newest)
    if time_from is None:
        buckets = 60 if max_range is None else max(1, min(60, max_range // size))
        time_from = to - buckets * size
        if oldest is not None and oldest < to:
            time_from = max(time_from, oldest - oldest % size)
    top = _one(params, "top")
    if top is not None and (not top.isdigit() or int(top) < 1):
        raise bad("top", f"{top!r} is not a positive integer")
    fill = _one(params, "fill") or "null"
    if fill not in FILLS:
        raise bad("fill", f"{fill!r} is not one of {', '.join(FILLS)}")
    output = _one(params, "format") or "json"
    if output not in ("json", "csv"):
        raise bad("format", f"{output!r} is not one of json, csv")
    query = SeriesQuery(
        metric=metric,
        time_from=time_from,
        time_to=to,
        bucket=bucket,
        tz=_one(params, "tz") or "UTC",
        split_by=_one(params, "split_by"),
        top=None if top is None else int(top),
        fill=fill,  # type: ignore[arg-type]
        filters=filters,
        max_points=max_points,
    )
    return query, output
