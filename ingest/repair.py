"""``tallyd repair``: make a data directory the server refuses to start on startable again,
keeping what is consistent and moving the rest aside.

What is consistent: the newest snapshot that reads back, and the write-ahead log records that
continue it without a gap, up to the first damage — a record number twice (two servers once
wrote one log), a missing record, a frame whose checksum fails. Everything else — snapshots that
do not read back, the log from the damage on, a log that a gap separates from the snapshot — is
moved into ``<data_dir>/quarantine-<UTC time>/`` under its own relative path, never deleted:
those events were acknowledged once, and someone may want to look at them or post them again.
A segment damaged in the middle keeps its head in place; its tail is copied aside (fsynced)
before the segment is cut, so a crash during a repair loses nothing and a second run finishes it.

``plan`` only reads; ``carry_out`` moves. Blocking file I/O, run with the directory locked
(``ingest/datadir.py``) so that no server is using it meanwhile.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ingest.http import TABLE_RECORD
from ingest.snapshots import SnapshotStore, atomic_write
from ingest.wal import Damage, Wal, cut, frames, fsync_dir

AFTER = "follows the damage above"


@dataclass
class Piece:
    """A file, or its tail from byte ``start``, that the repair moves aside; what it holds."""

    path: Path
    why: str
    start: int = 0  # 0: the whole file
    records: list[int] = field(default_factory=list)  # the readable records' numbers
    events: int = 0


@dataclass
class Plan:
    data_dir: Path
    snapshot: Path | None  # the snapshot kept (None: the state starts empty)
    position: int  # the last log record it covers
    kept: list[int] = field(default_factory=list)  # log records kept after it, replayed on start
    kept_events: int = 0
    dropped: list[Piece] = field(default_factory=list)

    def report(self, quarantine: Path, done: bool) -> list[str]:
        """What is kept and what is dropped (``done``: moved already, else only planned), in
        lines for a person."""
        kept = "snapshot: none usable: the state starts empty"
        if self.snapshot is not None:
            kept = f"snapshot {self.snapshot.name} (log records up to {self.position})"
        lines = [f"data directory {self.data_dir}", "kept:", f"  {kept}"]
        if self.kept:
            lines.append(
                f"  log records {_span(self.kept)} ({_many(len(self.kept), 'record')}, "
                f"{_many(self.kept_events, 'event')}), replayed on top of it"
            )
        else:
            lines.append("  no log records after it")
        if not self.dropped:
            return [*lines, "dropped: nothing: the snapshot and the log are consistent"]
        lines.append(f"dropped ({'moved' if done else 'to be moved'} to {quarantine}/):")
        lines += [f"  {self._describe(piece)}" for piece in self.dropped]
        if not done:
            return [*lines, "dry run: nothing was changed; without --dry-run, this is done"]
        return [
            *lines,
            f"done: tallyd serve now restores what is kept; {quarantine.name}/ "
            "keeps what was dropped until you delete it",
        ]

    def _describe(self, piece: Piece) -> str:
        where = piece.path.relative_to(self.data_dir).as_posix()
        if piece.start:
            where += f" from byte {piece.start}"
        held = ""
        if piece.records:
            held = f"; holds {_many(len(piece.records), 'readable record')} "
            held += f"({_span(piece.records)}), {_many(piece.events, 'event')}"
        return f"{where}: {piece.why}{held}"


def _many(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _span(seqs: list[int]) -> str:
    return f"{min(seqs)}..{max(seqs)}"


def events_in(payload: bytes) -> int:
    """Events in one WAL record (``ingest/http.py`` writes them): JSON with its decoded events,
    or ``T`` + a header line + the NDJSON body of a column-wise batch."""
    if payload[:1] == TABLE_RECORD:
        body = payload.split(b"\n", 1)[1]
        return sum(1 for line in body.split(b"\n") if line.strip())
    return len(orjson.loads(payload)["events"])


def plan(data_dir: Path) -> Plan:
    """What a repair keeps and drops; reads, changes nothing."""
    loaded = SnapshotStore(data_dir / "snapshots").load_newest()
    position = 0 if loaded.state is None else int(loaded.state["position"])
    result = Plan(data_dir, loaded.path, position)
    for path, why in loaded.skipped:
        result.dropped.append(Piece(path, f"a snapshot that does not read back ({why})"))
    _plan_log(result, Wal(data_dir / "wal").segments())
    return result


@dataclass
class _Run:
    """Segments read in order while their records follow each other."""

    next: int  # the record number expected after the last one read
    kept: list[int] = field(default_factory=list)  # records read beyond the snapshot
    events: int = 0  # in those
    cut: Piece | None = None  # where the run broke: a segment's tail, or a whole segment
    after: list[Path] = field(default_factory=list)  # the segments after the break


def _plan_log(result: Plan, segments: list[tuple[int, Path]]) -> None:
    """Keep the records that continue the snapshot up to the first break; drop the rest. The
    log is read from the segment that holds the snapshot's next record (``main``): damage in
    older segments (``head``, all covered by the snapshot) drops only them."""
    position = result.position
    starts = [i for i, (first, _) in enumerate(segments) if first <= position + 1]
    if not starts:
        if segments:
            first = segments[0][0]
            why = f"records {position + 1}..{first - 1}, between the snapshot and it, are missing"
            result.dropped += _pieces([p for _, p in segments], {}, why)
        return
    head, main = segments[: starts[-1]], segments[starts[-1] :]
    run = _run(main, position, segments[-1][1])
    if run.next - 1 < position:
        # The log breaks before it reaches the snapshot's end: all it holds up to the break is
        # covered, and a record written after it would follow a gap. Without it, the log starts
        # again right after the snapshot.
        result.dropped += _pieces([p for _, p in segments], _reasons(run), COVERED)
        return
    result.kept, result.kept_events = run.kept, run.events
    if run.cut is not None:
        result.dropped += [run.cut, *_pieces(run.after, {}, AFTER)]
    older = _run(head, position, segments[-1][1]) if head else None
    if older is not None and (older.cut is not None or older.next != main[0][0]):
        reasons = _reasons(older)
        if older.cut is None:
            missing = f"records {older.next}..{main[0][0] - 1} after it are missing"
            reasons[head[-1][1]] = f"{COVERED}; {missing}"
        result.dropped += _pieces([p for _, p in head], reasons, COVERED)


COVERED = "covered by the snapshot (not needed to restore it)"


def _reasons(run: _Run) -> dict[Path, str]:
    """Why the segments a run broke at and after are dropped, by path."""
    found = {path: AFTER for path in run.after}
    if run.cut is not None:
        found[run.cut.path] = run.cut.why
    return found


def _pieces(paths: list[Path], reasons: dict[Path, str], default: str) -> list[Piece]:
    return [_piece(path, reasons.get(path, default)) for path in paths]


def _run(segments: list[tuple[int, Path]], position: int, newest: Path) -> _Run:
    run = _Run(segments[0][0])
    for index, (first, path) in enumerate(segments):
        if first != run.next:
            run.cut = _piece(path, f"starts at record {first}, expected {run.next}")
        else:
            run.cut = _read(run, path, position, path == newest)
        if run.cut is not None:
            run.after = [p for _, p in segments[index + 1 :]]
            break
    return run


def _read(run: _Run, path: Path, position: int, newest: bool) -> Piece | None:
    """Read a segment's records into ``run`` until one breaks the sequence; the rest of the
    segment from there, or None if none did."""
    data = path.read_bytes()
    for item in frames(data):
        if isinstance(item, Damage):
            why = f"{item.problem}: the log is corrupt from here"
            if newest and item.torn:
                why = "a torn tail (a crash while appending: never acknowledged)"
        elif item.seq != run.next:
            why = f"record {item.seq}, expected {run.next}"
        else:
            if item.seq > position:
                run.kept.append(item.seq)
                run.events += events_in(item.payload)
            run.next += 1
            continue
        return _piece(path, why, item.offset, data)
    return None


def _piece(path: Path, why: str, start: int = 0, data: bytes | None = None) -> Piece:
    """``path`` from byte ``start``, with the records still readable in it counted."""
    piece = Piece(path, why, start)
    data = path.read_bytes() if data is None else data
    for item in frames(data[start:]):
        if isinstance(item, Damage):
            break
        piece.records.append(item.seq)
        piece.events += events_in(item.payload)
    return piece


def quarantine_for(data_dir: Path, now: float) -> Path:
    """A directory name for this repair's dropped pieces that no earlier repair used."""
    base = data_dir / time.strftime("quarantine-%Y%m%dT%H%M%SZ", time.gmtime(now))
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def carry_out(plan: Plan, quarantine: Path) -> None:
    """Move every dropped piece under ``quarantine``, at its path relative to the data
    directory; a segment's tail is copied there (fsynced), then cut off the segment."""
    quarantine.mkdir()
    sources: set[Path] = set()
    for piece in plan.dropped:
        target = quarantine / piece.path.relative_to(plan.data_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if piece.start:
            tail = piece.path.read_bytes()[piece.start :]
            atomic_write(target.with_name(f"{target.name}.from-byte-{piece.start}"), tail)
            cut(piece.path, piece.start)
        else:
            os.replace(piece.path, target)
            fsync_dir(target.parent)
        sources.add(piece.path.parent)
    for directory in sources:
        fsync_dir(directory)
