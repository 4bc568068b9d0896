"""Decode and validate a request body (NDJSON or a JSON array) into events for one source.

Every line is checked before anything is applied: a JSON object, a parseable time field, and each
field the views use of the right type. Errors name the line (for an array: the item's position,
starting at 1), the field and the reason. Valid events are normalised: the time field becomes
integer epoch milliseconds, which is what views and the WAL see.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ingest.columnar import Reader
from views.batch import Columns
from views.durations import format_duration
from views.spec import SourceSpec
from views.timefmt import event_time, format_time

_EXPECT = {
    "number": "a number",
    "string": "a string",
    "bool": "true or false",
    "scalar": "a string, number or boolean",
}


@dataclass(frozen=True)
class LineError:
    line: int
    field: str | None
    reason: str
    text: str

    def describe(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "reason": self.reason}


def rejected_record(
    part: str, offset: int, field: str | None, reason: str, raw: bytes
) -> dict[str, Any]:
    """A kept bad record of a partitioned source (Kafka partition or file, and its offset)."""
    return {
        "part": part,
        "offset": offset,
        "field": field,
        "reason": reason,
        "text": raw[:1000].decode("utf-8", "replace"),
    }


@dataclass
class Decoded:
    events: list[dict[str, Any]]
    errors: list[LineError]
    lines: int


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    return not isinstance(value, dict | list)


def _json_type(value: Any) -> str:
    names = {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        dict: "object",
        list: "array",
    }
    return names.get(type(value), type(value).__name__)


class Decoder:
    def __init__(
        self,
        source: SourceSpec,
        max_line_bytes: int,
        max_future_ms: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.time_field = source.time_field
        self.checks = [(f, k) for f, k in sorted(source.schema.items()) if f != source.time_field]
        self.max_line_bytes = max_line_bytes
        # Events dated further ahead than this (a sender's clock is wrong) are refused: one of
        # them would move the watermark and make every on-time event after it late.
        self.max_future_ms = max_future_ms
        self.clock = clock
        self.reader = Reader(source, max_line_bytes, self._future)

    def _future(self, ts: int) -> str | None:
        if self.max_future_ms is None:
            return None
        now = int(self.clock() * 1000)
        if ts <= now + self.max_future_ms:
            return None
        return (
            f"{format_time(ts)} is more than {format_duration(self.max_future_ms)} ahead of the "
            f"server's clock ({format_time(now)}); check the sender's clock (max_future)"
        )

    def columns(self, body: bytes, threads: bool = True) -> Columns | None:
        """The body as columns, read by Arrow (``ingest.columnar``); None when it is small, not
        NDJSON, or anything in it needs the row decoder (``decode``), which names the bad line.
        ``threads``: False when other bodies are in progress (``Reader.read_json``)."""
        return self.reader.read(body, threads)

    def event(self, line: int, item: Any, text: bytes) -> dict[str, Any] | LineError:
        def fail(field: str | None, reason: str) -> LineError:
            return LineError(line, field, reason, text[:1000].decode("utf-8", "replace"))

        if not isinstance(item, dict):
            return fail(None, f"expected a JSON object, got {_json_type(item)}")
        if self.time_field not in item:
            return fail(self.time_field, "missing (it is this source's event-time field)")
        try:
            ts = event_time(item[self.time_field])
        except ValueError as err:
            return fail(self.time_field, str(err))
        ahead = self._future(ts)
        if ahead is not None:
            return fail(self.time_field, ahead)
        for field, kind in self.checks:
            value = item.get(field)
            if value is not None and not _kind_ok(kind, value):
                return fail(
                    field,
                    f"expected {_EXPECT[kind]}, got {_json_type(value)} "
                    f"{orjson.dumps(value)[:80].decode()}",
                )
        item[self.time_field] = ts
        return item

    def decode(self, body: bytes) -> Decoded:
        stripped = body.lstrip()
        if stripped.startswith(b"["):
            return self._array(body)
        return self._ndjson(body)

    def _array(self, body: bytes) -> Decoded:
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            line = err.lineno if hasattr(err, "lineno") else 1
            return Decoded([], [LineError(line, None, f"not valid JSON: {err.msg}", "")], 1)
        if not isinstance(items, list):
            return Decoded([], [LineError(1, None, "expected a JSON array or NDJSON", "")], 1)
        events: list[dict[str, Any]] = []
        errors: list[LineError] = []
        for i, item in enumerate(items, start=1):
            result = self.event(i, item, orjson.dumps(item))
            (errors if isinstance(result, LineError) else events).append(result)  # type: ignore[arg-type]
        return Decoded(events, errors, len(items))

    def _ndjson(self, body: bytes) -> Decoded:
        events: list[dict[str, Any]] = []
        errors: list[LineError] = []
        lines = 0
        for number, raw in enumerate(body.split(b"\n"), start=1):
            if not raw.strip():
                continue
            lines += 1
            if len(raw) > self.max_line_bytes:
                errors.append(
                    LineError(
                        number,
                        None,
                        f"line is longer than {self.max_line_bytes} bytes",
                        raw[:200].decode("utf-8", "replace"),
                    )
                )
                continue
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError as err:
                errors.append(
                    LineError(
                        number,
                        None,
                        f"not valid JSON: {err.msg}",
                        raw[:1000].decode("utf-8", "replace"),
                    )
                )
                continue
            result = self.event(number, item, raw)
            if isinstance(result, LineError):
                errors.append(result)
            else:
                events.append(result)
        return Decoded(events, errors, lines)
