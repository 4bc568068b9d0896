"""WAL framing and recovery: torn tails are cut, everything else that is wrong is refused."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ingest.wal import Wal, WalCorrupt, frame


def _wal(path: Path, segment_bytes: int = 1 << 20) -> Wal:
    return Wal(path, segment_bytes)


def _fill(path: Path, n: int, segment_bytes: int = 1 << 20) -> Wal:
    wal = _wal(path, segment_bytes)
    assert list(wal.open(after=0)) == []
    for i in range(n):
        wal.append([f"record {i + 1}".encode()])
    return wal


def test_records_come_back_in_order_after_a_position(tmp_path: Path) -> None:
    wal = _fill(tmp_path, 10)
    assert wal.append([b"a", b"b"]) == [11, 12]  # one group commit, consecutive numbers
    wal.close()
    again = _wal(tmp_path)
    replayed = list(again.open(after=7))
    assert [seq for seq, _ in replayed] == [8, 9, 10, 11, 12]
    assert replayed[0][1] == b"record 8"
    assert again.append([b"next"]) == [13]


@pytest.mark.parametrize("cut", [1, 5, 16, 20])
def test_torn_tail_is_truncated(tmp_path: Path, cut: int) -> None:
    _fill(tmp_path, 5).close()
    (segment,) = tmp_path.glob("wal-*.log")
    data = segment.read_bytes()
    segment.write_bytes(data[:-cut])  # a crash in the middle of appending record 5
    wal = _wal(tmp_path)
    assert [seq for seq, _ in wal.open(after=0)] == [1, 2, 3, 4]
    assert wal.truncated_bytes > 0
    assert wal.append([b"new 5"]) == [5]
    wal.close()
    assert [p for _, p in _wal(tmp_path).open(after=4)] == [b"new 5"]


def test_garbage_frame_at_the_end_is_a_torn_tail(tmp_path: Path) -> None:
    _fill(tmp_path, 3).close()
    (segment,) = tmp_path.glob("wal-*.log")
    with segment.open("ab") as f:
        f.write(b"\x00" * 40)  # file size extended, data never written
    assert [seq for seq, _ in _wal(tmp_path).open(after=0)] == [1, 2, 3]


def test_corruption_in_the_middle_is_refused(tmp_path: Path) -> None:
    _fill(tmp_path, 5).close()
    (segment,) = tmp_path.glob("wal-*.log")
    data = bytearray(segment.read_bytes())
    data[30] ^= 0xFF  # inside record 2, with records 3..5 after it
    segment.write_bytes(bytes(data))
    with pytest.raises(
        WalCorrupt,
        match=r"wal-0+1\.log at byte \d+: checksum mismatch, with \d+ "
        r"more bytes after it",
    ):
        list(_wal(tmp_path).open(after=0))


def test_trim_and_missing_records(tmp_path: Path) -> None:
    wal = _fill(tmp_path, 3)
    wal.rotate()
    wal.append([b"4"])
    wal.rotate()
    wal.append([b"5"])
    assert len(wal.segments()) == 3
    assert wal.trim(covered=3) == 1  # only the first segment is wholly covered
    assert wal.trim(covered=4) == 1
    wal.close()
    assert [seq for seq, _ in _wal(tmp_path).open(after=4)] == [5]
    # a snapshot older than the log's start means acknowledged records are gone: refuse
    with pytest.raises(WalCorrupt, match=r"records 3\.\.4 are missing"):
        list(_wal(tmp_path).open(after=2))


def test_rotation_by_size(tmp_path: Path) -> None:
    wal = _fill(tmp_path, 50, segment_bytes=200)
    wal.close()
    assert len(wal.segments()) > 3
    assert [seq for seq, _ in _wal(tmp_path, 200).open(after=0)] == list(range(1, 51))


def test_a_record_written_in_pieces_reads_back_as_one(tmp_path: Path) -> None:
    wal = Wal(tmp_path)
    list(wal.open(after=0))
    assert wal.append([(b"header\n", b"body 1"), b"whole", (b"", b"a", b"bc")]) == [1, 2, 3]
    wal.close()
    again = Wal(tmp_path)
    assert list(again.open(after=0)) == [(1, b"header\nbody 1"), (2, b"whole"), (3, b"abc")]
    # the frame is the one a single piece would have had: same length and checksum
    segment = again.segments()[0][1].read_bytes()
    assert segment == frame(1, b"header\nbody 1") + frame(2, b"whole") + frame(3, b"abc")
    again.close()


def test_committed_pages_are_dropped_from_the_cache_and_a_refusal_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After each group commit's fsync the log advises the kernel to drop exactly the bytes it
    wrote (the next write reuses those pages); advice the kernel refuses is ignored: the records
    are durable by then, and the commit succeeds."""
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise on this platform")
    advised: list[tuple[int, int, int]] = []

    def refuse(fd: int, offset: int, length: int, advice: int) -> None:
        advised.append((offset, length, advice))
        raise OSError(errno.EINVAL, "refused")

    wal = Wal(tmp_path)
    list(wal.open(after=0))
    assert wal.append([b"first"]) == [1]
    monkeypatch.setattr(os, "posix_fadvise", refuse)
    assert wal.append([b"second", (b"thi", b"rd")]) == [2, 3]
    assert wal.append([b"fourth"]) == [4]
    wal.close()
    first, group = len(frame(1, b"first")), len(frame(2, b"second") + frame(3, b"third"))
    assert advised == [
        (first, group, os.POSIX_FADV_DONTNEED),
        (first + group, len(frame(4, b"fourth")), os.POSIX_FADV_DONTNEED),
    ]
    again = Wal(tmp_path)
    assert [p for _, p in again.open(after=0)] == [b"first", b"second", b"third", b"fourth"]
    again.close()
