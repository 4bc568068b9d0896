"""A file source for backfills and replays: NDJSON, or CSV with declared column types, from a path
or glob, optionally following appended lines.

Each file is a partition of the source, and its position is the byte offset after the last
complete line applied. Positions and state are snapshotted together (the main snapshot), so a
restart continues every file exactly where its state ends: no line skipped, none counted twice.
A file that became shorter than its position (truncated or replaced) is an explicit error for
that file; it is not re-read from the start.

A line without its newline at the end of a file is applied only when not following (then the file
is complete); when following, it waits for the rest of the line.
"""

from __future__ import annotations

import asyncio
import csv
import glob
import io
import logging
from pathlib import Path
from typing import Any

import orjson

from ingest import faults
from ingest.commit import Committer
from ingest.decode import Decoder, LineError, rejected_record
from ingest.source import Background, oldest, partition_positions
from views.registry import Batch
from views.spec import SourceSpec

log = logging.getLogger("tallyd.files")

CHUNK = 1 << 20
MAX_LINES = 5000  # per batch: bounded, so queries are answered in between
POLL = 0.5


class FileSource(Background):
    kind = "file"
    detached = False  # positions and state ride in the main snapshot

    def __init__(self, spec: SourceSpec, committer: Committer, decoder: Decoder, base: Path):
        self.spec = spec
        self.name = spec.name
        self.committer = committer
        self.registry = committer.registry  # read only: positions and watermarks
        self.decoder = decoder
        pattern = Path(spec.options["path"])
        self.pattern = str(pattern if pattern.is_absolute() else base / pattern)
        self.follow = bool(spec.options["follow"])
        self.errors: dict[str, str] = {}
        self.headers: dict[str, list[str]] = {}
        self.state = "starting"

    async def save(self) -> None:
        """Positions are saved with the state, by the main snapshot."""

    def watermark(self, now: float) -> int | None:
        return oldest(self.registry.sources[self.name].watermarks)

    def position(self) -> str:
        return partition_positions(self.registry.sources[self.name].positions)

    def status(self) -> dict[str, Any]:
        positions = self.registry.sources[self.spec.name].positions
        files = {
            p: {"position": positions.get(p), "error": self.errors.get(p)}
            for p in sorted(set(positions) | set(self.errors))
        }
        return {
            "kind": "file",
            "state": self.state,
            "healthy": not self.errors,
            "path": self.pattern,
            "follow": self.follow,
            "files": files,
        }

    async def run(self) -> None:
        self.state = "running"
        while True:
            progressed = False
            for path in sorted(glob.glob(self.pattern)):
                if path not in self.errors:
                    progressed |= await self._read(path)
            if not self.follow and not progressed:
                self.state = "done"  # everything read; restart to pick up new files
                return
            if not progressed:
                await asyncio.sleep(POLL)

    async def _read(self, path: str) -> bool:
        positions = self.registry.sources[self.spec.name].positions
        position = positions.get(path, 0)
        try:
            size = Path(path).stat().st_size
        except FileNotFoundError:
            return False
        if size < position:
            self.errors[path] = (
                f"the file is {size} bytes, shorter than its saved position "
                f"{position}: truncated or replaced; it is not re-read"
            )
            log.error(
                "event=file_error source=%s file=%s error=%r",
                self.spec.name,
                path,
                self.errors[path],
            )
            return False
        if size == position:
            return False
        data = await asyncio.to_thread(_read_chunk, path, position, CHUNK)
        at_end = position + len(data) >= size
        lines = complete_lines(data, position, final=at_end and not self.follow)
        if not lines:
            if len(data) == CHUNK:
                self.errors[path] = f"a line at byte {position} is longer than {CHUNK} bytes"
            return False
        if self.spec.format == "csv" and path not in self.headers:
            self.headers[path] = await asyncio.to_thread(_header, path)
        for start in range(0, len(lines), MAX_LINES):
            part = lines[start : start + MAX_LINES]
            events, rejected = self._decode(path, part)
            end = part[-1][2]
            await self.committer.commit(Batch(self.name, events, end, rejected, path))
            await asyncio.sleep(0)
        return True

    # -- backfills: a view added or changed on the running server reads the files again ---------

    async def backfill(self, name: str, chunk_bytes: int) -> None:
        """Feed the view ``name`` every file this source has read, from byte 0 up to where the
        live views are, a chunk per step (read and decoded in a worker thread, as the live
        reader decodes it); a file joins the live views in the step in which the chunk read
        reaches their position, and the view is live once every file has."""
        registry = self.registry
        filling = registry.backfills.get(name)
        while filling is not None:
            if registry.backfills.get(name) is not filling:
                return
            # Where the live views are: read without the step (positions only grow, and the
            # step below checks again before joining).
            live = dict(registry.sources[self.name].positions)
            todo = [path for path in sorted(live) if path not in filling.joined]
            if not todo:
                async with self.committer.step():
                    if registry.backfills.get(name) is not filling:
                        return
                    if registry.backfill_join(name, None):
                        break
                continue  # a file the live views reached meanwhile
            path = todo[0]
            at = filling.positions.get(path, 0)
            read = await asyncio.to_thread(self._history, path, at, chunk_bytes, live[path])
            async with self.committer.step():
                if registry.backfills.get(name) is not filling:
                    return
                filling.began.setdefault(path, 0)
                for events, end in read:
                    registry.backfill_apply(name, Batch(self.name, events, end, [], path))
                caught = (
                    filling.positions.get(path, 0) >= registry.sources[self.name].positions[path]
                )
                if caught and registry.backfill_join(name, path):
                    break
            if not read and not caught:  # shortened under it: the source says so too
                raise RuntimeError(f"{path} is shorter than the position its views reached")
            faults.reached("mid_backfill")
        log.info("event=backfill_done view=%s", name)

    async def history_size(self) -> str:
        positions = self.registry.sources[self.name].positions
        return f"{sum(positions.values()):,} bytes in {len(positions)} file(s)"

    def _history(
        self, path: str, at: int, size: int, live: int
    ) -> list[tuple[list[dict[str, Any]], int]]:
        """The complete lines of about ``size`` bytes at ``at`` (more when one line is longer),
        never past ``live``, as batches of events and where each ends (blocking: a worker
        thread). The live position is at a line's end: a last line without a newline was
        applied only once the file was complete."""
        if self.spec.format == "csv" and path not in self.headers:
            self.headers[path] = _header(path)
        while True:
            size = min(size, live - at)
            lines = complete_lines(_read_chunk(path, at, size), at, final=at + size >= live)
            if lines or at + size >= live:
                break
            size *= 2
        out = []
        for start in range(0, len(lines), MAX_LINES):
            part = lines[start : start + MAX_LINES]
            out.append((self._decode(path, part)[0], part[-1][2]))
        return out

    def _decode(
        self, path: str, lines: list[tuple[int, bytes, int]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        events: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for offset, raw, _end in lines:
            if not raw.strip() or (self.spec.format == "csv" and offset == 0):
                continue  # blank lines, and the CSV header
            item: Any
            try:
                item = self._csv_row(path, raw) if self.spec.format == "csv" else orjson.loads(raw)
            except (orjson.JSONDecodeError, ValueError) as err:
                reason = (
                    f"not valid JSON: {err.msg}"
                    if isinstance(err, orjson.JSONDecodeError)
                    else str(err)
                )
                rejected.append(rejected_record(path, offset, None, reason, raw))
                continue
            result = self.decoder.event(offset, item, raw)
            if isinstance(result, LineError):
                rejected.append(rejected_record(path, offset, result.field, result.reason, raw))
            else:
                events.append(result)
        return events, rejected

    def _csv_row(self, path: str, raw: bytes) -> dict[str, Any]:
        header = self.headers[path]
        (values,) = list(csv.reader(io.StringIO(raw.decode("utf-8"))))
        if len(values) != len(header):
            raise ValueError(f"{len(values)} columns, the header has {len(header)}")
        row: dict[str, Any] = {}
        for name, text in zip(header, values, strict=True):
            row[name] = _typed(self.spec.declared.get(name, "string"), name, text)
        return row


def _typed(kind: str, name: str, text: str) -> Any:
    if text == "":
        return None
    if kind == "number":
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"column '{name}': {text!r} is not a number") from None
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"column '{name}': {text!r} is not true or false")
        return text.lower() == "true"
    return text


def _read_chunk(path: str, position: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(position)
        data = f.read(size)
    return data


def _header(path: str) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8").rstrip("\r\n")
    return next(csv.reader([first]))


def complete_lines(data: bytes, base: int, final: bool) -> list[tuple[int, bytes, int]]:
    """Split a chunk read at byte ``base`` into (start offset, line without its line ending,
    end offset after the newline). A trailing line without a newline is included only when
    ``final`` (the file is complete); otherwise it waits for the rest."""
    out = []
    start = 0
    while True:
        newline = data.find(b"\n", start)
        if newline < 0:
            break
        out.append((base + start, data[start:newline].rstrip(b"\r"), base + newline + 1))
        start = newline + 1
    if final and start < len(data):
        out.append((base + start, data[start:].rstrip(b"\r"), base + len(data)))
    return out
