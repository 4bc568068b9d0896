"""The committer: the one owner of the lock around view state, and the only caller of
``Registry.apply``, ``load_part`` and ``drop_part``.

Every source hands it batches (``commit``) or takes a *step* — a turn holding the lock, in which
it may apply batches, install or drop partitions and read state, with no other writer between.
Views never ``await``, so queries (which only read) run between steps without any lock.

It also writes and loads the main snapshot: the registry's state, the parts of every source that
keeps them in it (HTTP, files; not Kafka, whose partitions are saved apart with their offsets),
and what the log adds (the HTTP source's WAL position and idempotency receipts), in one atomic
file. Snapshots take a step too, so a snapshot's position is exactly the last batch it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ingest.snapshots import SnapshotStore, whole
from views import snapshot
from views.registry import Applied, Batch, BuiltPart, Registry
from views.spec import SourceSpec, ViewSpec

log = logging.getLogger("tallyd.commit")

T = TypeVar("T")


def settle_heap() -> None:
    """Move every live object out of the cyclic GC's sight (``gc.freeze``).

    View state is millions of small, long-lived, acyclic objects (aggregates, lists, tuples).
    CPython's full collection walks all of them: 0.7 s with the event loop stopped at a million
    (group, bucket) pairs, measured. Frozen after a restore and after each snapshot, a full
    collection only walks what was created since. The young generations are collected first
    (cheap: requests' short-lived cycles die there); a cycle that had already reached the old
    generation when it is frozen is never collected — acyclic garbage is still freed as usual,
    by reference counting.
    """
    gc.collect(1)
    gc.freeze()


class Log(Protocol):
    """What the main snapshot records of a log besides view state (``ingest.http.HttpLog``)."""

    def restore(self, state: dict[str, Any] | None, step: Step) -> tuple[int, int]:
        """Take the loaded snapshot's fields, replay what followed it; (batches replayed, torn
        bytes cut off the log's tail). Blocking."""

    def snapshot_extra(self, now_ms: int) -> tuple[int, dict[str, Any]]:
        """(the position the snapshot covers, the top-level fields it adds). In a step."""

    def snapshot_written(self) -> None:
        """The snapshot is on disk: what follows goes to a new piece of the log (blocking: runs
        in a worker thread)."""

    def trim(self, oldest_kept: int) -> int:
        """Drop what the oldest kept snapshot covers; how many pieces (blocking)."""


class Step:
    """A turn holding the committer's lock: the only way to change view state."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def apply(self, batch: Batch) -> Applied:
        return self.registry.apply(batch)

    def apply_group(self, batches: list[Batch]) -> list[Applied]:
        return self.registry.apply_group(batches)

    async def apply_yielding(self, batch: Batch, then: Callable[[Applied], None]) -> None:
        """``apply``, letting the event loop answer queries between views (a big batch would
        otherwise hold it for its whole apply), then ``then(applied)``. Never half a batch:
        cancelled meanwhile (a shutdown), it applies the rest at once and calls ``then`` before
        the cancellation goes on, so state and the positions it reflects stay together."""
        await _drive(self.registry.applying(batch), then)

    async def apply_group_yielding(
        self, batches: list[Batch], then: Callable[[list[Applied]], None]
    ) -> None:
        """``apply_yielding`` for batches in turn, small ones folded at once where that gives
        the same (``Registry.applying_group``); ``then`` gets what each did."""
        await _drive(self.registry.applying_group(batches), then)

    def build_part(self, source: str, part: str, state: dict[str, Any]) -> BuiltPart:
        """May run in a worker thread while this step is held (``Registry.build_part``)."""
        return self.registry.build_part(source, part, state)

    def install_part(self, built: BuiltPart) -> list[str]:
        return self.registry.install_part(built)

    def drop_part(self, source: str, part: str) -> None:
        self.registry.drop_part(source, part)

    def reconfigure(
        self, views: dict[str, ViewSpec], sources: dict[str, SourceSpec] | None = None
    ) -> None:
        self.registry.reconfigure(views, sources)

    def part_state(self, source: str, part: str) -> dict[str, Any]:
        return self.registry.part_state(source, part)

    def compact_part(self, source: str, part: str) -> None:
        self.registry.compact_part(source, part)


async def _drive(steps: Generator[None, None, T], then: Callable[[T], None]) -> None:
    """Run an apply's steps, yielding to the event loop between them (see ``apply_yielding``)."""
    cancelled = False
    while True:
        try:
            next(steps)
        except StopIteration as done:
            then(done.value)
            break
        if not cancelled:
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                cancelled = True
    if cancelled:
        raise asyncio.CancelledError


@dataclass
class Recovery:
    snapshot: str | None
    problems: list[str]
    replayed: int
    torn_bytes: int
    notes: list[str]
    state_seconds: float = 0.0  # reading the snapshot and loading its state
    replay_seconds: float = 0.0  # replaying the log records that followed it


class Committer:
    def __init__(self, registry: Registry, data_dir: Path, detached: frozenset[str]) -> None:
        self.registry = registry
        self.detached = detached  # sources whose parts are saved apart (Kafka)
        self.snapshots = SnapshotStore(data_dir / "snapshots")
        self.lock = asyncio.Lock()
        self.manage_gc = False  # ``tallyd serve`` turns this on (see settle_heap)
        self.last_snapshot: dict[str, Any] | None = None
        self.skipped: list[str] = []
        self.last_snapshot_at: float | None = None  # wall clock, for the snapshot's age

    @contextlib.asynccontextmanager
    async def step(self) -> AsyncIterator[Step]:
        async with self.lock:
            yield Step(self.registry)

    async def commit(self, batch: Batch) -> None:
        """Apply one batch in a step."""
        async with self.step() as step:
            step.apply(batch)

    # -- the main snapshot ----------------------------------------------------------------------

    def recover(self, log_: Log) -> Recovery:
        """Load the newest valid snapshot, then have the log replay what followed it. Blocking:
        run in a thread before anything else touches the registry (so no lock is taken)."""
        if self.manage_gc:
            gc.disable()  # millions of new objects: no collection could find garbage among them
        try:
            began = time.perf_counter()
            loaded = self.snapshots.load_newest()
            self.skipped = loaded.problems  # why snapshots were not used, should the replay fail
            notes: list[str] = []
            if loaded.state is not None:
                notes = self.registry.load_state(loaded.state)
            loaded_at = time.perf_counter()
            replayed, torn = log_.restore(loaded.state, Step(self.registry))
            replayed_at = time.perf_counter()
        finally:
            if self.manage_gc:
                gc.enable()
                settle_heap()
        name = loaded.path.name if loaded.path else None
        return Recovery(
            name,
            loaded.problems,
            replayed,
            torn,
            notes,
            state_seconds=loaded_at - began,
            replay_seconds=replayed_at - loaded_at,
        )

    def _encode(self, extra: dict[str, Any]) -> list[snapshot.Piece]:
        """The main snapshot's framed payload (``snapshot``: in a worker thread, in a step)."""
        return snapshot.frame(snapshot.payload_pieces(self.registry.to_state(extra, self.detached)))

    async def snapshot(self, log_: Log) -> dict[str, Any]:
        async with self.step():
            started = time.perf_counter()
            position, extra = log_.snapshot_extra(int(time.time() * 1000))
            # State is arrays: the header is small JSON, the rest the arrays' own bytes (not
            # copied). Built, encoded and checksummed in a worker thread (a million pairs took
            # 12-45 ms on the loop, every query waiting): the step keeps writers out meanwhile,
            # and queries, which only read, go on — once every part is compacted here, on the
            # loop, so that the thread renumbers no pair under a query.
            self.registry.compact(self.detached)
            framed = await asyncio.to_thread(self._encode, extra)
            if self.manage_gc:
                settle_heap()
            path = await whole(asyncio.to_thread(self.snapshots.write, framed, position))
            await whole(asyncio.to_thread(log_.snapshot_written))
        trimmed = await asyncio.to_thread(log_.trim, self.snapshots.oldest_kept_position())
        info = {
            "file": path.name,
            "position": position,
            "bytes": sum(len(p) for p in framed),  # bytes, and memoryviews of uint8
            "seconds": round(time.perf_counter() - started, 4),
            "wal_segments_trimmed": trimmed,
        }
        self.last_snapshot = info
        self.last_snapshot_at = time.time()
        # Routine, every snapshot_every: the periodic summary (api/logs.py) counts them at info.
        log.debug("event=snapshot %s", " ".join(f"{k}={v}" for k, v in info.items()))
        return info
