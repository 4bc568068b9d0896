"""Write-ahead log: numbered records in segment files, each framed with length, CRC and sequence.

Frame (little-endian): ``u32 payload length | u32 CRC-32 of (seq, payload) | u64 seq | payload``.
Segments are named ``wal-<first seq, 20 digits>.log``.

Recovery rules (``Wal.open``):

* a damaged frame that reaches the end of the newest segment, or is followed only by zero bytes,
  is a *torn tail* (a crash while appending, so it was never acknowledged): it is cut off;
* any other damaged frame, a gap or a repeat in the sequence is *corruption*: ``WalCorrupt`` is
  raised naming the file, the offset and what is wrong, and the server refuses to start rather than
  silently skip acknowledged events.

All methods here block (they do file I/O); the HTTP log (ingest/http.py) calls them from a
worker thread.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ingest import faults

_FRAME = struct.Struct("<IIQ")
_SEQ = struct.Struct("<Q")


class WalCorrupt(RuntimeError):
    """Damage the WAL cannot explain as a torn tail."""


# A payload is written as given: one bytes, or pieces written one after the other (a record's
# header line and the 6 MB body it logs are not joined, on the event loop, just to be framed).
Payload = bytes | tuple[bytes, ...]


def _pieces(payload: Payload) -> tuple[bytes, ...]:
    return (payload,) if isinstance(payload, bytes) else payload


def _crc(seq: int, payload: Payload) -> int:
    crc = zlib.crc32(_SEQ.pack(seq))
    for piece in _pieces(payload):
        crc = zlib.crc32(piece, crc)
    return crc


def frame(seq: int, payload: bytes) -> bytes:
    return header(seq, payload) + payload


def header(seq: int, payload: Payload) -> bytes:
    """A record's frame header (the payload follows it)."""
    size = sum(len(piece) for piece in _pieces(payload))
    return _FRAME.pack(size, _crc(seq, payload), seq)


class Frame(NamedTuple):
    offset: int  # where the frame starts in its segment
    seq: int
    payload: bytes


@dataclass(frozen=True)
class Damage:
    """A frame that cannot be read: its offset, where it would end, what is wrong."""

    offset: int
    end: int
    problem: str
    after: int  # bytes in the file past ``end``
    torn: bool  # it reaches the end of the file, or only zero bytes follow it


def frames(data: bytes) -> Iterator[Frame | Damage]:
    """Every intact frame of a segment, in file order, then a ``Damage`` if one stops the
    reading. Sequence numbers are not checked here: callers know what they expect."""
    offset = 0
    while offset < len(data):
        problem = None
        end = len(data)
        if len(data) - offset < _FRAME.size:
            problem = "incomplete frame header"
        else:
            length, crc, seq = _FRAME.unpack_from(data, offset)
            end = offset + _FRAME.size + length
            payload = data[offset + _FRAME.size : end]
            if end > len(data):
                problem = f"frame of {length} bytes runs past the end of the file"
            elif _crc(seq, payload) != crc:
                problem = "checksum mismatch"
        if problem is not None:
            torn = end >= len(data) or not any(data[offset + _FRAME.size :])
            yield Damage(offset, end, problem, max(len(data) - end, 0), torn)
            return
        yield Frame(offset, seq, payload)
        offset = end


def _segment_name(first_seq: int) -> str:
    return f"wal-{first_seq:020d}.log"


