"""What every source is: HTTP (``ingest.http``), Kafka (``ingest.kafka``), files (``ingest.files``).

A source turns its input into ``Batch``es of one partition each, with the position they end at,
and hands them to the committer (``ingest.commit``), the only code that changes view state. The
server treats all sources alike through this protocol: it starts and stops them in one place,
asks each for its status, watermark and position, and has each save what it keeps apart from
the main snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

from views.spec import SourceSpec


class Source(Protocol):
    spec: SourceSpec
    name: str
    kind: str  # "http" | "kafka" | "file"
    # True when the source saves its partitions apart (state and position together, one file
    # per partition: Kafka), so the main snapshot leaves them out.
    detached: bool

    async def start(self) -> None:
        """Begin delivering batches (background work is created here and only here)."""

    async def stop(self) -> None:
        """Stop delivering: cancel *and await* what ``start`` created; save what must be."""

    async def save(self) -> int | None:
        """Persist what the source keeps apart from the main snapshot (Kafka's part files);
        how many files it wrote, if it writes any."""

    def status(self) -> dict[str, Any]:
        """``{"kind", "state", "healthy", ...}`` for ``/v1/sources``, ``/readyz``, metrics."""

    def watermark(self, now: float) -> int | None:
        """The event time (epoch ms) every answer of this source's views has reached."""

    def position(self) -> str:
        """Where the source's state ends, opaque to clients (``wal:12``, ``t:0@41,t:1@7``)."""

    async def backfill(self, name: str, chunk_bytes: int) -> None:
        """Feed the backfilling view ``name`` this source's history up to the live views'
        position, then join it to them (``views.registry.Backfill``)."""

    async def history_size(self) -> str:
        """How much history a view added now would fill from (``tallyd plan --url``)."""


def oldest(watermarks: dict[str, int], parts: Iterable[str] | None = None) -> int | None:
    """The oldest partition watermark (the one every partition has passed), over ``parts``
    (default: all)."""
    marks = list(watermarks.values()) if parts is None else [watermarks[p] for p in parts]
    return min(marks) if marks else None


def partition_positions(positions: dict[str, int]) -> str:
    """``part@position`` for each partition, in order: the position of a partitioned source."""
    return ",".join(f"{part}@{pos}" for part, pos in sorted(positions.items()))


class Background:
    """A source whose work is one background task, ``run``: ``start`` creates it, ``stop``
    cancels *and awaits* it (whatever ``run`` does as it ends, such as writing files, is done
    when ``stop`` returns)."""

    name: str
    kind: str
    _task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"tallyd-{self.kind}-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
