"""Event time in and out: epoch seconds / milliseconds / RFC 3339 <-> integer epoch milliseconds."""

from __future__ import annotations

import functools
import math
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


# The event times tallyd keeps: years 1 to 9999 (UTC), those an answer can write as RFC 3339.
MIN_TIME = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
MAX_TIME = (datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC) - _EPOCH) // _MS
OUT_OF_RANGE = "is outside the times tallyd keeps (the years 1 to 9999, UTC)"


def event_time(value: object) -> int:
    """Epoch ms from an event's time field: epoch s, epoch ms, or an RFC 3339 string, within
    ``MIN_TIME`` and ``MAX_TIME``."""
    ms = _event_time(value)
    if not MIN_TIME <= ms <= MAX_TIME:
        raise ValueError(f"{value!r} {OUT_OF_RANGE}")
    return ms


def _event_time(value: object) -> int:
    if isinstance(value, bool) or value is None:
        raise ValueError("must be epoch seconds, epoch milliseconds or an RFC 3339 string")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a time")
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
    # isoformat writes the year in four digits; strftime's %Y writes year 1 as "1" on glibc.
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def format_optional(ms: int | None) -> str | None:
    """``format_time``, with None (no time yet: an empty source's watermark) kept as None."""
    return None if ms is None else format_time(ms)
