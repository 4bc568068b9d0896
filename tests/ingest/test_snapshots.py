"""Snapshot codec and files: versioned, checksummed, damage detected, older snapshot used."""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from pathlib import Path

import pytest

from ingest.snapshots import SnapshotStore, whole
from views.snapshot import SnapshotError, decode, encode

STATE = {"position": 7, "views": {"v": {"x": [1, 2.5, "a", None]}}}


def test_round_trip() -> None:
    assert decode(encode(STATE)) == STATE


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:10], "shorter than the"),
        (lambda b: b[:-3], "truncated"),
        (lambda b: b"", "shorter than the"),
        (lambda b: b"NOTASNAP" + b[8:], "bad magic"),
        (lambda b: b[:8] + struct.pack("<H", 99) + b[10:], "format version 99"),
        (lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:], "checksum mismatch"),
    ],
)
def test_damage_is_named(damage: object, message: str) -> None:
    data = encode(STATE)
    with pytest.raises(SnapshotError, match=message):
        decode(damage(data))  # type: ignore[operator]


def test_store_falls_back_to_the_older_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write(encode({"position": 1}), 1)
    store.write(encode({"position": 2}), 2)
    store.write(encode({"position": 3}), 3)
    assert [p for p, _ in store.files()] == [3, 2]  # only two are kept
    newest = store.files()[0][1]
    newest.write_bytes(newest.read_bytes()[:-1])
    loaded = store.load_newest()
    assert loaded.state == {"position": 2}
    assert len(loaded.problems) == 1
    assert "snapshot-00000000000000000003.tsnap" in loaded.problems[0]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.asyncio
async def test_a_write_cancelled_midway_is_awaited_to_its_end_and_its_failure_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``whole``: cancelled while the thread writes, it waits for the write (which then fails:
    a full disk), logs the failure, and goes on with the cancellation — no exception left
    unretrieved in a task nobody awaits."""
    entered, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def write() -> None:
        entered.set()
        if not release.wait(timeout=30):
            raise TimeoutError("the test never let the write go on")
        finished.append(True)
        raise OSError(28, "No space left on device")

    caplog.set_level(logging.WARNING, logger="tallyd.snapshots")
    writing = asyncio.create_task(whole(asyncio.to_thread(write)))
    assert await asyncio.to_thread(entered.wait, 30)
    writing.cancel()
    await asyncio.sleep(0)  # one turn of the loop: the cancellation reaches whole() first
    assert not writing.done()  # cancelled, and still waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert finished == [True]
    assert [r.getMessage() for r in caplog.records] == [
        "event=write_failed_while_stopping error='[Errno 28] No space left on device'"
    ]
