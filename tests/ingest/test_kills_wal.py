"""ingest/wal.py's documented format and recovery rules, to the byte and to the message.

The frame layout is checked against ``struct`` and ``zlib`` directly (it is an on-disk format:
a reader in another language relies on it), every refusal names its file, offset and what is
wrong, and the bookkeeping (next sequence number, segments, trim, size) against what the test
wrote itself.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from ingest.wal import Cursor, Damage, Frame, Retain, Wal, WalCorrupt, frame, frames


def crc(seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(seq.to_bytes(8, "little")))


def test_a_frame_is_length_crc_seq_then_the_payload_little_endian() -> None:
    payload = b"hello, log"
    data = frame(7, payload)
    length, checksum, seq = struct.unpack_from("<IIQ", data)
    assert (length, checksum, seq) == (len(payload), crc(7, payload), 7)
    assert data[16:] == payload
    assert len(data) == 16 + len(payload)


def test_frames_reads_each_intact_frame_with_its_offset() -> None:
    data = frame(1, b"a") + frame(2, b"") + frame(3, b"ccc")
    assert list(frames(data)) == [
        Frame(0, 1, b"a"),
        Frame(17, 2, b""),
        Frame(33, 3, b"ccc"),
    ]
    assert list(frames(b"")) == []


def test_damage_says_where_what_and_whether_the_tail_is_torn() -> None:
    good = frame(1, b"first") + frame(2, b"second")
    third = frame(3, b"third record")
    # A header cut short: torn, ends at the end of the file.
    (*_, short) = frames(good + third[:10])
    assert short == Damage(len(good), len(good) + 10, "incomplete frame header", 0, True)
    # A payload cut short: the frame would end past the file.
    (*_, long) = frames(good + third[:-3])
    assert long == Damage(
        len(good),
        len(good) + len(third),
        f"frame of {len(b'third record')} bytes runs past the end of the file",
        0,
        True,
    )
    # A bad checksum followed by another frame: corruption, with the bytes after it counted.
    bad = bytearray(third)
    bad[-1] ^= 1
    after = frame(4, b"four")
    (*_, flipped) = frames(good + bytes(bad) + after)
    assert flipped == Damage(
        len(good), len(good) + len(third), "checksum mismatch", len(after), False
    )
    # Followed by zeros only, there is data in the frame itself: still corruption.
    (*_, zeros) = frames(good + bytes(bad) + bytes(40))
    assert zeros == Damage(len(good), len(good) + len(third), "checksum mismatch", 40, False)
    # A header whose payload and everything after are zeros (the file grew, its data never
    # reached the disk): torn.
    blank = third[:16] + bytes(len(third) - 16 + 40)
    (*_, never) = frames(good + blank)
    assert never == Damage(len(good), len(good) + len(third), "checksum mismatch", 40, True)
    # The checksum covers the sequence number too.
    moved = bytearray(third)
    moved[8] = 9
    (damage,) = frames(bytes(moved))
    assert isinstance(damage, Damage)
    assert damage.problem == "checksum mismatch"


def opened(path: Path, after: int = 0, segment_bytes: int = 1 << 20) -> tuple[Wal, list[int]]:
    wal = Wal(path, segment_bytes)
    return wal, [seq for seq, _ in wal.open(after)]


def test_an_empty_log_continues_after_the_snapshot(tmp_path: Path) -> None:
    wal, replayed = opened(tmp_path / "wal", after=41)
    assert replayed == []
    assert wal.append([b"x"]) == [42]
    assert wal.commits == 1
    assert wal.append([b"y", b"z"]) == [43, 44]
    assert wal.commits == 2  # one fsync for the group
    wal.close()
    wal.close()  # closing twice is harmless
    assert [p.name for _, p in Wal(tmp_path / "wal").segments()] == [f"wal-{42:020d}.log"]
    with pytest.raises(RuntimeError, match="WAL is not open"):
        wal.append([b"late"])


def test_segments_are_numbered_by_their_first_record_and_strays_ignored(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    wal.append([b"1", b"2"])
    wal.rotate()
    wal.append([b"3"])
    (tmp_path / "wal-notanumber.log").write_bytes(b"")
    (tmp_path / "other-00000000000000000009.log").write_bytes(b"")
    assert [(first, p.name) for first, p in wal.segments()] == [
        (1, f"wal-{1:020d}.log"),
        (3, f"wal-{3:020d}.log"),
    ]
    assert wal.size() == sum(len(frame(s, p)) for s, p in ((1, b"1"), (2, b"2"), (3, b"3")))
    wal.close()


def test_reopening_appends_to_the_newest_segment_until_it_is_full(tmp_path: Path) -> None:
    one = len(frame(1, b"x" * 10))
    wal, _ = opened(tmp_path, segment_bytes=3 * one)
    wal.append([b"x" * 10])
    wal.close()
    wal, replayed = opened(tmp_path, segment_bytes=3 * one)
    assert replayed == [1]
    wal.append([b"x" * 10, b"x" * 10])  # fills the segment exactly
    wal.close()
    assert len(wal.segments()) == 1
    wal, _ = opened(tmp_path, segment_bytes=3 * one)  # full: not reopened, a new one started
    assert [first for first, _ in wal.segments()] == [1, 4]
    wal.append([b"x" * 10])
    wal.close()
    assert [first for first, _ in wal.segments()] == [1, 4]


def test_a_torn_tail_is_cut_and_counted(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    wal.append([b"one", b"two"])
    wal.close()
    ((_, segment),) = wal.segments()
    whole = segment.stat().st_size
    torn = frame(3, b"three")[:-2]
    with segment.open("ab") as f:
        f.write(torn)
    wal, replayed = opened(tmp_path)
    assert replayed == [1, 2]
    assert wal.truncated_bytes == len(torn)
    assert segment.stat().st_size == whole
    wal.close()


def test_damage_in_an_older_segment_is_corruption_even_at_its_end(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    wal.append([b"one"])
    wal.rotate()
    wal.append([b"two"])
    wal.close()
    (_, older), _ = wal.segments()
    with older.open("ab") as f:
        f.write(frame(2, b"half")[:-1])
    with pytest.raises(WalCorrupt) as caught:
        opened(tmp_path)
    size = len(frame(1, b"one"))
    assert str(caught.value) == (
        f"{older.name} at byte {size}: frame of 4 bytes runs past the end of the file, with 0 "
        "more bytes after it: the log is corrupt"
    )


def test_a_gap_or_a_repeat_in_the_sequence_is_refused(tmp_path: Path) -> None:
    (tmp_path / f"wal-{1:020d}.log").write_bytes(frame(1, b"a") + frame(3, b"c"))
    with pytest.raises(WalCorrupt) as caught:
        opened(tmp_path)
    assert str(caught.value) == (
        f"wal-{1:020d}.log at byte {len(frame(1, b'a'))}: record 3, expected 2"
    )
    (tmp_path / f"wal-{1:020d}.log").write_bytes(frame(1, b"a") + frame(2, b"b"))
    (tmp_path / f"wal-{4:020d}.log").write_bytes(frame(4, b"d"))
    with pytest.raises(WalCorrupt) as caught:
        opened(tmp_path)
    assert str(caught.value) == f"wal-{4:020d}.log: starts at record 4, expected 3"


def test_a_log_that_starts_after_the_snapshot_is_refused(tmp_path: Path) -> None:
    (tmp_path / f"wal-{5:020d}.log").write_bytes(frame(5, b"e"))
    assert opened(tmp_path, after=4)[1] == [5]
    with pytest.raises(WalCorrupt) as caught:
        opened(tmp_path, after=2)
    assert str(caught.value) == (
        f"wal-{5:020d}.log: the log starts at record 5, but the snapshot covers only up to 2: "
        "records 3..4 are missing"
    )
    with pytest.raises(WalCorrupt, match=r"records 4\.\.4 are missing$"):  # one is one too many
        opened(tmp_path, after=3)


def test_a_snapshot_ahead_of_the_log_continues_after_the_snapshot(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    wal.append([b"1", b"2"])
    wal.close()
    wal, replayed = opened(tmp_path, after=9)  # the log's records are all covered
    assert replayed == []
    assert wal.append([b"next"]) == [10]
    wal.close()


def test_trim_deletes_exactly_the_segments_a_snapshot_covers(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    for records in ([b"1", b"2"], [b"3"], [b"4", b"5"]):
        wal.append(records)
        wal.rotate()
    assert [first for first, _ in wal.segments()] == [1, 3, 4, 6]
    assert wal.trim(covered=1) == 0
    assert wal.trim(covered=2) == 1
    assert [first for first, _ in wal.segments()] == [3, 4, 6]
    assert wal.trim(covered=100) == 2  # never the newest, which is being written
    assert [first for first, _ in wal.segments()] == [6]
    assert wal.trim(covered=100) == 0
    wal.close()


def test_the_edges_of_a_segment_a_reader_meets() -> None:
    """A last record with an empty payload is a whole frame (exactly a header); a damaged last
    frame that ends exactly at the end of the file is a torn tail."""
    data = frame(1, b"a") + frame(2, b"")
    assert list(frames(data)) == [Frame(0, 1, b"a"), Frame(17, 2, b"")]
    last = bytearray(frame(3, b"xyz"))
    last[-1] ^= 1
    (*_, damage) = frames(data + bytes(last))
    assert damage == Damage(len(data), len(data) + len(last), "checksum mismatch", 0, True)


def test_a_full_segment_is_rotated_before_the_next_append(tmp_path: Path) -> None:
    one = len(frame(1, b"x" * 10))
    wal, _ = opened(tmp_path, segment_bytes=2 * one)
    wal.append([b"x" * 10, b"x" * 10])  # exactly full
    wal.append([b"x" * 10])
    assert [first for first, _ in wal.segments()] == [1, 3]
    wal.close()


def test_short_writes_are_continued_not_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OS may write less than asked (a full pipe, a signal, a nearly full disk): ``writev``
    then says how much it wrote, and the rest — from inside a piece, or from a piece boundary —
    is written by the next call."""
    calls: list[int] = []

    def short(fd: int, pieces: Any) -> int:
        data = b"".join(bytes(p) for p in pieces)
        calls.append(len(pieces))
        return os.write(fd, data[: 7 if len(calls) % 2 else 16])  # 16: a header, to the byte

    wal, _ = opened(tmp_path)
    monkeypatch.setattr("ingest.wal.os.writev", short)
    payloads = [b"first record", b"", b"third, a little longer", b"x" * 40]
    assert wal.append(payloads) == [1, 2, 3, 4]
    wal.close()
    monkeypatch.undo()
    total = sum(16 + len(p) for p in payloads)
    assert len(calls) == len(_starts(total))  # each call wrote what it said, no more, no less
    assert [p for _, p in Wal(tmp_path).open(after=0)] == payloads


