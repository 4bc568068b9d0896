"""Kafka record values → events (with weights for change streams), or a poison reason.

``json``: the value is one event. ``debezium``: the standard change envelope — ``op`` c (create),
r (snapshot read), u (update), d (delete), with ``before`` / ``after`` rows, optionally wrapped in
``{"schema": ..., "payload": ...}``. An update retracts the ``before`` row and adds the ``after``
row (so a row that moves between groups leaves one and joins the other); a delete retracts
``before``. A tombstone (null value, sent after a delete for log compaction) changes nothing.
Every row of a message is validated before any is used: a message applies whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ingest.columnar import MIN_LINES, ChangeReader
from ingest.decode import Decoder, LineError, rejected_record
from views.batch import Columns

Row = dict[str, Any]


@dataclass
class Decoded:
    events: list[Row] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    poison: list[dict[str, Any]] = field(default_factory=list)
    tombstones: int = 0


class ChangeDecoder:
    def __init__(self, decoder: Decoder, fmt: str, kafka_time: bool) -> None:
        self.decoder = decoder
        self.format = fmt
        self.kafka_time = kafka_time  # time = "kafka_timestamp": use the record's timestamp
        self.changes = ChangeReader(decoder.reader)

    def columns(
        self, values: list[bytes | None], threads: bool = True
    ) -> tuple[Columns, np.ndarray | None] | None:
        """Many valid records as one batch of columns, with weights for change events (else
        None: the row decoder reads them): the fetch's values joined into one NDJSON buffer,
        read at once. A change stream's tombstones (null values) change nothing: left out.
        ``threads``: Arrow's own threads (``Reader.read_json``)."""
        if self.kafka_time or len(values) < MIN_LINES:
            return None
        present = [v for v in values if v is not None]
        if self.format == "debezium":
            return self.changes.read(present, threads)
        if len(present) != len(values):
            return None
        body = b"\n".join(present)
        if body.count(b"\n") != len(values) - 1:  # a record spans lines: row by row
            return None
        columns = self.decoder.columns(body, threads)
        return None if columns is None else (columns, None)

    def decode(self, part: str, records: list[tuple[int, int, bytes | None]]) -> Decoded:
        """``records``: (offset, timestamp ms, value) in offset order."""
        out = Decoded()
        for offset, timestamp, value in records:
            if value is None:
                if self.format == "debezium":
                    out.tombstones += 1
                    continue
                out.poison.append(rejected_record(part, offset, None, "null value", b""))
                continue
            try:
                item = orjson.loads(value)
            except orjson.JSONDecodeError as err:
                out.poison.append(
                    rejected_record(part, offset, None, f"not valid JSON: {err.msg}", value)
                )
                continue
            rows = self._rows(item) if self.format == "debezium" else [(item, 1)]
            if isinstance(rows, str):
                out.poison.append(rejected_record(part, offset, None, rows, value))
                continue
            checked = []
            for row, weight in rows:
                if self.kafka_time and isinstance(row, dict):
                    row["kafka_timestamp"] = timestamp
                result = self.decoder.event(offset, row, value)
                if isinstance(result, LineError):
                    out.poison.append(
                        rejected_record(part, offset, result.field, result.reason, value)
                    )
                    break
                checked.append((result, weight))
            else:
                for row, weight in checked:
                    out.events.append(row)
                    out.weights.append(weight)
        return out

    @staticmethod
    def _rows(item: Any) -> list[tuple[Any, int]] | str:
        if isinstance(item, dict) and isinstance(item.get("payload"), dict):
            item = item["payload"]
        if not isinstance(item, dict) or "op" not in item:
            return "not a Debezium change event (no 'op')"
        op, before, after = item["op"], item.get("before"), item.get("after")
        if op in ("c", "r"):
            return [(after, 1)] if after is not None else f"op '{op}' without an 'after' row"
        if op in ("u", "d") and before is None:
            return (
                f"op '{op}' without a 'before' row: the source must send full before-images "
                "(e.g. PostgreSQL REPLICA IDENTITY FULL)"
            )
        if op == "u":
            return [(before, -1), (after, 1)] if after is not None else "op 'u' without 'after'"
        if op == "d":
            return [(before, -1)]
        return f"unknown op {op!r}; expected c, r, u or d"
