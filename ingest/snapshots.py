"""Snapshot files: the atomic write (temp → fsync → rename → fsync dir, as Redis' rdbSave does)
and loading the newest valid one, falling back to older ones with the reason recorded.
Blocking I/O: called from a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ingest import faults
from views import snapshot

T = TypeVar("T")
log = logging.getLogger("tallyd.snapshots")

KEEP = 2  # the newest two: if the newest is damaged, the older one + the WAL still recover


def atomic_write(final: Path, data: bytes | Sequence[bytes | memoryview]) -> None:
    """Readers see the old file or the new one, never a mix, even across a crash. ``data`` may
    be a list of pieces, written one after the other (a large snapshot is never joined)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # a name of this process's own: two processes sharing a directory never write one temp file
    temp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    with temp.open("wb") as f:
        if isinstance(data, bytes):
            f.write(data)
        else:
            f.writelines(data)
        f.flush()
        os.fsync(f.fileno())
    faults.reached("mid_snapshot")
    os.replace(temp, final)
    faults.reached("after_rename_before_dir_fsync")
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def whole(write: Coroutine[Any, Any, T]) -> T:
    """Await a worker thread's file write to its end, even when cancelled meanwhile (then the
    cancellation goes on): a thread cannot be stopped, and a caller cancelled while it writes
    would otherwise let go of its lock (a Kafka part's, the committer's step) with the write
    still under way — the next write of that file then writes beside it (the same temporary
    file: ``atomic_write``'s name is per process), or lands first and is overwritten by the
    older one."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.warning("event=write_failed_while_stopping error=%r", str(task.exception()))
        raise


@dataclass
class Loaded:
    state: dict[str, Any] | None
    path: Path | None
    skipped: list[tuple[Path, str]]  # newer snapshots that did not read back, and why

    @property
    def problems(self) -> list[str]:
        return [f"{path.name}: {why}" for path, why in self.skipped]


class SnapshotStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def files(self) -> list[tuple[int, Path]]:
        """(position, path), newest first."""
        found = []
        for path in self.directory.glob("snapshot-*.tsnap"):
            try:
                found.append((int(path.stem.split("-")[1]), path))
            except (IndexError, ValueError):
                continue
        return sorted(found, reverse=True)

    def write(self, data: bytes | Sequence[bytes | memoryview], position: int) -> Path:
        final = self.directory / f"snapshot-{position:020d}.tsnap"
        atomic_write(final, data)
        for _, old in self.files()[KEEP:]:
            old.unlink()
        return final

    def oldest_kept_position(self) -> int:
        files = self.files()
        return files[-1][0] if files else 0

    def load_newest(self) -> Loaded:
        skipped: list[tuple[Path, str]] = []
        for _, path in self.files():
            try:
                return Loaded(snapshot.decode(path.read_bytes()), path, skipped)
            except (snapshot.SnapshotError, ValueError) as err:
                skipped.append((path, str(err)))
        return Loaded(None, None, skipped)