def _starts(total: int) -> set[int]:
    """Where each call of the 7-then-16-byte writer above begins, up to ``total`` bytes."""
    at, starts, odd = 0, set(), True
    while at < total:
        starts.add(at)
        at += 7 if odd else 16
        odd = not odd
    return starts


def test_appending_to_a_closed_log_is_refused_by_name(tmp_path: Path) -> None:
    wal = Wal(tmp_path)
    with pytest.raises(RuntimeError, match=r"^WAL is not open$"):
        wal.append([b"x"])


# -- retained history (retain_events) and the backfill's reader ----------------------------------


def test_retain_keeps_covered_segments_by_age_then_by_size(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    for n in range(5):  # segments 1, 3, 5, 7, 9 (two 100-byte records each), then 11 (empty)
        wal.append([bytes([n]) * 100, bytes([n]) * 100])
        wal.rotate()
    old = time.time() - 7200
    for _, path in wal.segments()[:2]:  # the two oldest were last written two hours ago
        os.utime(path, (old, old))
    per = wal.segments()[0][1].stat().st_size
    roomy = Retain(ms=3_600_000, max_bytes=100 * per)
    assert wal.trim(covered=3, retain=roomy) == 1  # past the hour and covered: 1 (3, 4: not)
    assert wal.trim(covered=100, retain=roomy) == 1  # 3 is past the hour too; 5.. are younger
    assert [first for first, _ in wal.segments()] == [5, 7, 9, 11]
    tight = Retain(ms=3_600_000, max_bytes=2 * per)  # younger, but the log is over its size
    assert wal.trim(covered=100, retain=tight) == 1
    assert [first for first, _ in wal.segments()] == [7, 9, 11]
    assert sum(path.stat().st_size for _, path in wal.segments()[:-1]) <= 2 * per
    assert wal.trim(covered=8, retain=Retain(ms=1, max_bytes=1)) == 1  # never past ``covered``
    assert [first for first, _ in wal.segments()] == [9, 11]
    wal.close()


def test_a_cursor_reads_across_segments_in_chunks_while_the_log_grows(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path, segment_bytes=100)
    wal.append([b"a" * 30 for _ in range(7)])  # 1..7: one segment, rotated after
    cursor = Cursor(wal, after=2)
    assert cursor.read(upto=7, max_bytes=50) == [(3, b"a" * 30), (4, b"a" * 30)]
    wal.append([b"b" * 30, b"c" * 30])  # 8, 9: a new segment
    got = cursor.read(upto=8, max_bytes=1 << 20)  # never past ``upto``, though 9 is written
    assert [seq for seq, _ in got] == [5, 6, 7, 8]
    assert got[-1][1] == b"b" * 30
    assert cursor.read(upto=8, max_bytes=1 << 20) == []
    assert cursor.read(upto=9, max_bytes=1) == [(9, b"c" * 30)]  # one, however small the chunk
    assert cursor.read(upto=12, max_bytes=1 << 20) == []  # 10.. not written: nothing, no wait
    wal.append([b"d"])
    assert cursor.read(upto=10, max_bytes=1 << 20) == [(10, b"d")]
    wal.close()


def test_a_cursor_whose_records_were_trimmed_says_so(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    wal.append([b"1", b"2"])
    wal.rotate()
    wal.append([b"3"])
    wal.rotate()
    wal.trim(covered=2)
    with pytest.raises(WalCorrupt, match="record 2 is gone: the log begins at record 3"):
        Cursor(wal, after=1).read(upto=3, max_bytes=100)
    assert Cursor(wal, after=2).read(upto=3, max_bytes=100) == [(3, b"3")]
    wal.close()


def test_a_group_commit_of_more_pieces_than_one_writev_takes(tmp_path: Path) -> None:
    """Linux takes at most 1,024 pieces a ``writev`` (IOV_MAX): 700 records are 1,400 pieces
    (a header and a payload each), written in two calls and read back whole."""
    wal, _ = opened(tmp_path)
    payloads = [b"record %d" % n for n in range(700)]
    assert wal.append(payloads) == list(range(1, 701))
    wal.close()
    assert [p for _, p in Wal(tmp_path).open(after=0)] == payloads


def test_the_oldest_record_of_a_log_with_no_segment_is_the_next_one(tmp_path: Path) -> None:
    assert Wal(tmp_path / "never-opened").first() == 1


def test_a_cursor_chunk_ends_as_soon_as_it_holds_max_bytes(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    wal.append([bytes([n]) * 30 for n in range(6)])
    cursor = Cursor(wal, after=0)
    assert cursor.read(upto=6, max_bytes=60) == [(1, bytes([0]) * 30), (2, bytes([1]) * 30)]
    assert [seq for seq, _ in cursor.read(upto=6, max_bytes=61)] == [3, 4, 5]
    wal.close()


def test_a_cursor_refuses_a_damaged_record_by_segment_and_byte(tmp_path: Path) -> None:
    wal, _ = opened(tmp_path)
    wal.append([b"first", b"second", b"third"])
    wal.close()
    ((_, path),) = wal.segments()
    data = bytearray(path.read_bytes())
    at = 16 + len(b"first")  # record 2's frame
    data[at + 16] ^= 1  # one bit of its payload: the length is whole, the checksum is not
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorrupt) as refused:
        Cursor(Wal(tmp_path), after=0).read(upto=3, max_bytes=1 << 20)
    assert str(refused.value) == f"{path.name} at byte {at}: unreadable"


def test_a_cursor_refuses_a_gap_in_the_sequence_by_segment_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "wal-00000000000000000001.log"
    path.write_bytes(frame(1, b"a") + frame(2, b"b") + frame(4, b"d"))
    cursor = Cursor(Wal(tmp_path), after=0)
    with pytest.raises(WalCorrupt) as refused:
        cursor.read(upto=4, max_bytes=1 << 20)
    # The byte after the record that does not follow (where the reader stands).
    assert str(refused.value) == f"{path.name} at byte {3 * 17}: record 4, expected 3"


def test_retain_keeps_a_segment_exactly_as_old_as_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = 1_790_000_000
    monkeypatch.setattr("ingest.wal.time.time", lambda: float(now))
    older, exact, gone = (tmp_path / name for name in ("older", "exact", "gone"))
    for path, age_ns in ((older, 5_500_000_000), (exact, 5_000_000_000)):
        path.write_bytes(b"x" * 10)
        stamp = now * 1_000_000_000 - age_ns
        os.utime(path, ns=(stamp, stamp))
    keep_5s = Retain(ms=5000, max_bytes=1 << 20)
    assert keep_5s.beyond([older, exact]) == [older]  # 5.5 s: past; 5 s to the nanosecond: kept
    # A segment trimmed meanwhile (another thread) is passed over, not an error.
    assert keep_5s.beyond([gone, exact]) == []


def test_rotating_closes_the_segment_it_leaves(tmp_path: Path) -> None:
    """A server rotates at every snapshot for as long as it runs: no descriptor may pile up."""

    def open_here() -> list[str]:  # this process's descriptors on the log's files
        out = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile (another thread's)
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith(str(tmp_path)):
                    out.append(target)
        return out

    wal, _ = opened(tmp_path)
    for n in range(50):
        wal.append([b"%d" % n])
        wal.rotate()
    assert open_here() == [str(wal.segments()[-1][1])]  # the newest, and only it
    wal.close()
    assert open_here() == []


def test_segments_are_created_readable_by_all_writable_by_the_owner(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        wal, _ = opened(tmp_path)
        wal.append([b"x"])
        wal.rotate()
        wal.close()
    finally:
        os.umask(old)
    modes = {path.stat().st_mode & 0o777 for _, path in wal.segments()}
    assert len(wal.segments()) == 2
    assert modes == {0o644}


def test_a_rotation_that_fails_leaves_the_log_closed_not_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal, _ = opened(tmp_path)
    wal.append([b"x"])

    def full(*args: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ingest.wal.os.open", full)
    with pytest.raises(OSError, match="No space left"):
        wal.rotate()
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match=r"^WAL is not open$"):  # refused, not a TypeError
        wal.append([b"y"])


def test_a_log_whose_newest_segment_is_empty_continues_after_its_first(tmp_path: Path) -> None:
    """A rotation (at a snapshot) and then a restart before the next append: the new, empty
    segment is named by the next record, and the log goes on from it — also when no snapshot
    says where (``after=0``)."""
    wal, _ = opened(tmp_path)
    wal.append([b"1", b"2", b"3"])
    wal.rotate()
    wal.close()
    wal, replayed = opened(tmp_path, after=0)
    assert replayed == [1, 2, 3]
    assert wal.append([b"4"]) == [4]
    wal.close()


def test_a_segment_started_by_a_rotation_fills_to_its_size_like_any_other(
    tmp_path: Path,
) -> None:
    one = len(frame(1, b"x" * 10))
    wal, _ = opened(tmp_path, segment_bytes=2 * one + 1)  # room for three records, not two
    wal.append([b"x" * 10])
    wal.rotate()  # segment 2, started empty
    for _ in range(3):
        wal.append([b"x" * 10])
    wal.close()
    assert [first for first, _ in wal.segments()] == [1, 2]


def test_the_commit_figures_add_up_over_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/v1/status`` and ``/metrics`` show the group commits: their count, the bytes they wrote
    (frame headers included) and the time spent writing and fsyncing, summed over commits — here
    against a clock that advances a second per reading."""
    wal, _ = opened(tmp_path)
    ticks = iter(range(100))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(ticks)))
    wal.append([b"abc", b"de"])
    wal.append([b"f"])
    assert (wal.commits, wal.committed_bytes, wal.commit_seconds) == (2, 3 * 16 + 6, 2.0)
    wal.close()


def test_the_size_skips_a_segment_trimmed_while_it_is_summed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal, _ = opened(tmp_path)
    wal.append([b"abc"])
    listed = wal.segments()
    size = wal.size()
    gone = (99, tmp_path / f"wal-{99:020d}.log")  # listed, then trimmed by a snapshot's thread
    monkeypatch.setattr(wal, "segments", lambda: [*listed, gone])
    assert wal.size() == size == 16 + 3
    wal.close()
