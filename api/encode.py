"""Answers as JSON, CSV or NDJSON. Window starts are written as RFC 3339 UTC strings."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from views.query import Result
from views.timefmt import format_time


def row_dicts(result: Result) -> list[dict[str, Any]]:
    names = [c.name for c in result.columns]
    times = [i for i, c in enumerate(result.columns) if c.role == "window"]
    out = []
    for row in result.rows:
        values = list(row)
        for i in times:
            if values[i] is not None:
                values[i] = format_time(values[i])
        out.append(dict(zip(names, values, strict=True)))
    return out


def to_csv(result: Result) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.name for c in result.columns])
    for row in row_dicts(result):
        writer.writerow([_cell(v) for v in row.values()])
    return buffer.getvalue().encode()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_ndjson(result: Result) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in row_dicts(result))
