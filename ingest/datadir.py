"""One process per data directory: an exclusive ``flock`` on ``<data_dir>/tallyd.lock``, taken
before anything in the directory is read or written, and held for as long as the process uses it.

Two servers on one directory both replay the same log, both append the next record with the same
number and both acknowledge it; the log then holds that record twice and neither can restart.
The kernel releases a ``flock`` when its holder's descriptor closes, which a dying process
(SIGKILL included) always does: a lock file left behind never blocks a start, and is never
deleted (unlinking it would let a third process lock a fresh file while the second still holds
the old one). The pid written into it is only for the refusal's message.

A Kafka source's configured ``state_dir`` is not locked: the members of a consumer group share
it on purpose, each writing only the part files of the partitions it owns, atomically.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_FILE = "tallyd.lock"


class DataDirBusy(RuntimeError):
    """Another process holds the data directory's lock."""


class DataDirLock:
    """Held from ``acquire`` until ``release`` (or the process's end)."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, data_dir: Path, doing: str = "serve") -> DataDirLock:
        """Lock ``data_dir`` (created if missing) or raise ``DataDirBusy`` naming the holder's pid;
        ``doing`` says what this process wanted to do there, for that message."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise DataDirBusy(
                f"cannot {doing}: {data_dir} is in use by another tallyd "
                f"(pid {holder or 'unknown'}, holding {path}). One process at a time: two "
                "servers on one data directory would both write the same log positions and "
                "corrupt it. Stop that one first, or use another data directory (--data-dir)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()
