"""Snapshot files: the atomic write (temp → fsync → rename → fsync dir, as Redis' rdbSave does)
and loading the newest valid one, falling back to older ones with the reason recorded.
Blocking I/O: called from a worker thread."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from views import snapshot

KEEP = 2  # the newest two: if the newest is damaged, the older one + the WAL still recover


@dataclass
class Loaded:
    state: dict[str, Any] | None
    path: Path | None
    problems: list[str]


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

    def write(self, data: bytes, position: int) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"snapshot-{position:020d}.tsnap"
        temp = final.with_suffix(".tmp")
        with temp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for _, old in self.files()[KEEP:]:
            old.unlink()
        return final

    def oldest_kept_position(self) -> int:
        files = self.files()
        return files[-1][0] if files else 0

    def load_newest(self) -> Loaded:
        problems: list[str] = []
        for _, path in self.files():
            try:
                return Loaded(snapshot.decode(path.read_bytes()), path, problems)
            except (snapshot.SnapshotError, ValueError) as err:
                problems.append(f"{path.name}: {err}")
        return Loaded(None, None, problems)
