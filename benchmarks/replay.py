"""Your own events, replayed: ``tallyd bench run ingest --url URL --events sample.ndjson[.gz]``.

The file's lines (NDJSON, gzipped or not) are cut into bodies of ``batch`` events, built before
the run starts so that building them stalls no measured request, and posted in file order:

* at ``--rate`` events per second (open loop, as every stream of the suite), or
* at ``--speedup`` times their original pace: each body is due when its first event's time,
  relative to the file's first event, divided by the speedup, has passed.

``--retime`` shifts every event's time by one offset, so that the file's first event is "now"
when the run starts (with ``--speedup``, the gaps shrink by the same factor, so each event is
"now" when it is sent): windows are live, nothing is late, and the spacing is kept. A time is
written back in the form it was read: epoch milliseconds (an integer), epoch seconds (a float),
or RFC 3339 (then in UTC, with milliseconds).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

EPOCH_MS_ABOVE = 100_000_000_000  # a number above this is epoch ms, below epoch s (as tallyd)


@dataclass(frozen=True)
class Replay:
    bodies: list[bytes]  # NDJSON bodies, in file order
    events: int
    due: list[float] | None  # seconds after the start each body is due (--speedup), or None


def lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return [line for line in data.splitlines() if line.strip()]


def event_time(value: Any, where: str) -> tuple[int, str]:
    """(epoch ms, the form it was written in: ms, s or rfc3339)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{where}: the time is {value!r}, not a time")
    if isinstance(value, int | float):
        if value > EPOCH_MS_ABOVE:
            return int(value), "ms"
        return round(value * 1000), "s"
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not an RFC 3339 time") from None
        if parsed.tzinfo is None:
            raise ValueError(f"{where}: {value!r} has no offset (Z or +hh:mm)")
        return int(parsed.timestamp() * 1000), "rfc3339"
    raise ValueError(f"{where}: the time is {value!r}, not a time")


def written(ms: int, form: str) -> Any:
    if form == "ms":
        return ms
    if form == "s":
        return ms / 1000
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def build(
    path: Path,
    batch: int,
    time_field: str,
    now_ms: int,
    retime: bool = False,
    speedup: float | None = None,
) -> Replay:
    """The file as bodies (``retime``: moved to ``now_ms``), and when each is due."""
    raw = lines(path)
    if not raw:
        raise ValueError(f"{path}: no events")
    needs_times = retime or speedup is not None
    events: list[Any] = []
    times: list[int] = []
    forms: list[str] = []
    for number, line in enumerate(raw, 1):
        if not needs_times:
            events.append(line)
            continue
        where = f"{path}: line {number}: field '{time_field}'"
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            raise ValueError(f"{path}: line {number}: not valid JSON: {err.msg}") from None
        if not isinstance(event, dict) or time_field not in event:
            raise ValueError(f"{where}: absent (name the time field with --time-field)")
        ms, form = event_time(event[time_field], where)
        events.append(event)
        times.append(ms)
        forms.append(form)
    first = times[0] if times else 0
    pace = speedup or 1.0
    if retime:
        for event, ms, form in zip(events, times, forms, strict=True):
            event[time_field] = written(now_ms + round((ms - first) / pace), form)
    encoded = [e if isinstance(e, bytes) else orjson.dumps(e) for e in events]
    bodies = [b"\n".join(encoded[i : i + batch]) for i in range(0, len(encoded), batch)]
    due = None
    if speedup is not None:
        due = [max((times[i] - first) / 1000 / speedup, 0.0) for i in range(0, len(times), batch)]
    return Replay(bodies, len(encoded), due)