class Wal:
    def __init__(self, directory: Path, segment_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.next_seq = 1
        self._fd: int | None = None
        self._size = 0
        self.truncated_bytes = 0  # torn tail cut off at open, for the startup log
        # An append (the committer's thread) and a rotation (a snapshot's) never interleave.
        self.lock = threading.Lock()
        self.commits = 0  # fsyncs of appended records: fewer than records under group commit
        self.committed_bytes = 0  # written by those commits, headers included
        self.commit_seconds = 0.0  # spent writing and fsyncing them (the wait before an ack)

    def segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.glob("wal-*.log"):
            try:
                found.append((int(path.stem[4:]), path))
            except ValueError:
                continue
        return sorted(found)

    def open(self, after: int) -> Iterator[tuple[int, bytes]]:
        """Check every segment, cut a torn tail, and yield the records with seq > ``after``.

        ``after`` is the position the loaded snapshot covers; the log must continue right after it.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        segments = self.segments()
        if segments and segments[0][0] > after + 1:
            first, path = segments[0]
            raise WalCorrupt(
                f"{path.name}: the log starts at record {first}, but the snapshot covers only up "
                f"to {after}: records {after + 1}..{first - 1} are missing"
            )
        expected: int | None = None
        for index, (first, path) in enumerate(segments):
            if expected is not None and first != expected:
                raise WalCorrupt(f"{path.name}: starts at record {first}, expected {expected}")
            expected = first
            for seq, payload in self._read(path, first, index == len(segments) - 1):
                expected = seq + 1
                if seq > after:
                    yield seq, payload
        self.next_seq = max(expected or 1, after + 1)
        self._open_segment()

    def _read(self, path: Path, first: int, newest: bool) -> Iterator[tuple[int, bytes]]:
        data = path.read_bytes()
        seq_expected = first
        for item in frames(data):
            if isinstance(item, Damage):
                # Torn: the frame reaches the end, or only zeros follow (the file was extended
                # but the data never reached the disk).
                if newest and item.torn:
                    self._truncate(path, item.offset, len(data) - item.offset)
                    return
                raise WalCorrupt(
                    f"{path.name} at byte {item.offset}: {item.problem}, with "
                    f"{item.after} more bytes after it: the log is corrupt"
                )
            if item.seq != seq_expected:
                raise WalCorrupt(
                    f"{path.name} at byte {item.offset}: record {item.seq}, expected {seq_expected}"
                )
            yield item.seq, item.payload
            seq_expected = item.seq + 1

    def _truncate(self, path: Path, offset: int, length: int) -> None:
        cut(path, offset)
        self.truncated_bytes += length

    def _open_segment(self) -> None:
        segments = self.segments()
        if segments and segments[-1][1].stat().st_size < self.segment_bytes:
            path = segments[-1][1]
        else:
            path = self.directory / _segment_name(self.next_seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        fsync_dir(self.directory)

    def append(self, payloads: Sequence[Payload]) -> list[int]:
        """Write the records and fsync once for all of them (the group commit); returns seqs."""
        with self.lock:
            return self._append(payloads)

    def _append(self, payloads: Sequence[Payload]) -> list[int]:
        if self._fd is None:
            raise RuntimeError("WAL is not open")
        if self._size >= self.segment_bytes:
            self._rotate()
        seqs = list(range(self.next_seq, self.next_seq + len(payloads)))
        # Headers and payloads go out as they are (writev): a 6 MB body is not copied to be
        # framed, nor joined with its neighbours.
        pieces: list[memoryview] = []
        for seq, payload in zip(seqs, payloads, strict=True):
            pieces += [memoryview(header(seq, payload)), *(memoryview(p) for p in _pieces(payload))]
        size = sum(len(p) for p in pieces)
        began = time.perf_counter()
        _write_all(self._fd, pieces)
        faults.reached("after_write_before_fsync")
        os.fsync(self._fd)
        _drop_cached(self._fd, self._size, size)
        self.commit_seconds += time.perf_counter() - began
        self.commits += 1
        self.committed_bytes += size
        self._size += size
        self.next_seq += len(payloads)
        return seqs

    def rotate(self) -> None:
        """Start a new segment so that older ones can be trimmed once a snapshot covers them."""
        with self.lock:
            self._rotate()

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        path = self.directory / _segment_name(self.next_seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0
        fsync_dir(self.directory)

    def trim(self, covered: int, retain: Retain | None = None) -> int:
        """Delete segments whose every record is <= ``covered``, oldest first — under
        ``retain``, only those last written before its age or beyond its size; returns how many."""
        segments = self.segments()
        removable = [
            path
            for (_, path), (next_first, _) in itertools.pairwise(segments)
            if next_first - 1 <= covered
        ]
        if retain is not None:
            removable = retain.beyond(removable)
        for path in removable:
            path.unlink()
        if removable:
            fsync_dir(self.directory)
        return len(removable)

    def first(self) -> int:
        """The sequence number of the oldest record the log still holds (``next_seq`` if none)."""
        segments = self.segments()
        return segments[0][0] if segments else self.next_seq

    def size(self) -> int:
        total = 0
        for _, path in self.segments():
            with contextlib.suppress(FileNotFoundError):  # trimmed meanwhile, in a worker thread
                total += path.stat().st_size
        return total

    def close(self) -> None:
        # Under the lock: an append whose task was cancelled (a shutdown) goes on in its worker
        # thread, and must not have its file closed under its write or fsync.
        with self.lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@dataclass(frozen=True)
class Retain:
    """How long, and how much of, the log is kept after snapshots cover it (``retain_events``):
    the history that views added to a running server fill from."""

    ms: int
    max_bytes: int

    def beyond(self, removable: list[Path]) -> list[Path]:
        """Of the segments snapshots cover (oldest first: the retained history; what a restart
        needs is never among them), those past the age, then as many more as the cap needs."""
        now = time.time()
        stats = []
        for path in removable:
            with contextlib.suppress(FileNotFoundError):
                stats.append((path, path.stat()))
        total = sum(stat.st_size for _, stat in stats)
        out = []
        for path, stat in stats:
            if total <= self.max_bytes and (now - stat.st_mtime) * 1000 <= self.ms:
                break  # the rest are younger, and within the cap
            out.append(path)
            total -= stat.st_size
        return out


class Cursor:
    """Reads the records after a position in order, a bounded chunk at a time, while the log
    is appended to (a backfill's reader: ``ingest.http.HttpLog.backfill``). Blocking."""

    def __init__(self, wal: Wal, after: int) -> None:
        self.wal = wal
        self.after = after  # the last record read
        self.path: Path | None = None
        self.offset = 0

    def read(self, upto: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Records ``after + 1 .. upto`` (those the caller knows were written whole), at least
        one when there is one, and no more than ``max_bytes`` of payload beyond it."""
        out: list[tuple[int, bytes]] = []
        size = 0
        located = -1
        while self.after < upto and size < max_bytes:
            if self.path is None:
                if located == self.after:
                    break  # its segment was read to the end without it: not written yet
                located = self.after
                self._locate()
            assert self.path is not None
            with self.path.open("rb") as f:
                f.seek(self.offset)
                while self.after < upto and size < max_bytes:
                    head = f.read(_FRAME.size)
                    if len(head) < _FRAME.size:
                        self.path = None  # this segment is read: the next one has the rest
                        break
                    length, crc, seq = _FRAME.unpack(head)
                    payload = f.read(length)
                    if len(payload) < length or _crc(seq, payload) != crc:
                        raise WalCorrupt(f"{self.path.name} at byte {self.offset}: unreadable")
                    self.offset += _FRAME.size + length
                    if seq <= self.after:
                        continue  # before the position (a chunk that began mid-segment)
                    if seq != self.after + 1:
                        raise WalCorrupt(
                            f"{self.path.name} at byte {self.offset}: record {seq}, expected "
                            f"{self.after + 1}"
                        )
                    out.append((seq, payload))
                    size += length
                    self.after = seq
        return out

    def _locate(self) -> None:
        """Go to the start of the segment that holds record ``after + 1``."""
        holding = [(first, path) for first, path in self.wal.segments() if first <= self.after + 1]
        if not holding:
            first = self.wal.first()
            raise WalCorrupt(f"record {self.after + 1} is gone: the log begins at record {first}")
        self.path, self.offset = holding[-1][1], 0


def cut(path: Path, offset: int) -> None:
    """Truncate a segment at ``offset``, durably."""
    with path.open("r+b") as f:
        f.truncate(offset)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_cached(fd: int, offset: int, length: int) -> None:
    """Tell the kernel the records just fsynced will not be read soon: their pages leave the page
    cache now, and the next commit's write reuses them instead of taking fresh memory, which costs
    this VM more than the write itself (benchmarks/README.md: HTTP ingest 1.07-1.15M → 1.23-1.30M
    events/s, a commit 12-15 ms → 5-6 ms). Reads of the log (a restart's replay, a backfill) are
    rare and sequential. Advice only: the records are durable already, so a refusal is ignored."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _write_all(fd: int, pieces: list[memoryview]) -> None:
    """``os.writev`` until every byte is written: a short write is legal, and the next call says
    why one fell short (ENOSPC)."""
    while pieces:
        written = os.writev(fd, pieces[:1024])  # IOV_MAX is 1024 on Linux
        while pieces and written >= len(pieces[0]):
            written -= len(pieces[0])
            pieces = pieces[1:]
        if pieces and written:
            pieces[0] = pieces[0][written:]
