"""Event time in and out: epoch seconds / milliseconds / RFC 3339 <-> integer epoch milliseconds."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Below this, a number is taken as epoch seconds: 1e11 s is the year 5138, 1e11 ms is 1973.
SECONDS_BELOW = 100_000_000_000


def parse_rfc3339(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time (e.g. 2026-11-22T10:00:00Z)") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z or an offset like +01:00")
    return (moment - _EPOCH) // _MS


def event_time(value: object) -> int:
    """Epoch ms from an event's time field: epoch s, epoch ms, or an RFC 3339 string."""
    if isinstance(value, bool) or value is None:
        raise ValueError("must be epoch seconds, epoch milliseconds or an RFC 3339 string")
    if isinstance(value, int | float):
        if abs(value) < SECONDS_BELOW:
            return round(value * 1000)
        return round(value)
    if isinstance(value, str):
        return parse_rfc3339(value)
    raise ValueError("must be epoch seconds, epoch milliseconds or an RFC 3339 string")


def query_time(text: str) -> int:
    """Epoch ms from a query parameter: an integer (epoch ms) or RFC 3339."""
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        return int(stripped)
    return parse_rfc3339(stripped)


@functools.lru_cache(maxsize=4096)  # every answer formats its watermark; it rarely changes
def format_time(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-22T10:00:00.000Z``."""
    moment = _EPOCH + ms * _MS
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_optional(ms: int | None) -> str | None:
    """``format_time``, with None (no time yet: an empty source's watermark) kept as None."""
    return None if ms is None else format_time(ms)
