"""Structured logs: one line per event, ``key=value`` pairs after the time, level and logger.

Routine work (each snapshot, each part-file save) logs at debug; at info a server says what it
restored, what went wrong, and once every ``summary_every`` what it did meanwhile (``summary``),
so a terminal running ``tallyd demo`` keeps its printed queries in view."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

LEVELS = ("debug", "info", "warning", "error")


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = record.levelname.lower()
        line = f"ts={stamp}Z level={level} logger={record.name} {record.getMessage()}"
        if record.exc_info:
            line += " traceback=" + repr(self.formatException(record.exc_info))
        return line


def configure(level: int | str = logging.INFO) -> None:
    """Log to stderr from ``level`` up (a number, or one of ``LEVELS``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Totals:
    """The server's running counters read at one moment, and two gauges, for the summary."""

    accepted: int = 0
    rejected: int = 0
    late: int = 0
    snapshots: int = 0
    last_snapshot_s: float | None = None
    wal_bytes: int = 0


def summary(before: Totals, now: Totals, seconds: float) -> str | None:
    """The summary line of what happened between two readings ``seconds`` apart; None when
    nothing did (an idle server stays quiet)."""
    # Late counts live with partitions: one that moved to another process takes its count
    # along, so a difference can be negative; it is not an event of this interval.
    late = max(now.late - before.late, 0)
    accepted = now.accepted - before.accepted
    rejected = now.rejected - before.rejected
    snapshots = now.snapshots - before.snapshots
    if not (accepted or rejected or late or snapshots):
        return None
    last = "none" if now.last_snapshot_s is None else f"{now.last_snapshot_s:g}"
    return (
        f"event=summary seconds={seconds:.1f} accepted={accepted} "
        f"per_s={accepted / max(seconds, 1e-9):.1f} rejected={rejected} late={late} "
        f"snapshots={snapshots} last_snapshot_s={last} wal_bytes={now.wal_bytes}"
    )
