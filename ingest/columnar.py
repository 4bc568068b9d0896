"""NDJSON straight to columns: the fast reader every source uses for all but tiny bodies.

Arrow's JSON reader (C++; with its threads for a body read alone, in one thread beside others)
reads only the fields the source's views use, with the types the views require
(``explicit_schema``; other fields are skipped unparsed); string columns get their dictionary
codes here too, in the reading thread, not on the loop that applies. It is strict where it
matters: a string field given a number, a key given twice, a line that is not an object
fail the read. Then the checks run on whole columns: the time field (epoch s / ms numbers, or
RFC 3339 strings parsed vectorised by ``ingest.timeparse``; any row in another form is read by
the one-value parser), ``max_future``, integers too large for a float. Whenever anything is not
right, ``read`` returns None and the caller's row decoder reads the body instead — it names the
bad line and field, with the messages every source has always given.

Types are learned per field: a time field that arrives as strings, a key that holds numbers, are
read that way from then on (one failed read, then the right schema — the same body read again),
so a steady stream of any consistent shape takes this path; a read that fails while another
thread learns the type tries again with what that thread learned.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from ingest.timeparse import parse_times
from views.batch import Columns, Vec, from_arrow
from views.spec import SourceSpec
from views.timefmt import MAX_TIME, MIN_TIME, SECONDS_BELOW, parse_rfc3339

MIN_LINES = 64  # below this, Arrow's fixed cost outweighs reading row by row
_EXACT = 2.0**53  # a float column holding a larger magnitude may have been a larger integer
_CHANGED = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)")
_NESTED = re.compile(r"Column\(/(?:payload/)?(?:before|after)/")
_OPS = pa.array(["c", "r", "u", "d"])  # Debezium's operations: create, read, update, delete
_RETRACT = pa.array(["u", "d"])  # the before row is taken off
_ADD = pa.array(["c", "r", "u"])  # the after row is added
_KIND_TYPES: dict[str, list[pa.DataType]] = {
    "number": [pa.float64()],
    "string": [pa.string()],
    "bool": [pa.bool_()],
    "scalar": [pa.string(), pa.float64(), pa.bool_()],
}
_JSON_TYPE = {"number": pa.float64(), "string": pa.string(), "boolean": pa.bool_()}


class Reader:
    def __init__(
        self,
        source: SourceSpec,
        max_line_bytes: int,
        future: Callable[[int], str | None],
    ) -> None:
        self.time_field = source.time_field
        self.kinds = {f: k for f, k in source.schema.items() if f != source.time_field}
        self.max_line_bytes = max_line_bytes
        self.future = future  # the reason a time is too far ahead, or None
        self.types: dict[str, pa.DataType] = {f: _KIND_TYPES[k][0] for f, k in self.kinds.items()}
        self.time_type: pa.DataType = pa.int64()

    def _schema(self) -> pa.Schema:
        return pa.schema([(self.time_field, self.time_type), *self.types.items()])

    def read(self, body: bytes, threads: bool = True) -> Columns | None:
        """The body's events as columns, or None when the row decoder must read it
        (``threads``: see ``read_json``)."""
        if body[:256].lstrip()[:1] != b"{":
            return None
        if len(body) > self.max_line_bytes and not _lines_within(body, self.max_line_bytes):
            return None  # the row decoder names the line that is too long
        lines = body.count(b"\n") + (not body.endswith(b"\n"))
        if lines < MIN_LINES:
            return None
        table = self.read_json(body, self._schema, threads)
        return None if table is None else self._columns(table)

    def read_json(
        self, body: bytes, schema: Callable[[], pa.Schema], threads: bool = True
    ) -> pa.Table | None:
        """``body`` read by Arrow with ``schema()``, the types learned so far: a failed read
        that teaches a field's type is tried again (at most twice); None when it teaches
        nothing (a bad line: the row decoder names it).

        ``threads``: Arrow's own threads, 1 MB blocks — the shortest wait for a body read alone
        (a 6 MB body: ~20 ms against ~36). False: one thread, one block — about the same CPU for
        flat NDJSON (36-53 ms against 37-56 across runs, ``benchmarks.profile_shape``; nested
        Debezium envelopes cost more so, and are read with threads) and no thread pool taking
        both cores from the event loop and the other requests, for an HTTP body read while
        others are in progress (benchmarks/README.md: two clients gained, one lost nothing)."""
        options = (
            pa_json.ReadOptions()
            if threads
            else pa_json.ReadOptions(use_threads=False, block_size=max(1 << 20, len(body) + 1))
        )
        for _ in range(3):
            tried = schema()
            try:
                return pa_json.read_json(
                    pa.BufferReader(body),
                    read_options=options,
                    parse_options=pa_json.ParseOptions(
                        explicit_schema=tried, unexpected_field_behavior="ignore"
                    ),
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                # Bodies are read in several threads at once: another may have learned this
                # type since this read began (then there is nothing left to learn here, but the
                # read is worth trying again with what it learned).
                if not schema().equals(tried) or self._learn(str(err)):
                    continue
                return None
        return None

    def _learn(self, message: str) -> bool:
        """From Arrow's complaint, the type a field really arrives as; False if there is nothing
        to learn (a bad line: the row decoder names it)."""
        message = _NESTED.sub("Column(/", message)  # a change event's before/after fields
        found = _CHANGED.search(message)
        if found is None:
            decimal_time = "Failed to convert JSON to int64" in message  # 1790000000.5
            if decimal_time and self.time_type == pa.int64():
                self.time_type = pa.float64()
                return True
            return False
        field, arrived = found.group(1), found.group(3)
        wanted = _JSON_TYPE.get(arrived)
        if field == self.time_field and wanted is not None:
            options = [pa.int64(), pa.float64()] if arrived == "number" else [pa.string()]
            if self.time_type in options:
                return False
            self.time_type = options[0]
            return True
        if field in self.types and wanted is not None and wanted in _KIND_TYPES[self.kinds[field]]:
            if self.types[field] == wanted:
                return False
            self.types = {**self.types, field: wanted}  # never changed while another thread reads
            return True
        return False

    def _columns(self, table: pa.Table) -> Columns | None:
        time = self._time(table.column(self.time_field))
        if time is None:
            return None
        fields: dict[str, Vec] = {}
        for name in self.types:
            column = from_arrow(table.column(name))
            if column.kind == "number" and column.data.dtype.kind == "f":
                present = column.data[column.valid]
                if len(present) and float(np.abs(present).max()) >= _EXACT:
                    return None  # maybe an integer beyond 2**53: the row decoder keeps it exact
            if column.kind == "string":
                column.encoded()  # here, in the reading thread, not on the loop that applies
            fields[name] = column
        fields[self.time_field] = Vec("number", time, np.ones(len(time), bool))
        return Columns(time, fields)

    def _time(self, column: pa.ChunkedArray) -> np.ndarray | None:
        """Epoch ms of every row, read as ``views.timefmt.event_time`` reads one; None when a
        row has none, or one the row decoder must name."""
        if column.null_count:
            return None
        if pa.types.is_string(column.type):
            ms, ok = parse_times(column)
            for i in np.flatnonzero(~ok).tolist():  # other forms: Python's ISO reader
                try:
                    ms[i] = parse_rfc3339(column[i].as_py())
                except ValueError:
                    return None
        else:
            values = column.to_numpy()
            seconds = np.abs(values) < SECONDS_BELOW
            if values.dtype.kind == "f":
                scaled = np.rint(np.where(seconds, values * 1000, values))
                inside = (scaled >= MIN_TIME) & (scaled <= MAX_TIME)  # NaN is not
                if not inside.all():
                    return None  # the row decoder names the line out of range
                ms = scaled.astype(np.int64)
            else:
                ms = np.where(seconds, values * 1000, values).astype(np.int64)
        newest = int(ms.max()) if len(ms) else None
        if newest is not None and self.future(newest) is not None:
            return None  # the row decoder names the line that is too far ahead
        if newest is not None and (int(ms.min()) < MIN_TIME or newest > MAX_TIME):
            return None  # the row decoder names the line out of range
        return ms


def _lines_within(body: bytes, limit: int) -> bool:
    """Whether no line of ``body`` is longer than ``limit`` bytes. A newline in every whole
    aligned block of ``(limit + 2) // 2`` bytes proves it — a longer run without one would hold
    a whole block — in a few ``bytes.find`` calls that each stop at the block's first newline
    (a dozen for a 6 MB body and the default 1 MiB limit: ~11 ms of numpy before, per body).
    Where a block has none, or the blocks are too many, every line is measured."""
    half = (limit + 2) // 2
    if len(body) // half <= 4096 and all(
        body.find(b"\n", start, start + half) >= 0 for start in range(0, len(body) - half + 1, half)
    ):
        return True
    ends = np.flatnonzero(np.frombuffer(body, np.uint8) == 10)
    bounds = np.concatenate([[-1], ends, [len(body)]])
    return int(np.diff(bounds).max()) - 1 <= limit


class ChangeReader:
    """Debezium change events (``op``, ``before``, ``after``, optionally inside
    ``{"schema", "payload"}``) straight to columns: Arrow reads the envelope with the rows as
    structs of the fields the views use; each event becomes its rows in order — the ``before``
    row retracted (-1) for ``u`` and ``d``, the ``after`` row added (+1) for ``c``, ``r`` and
    ``u``. An envelope that is anything but well formed (an unknown op, a missing before-image)
    sends the whole fetch to the row decoder, which keeps it as a poison record with its reason.
    """

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def _schema(self, wrapped: bool) -> pa.Schema:
        row = pa.struct(list(self.reader._schema()))
        envelope = [("op", pa.string()), ("before", row), ("after", row)]
        return pa.schema([("payload", pa.struct(envelope))] if wrapped else envelope)

    def read(self, values: list[bytes], threads: bool = True) -> tuple[Columns, np.ndarray] | None:
        """(the rows as columns, their weights), or None for the row decoder (``threads``: see
        ``Reader.read_json``)."""
        if len(values) < MIN_LINES:
            return None
        body = b"\n".join(values)
        if body.count(b"\n") != len(values) - 1:  # a record spans lines: row by row
            return None
        wrapped = values[0][:256].lstrip().startswith(b'{"schema"')
        table = self.reader.read_json(body, lambda: self._schema(wrapped), threads)
        if table is None:
            return None
        return self._rows(table.column("payload").combine_chunks() if wrapped else table)

    def _rows(self, envelope: pa.Table | pa.StructArray) -> tuple[Columns, np.ndarray] | None:
        get = envelope.field if isinstance(envelope, pa.StructArray) else envelope.column
        op = get("op")
        before, after = _flat(get("before")), _flat(get("after"))
        has_before = np.asarray(before.is_valid())
        has_after = np.asarray(after.is_valid())
        retract, add, known = (_among(op, ops) for ops in (_RETRACT, _ADD, _OPS))
        if not known.all() or (retract & ~has_before).any() or (add & ~has_after).any():
            return None  # the row decoder keeps the bad events as poison, with their reasons
        n = len(op)
        # Each event's rows in order: its before row (-1), then its after row (+1).
        take = np.stack([np.arange(n), n + np.arange(n)], axis=1).reshape(-1)
        keep = np.stack([retract, add], axis=1).reshape(-1)
        weights = np.stack([-np.ones(n, np.int64), np.ones(n, np.int64)], axis=1).reshape(-1)
        both = pa.concat_tables([_table(before), _table(after)])
        rows = both.take(pa.array(take[keep]))
        columns = self.reader._columns(rows)
        return None if columns is None else (columns, weights[keep])


def _among(column: pa.ChunkedArray | pa.Array, values: pa.Array) -> np.ndarray:
    """Per row, whether it is one of ``values`` (NULL is none of them), read by Arrow: no
    Python string per row."""
    found = pc.is_in(column, value_set=values).fill_null(False)
    if isinstance(found, pa.ChunkedArray):
        found = found.combine_chunks()
    out: np.ndarray = found.to_numpy(zero_copy_only=False)
    return out


def _flat(column: pa.ChunkedArray | pa.StructArray) -> pa.StructArray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column


def _table(rows: pa.StructArray) -> pa.Table:
    return pa.Table.from_arrays(rows.flatten(), names=[f.name for f in rows.type])
