"""Named crash points in the write path, for the crash suite (tests/e2e/test_crash_points.py).

Inert in production: ``tallyd serve`` never arms one. Only ``arm``, called by the test-only
launcher ``tests/e2e/crashpoint.py`` before it starts the server, makes a point fire: on its
``after``-th pass the process SIGKILLs itself, exactly there. The check on every pass is one
comparison with ``None``.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "before_wal_append",  # a batch is decoded and queued; nothing on disk yet
    "after_write_before_fsync",  # the WAL bytes are written, not yet fsynced
    "after_fsync_before_apply",  # on disk, not yet applied to the views
    "before_response",  # applied, the 200 not yet sent
    "mid_snapshot",  # the snapshot's temp file is written, not yet renamed
    "after_rename_before_dir_fsync",  # renamed, the directory entry not yet fsynced
    "mid_backfill",  # a view filling from the retained log has applied a chunk of it
)

_armed: str | None = None
_after = 0
_passes = 0


def arm(point: str, after: int = 1) -> None:
    global _armed, _after, _passes
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}; known: {', '.join(POINTS)}")
    _armed, _after, _passes = point, after, 0


def reached(point: str) -> None:
    global _passes
    if _armed is None or point != _armed:
        return
    _passes += 1
    if _passes >= _after:
        os.kill(os.getpid(), signal.SIGKILL)
