"""The commit pipeline: the one task that mutates view state.

``submit`` queues a decoded batch and waits. The committer takes everything queued (group commit),
appends it to the WAL with one fsync in a worker thread, then applies each batch to the registry in
WAL order, then answers the waiting requests. So a 200 means "on disk and visible", and replaying
the WAL reproduces exactly the state that was served.

Snapshots take the same lock: no batch is applied while the state is encoded (in a worker thread;
queries keep being answered meanwhile since they only read), so the snapshot's position is exactly
the last batch it contains.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ingest import faults
from ingest.decode import Decoder
from ingest.snapshots import SnapshotStore
from ingest.wal import Wal
from views import snapshot
from views.registry import Batch, Receipt, Registry

log = logging.getLogger("tallyd.pipeline")
TABLE_RECORD = b"T"  # WAL records of column-wise batches start with this (JSON ones with "{")


class Unavailable(RuntimeError):
    """The pipeline cannot take writes (not started, stopping, or a fatal disk error).
    ``status``: 507 when the disk is full, else 503."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Pending:
    batch: Batch
    payload: bytes
    done: asyncio.Future[int]


@dataclass
class Recovery:
    snapshot: str | None
    problems: list[str]
    replayed: int
    torn_bytes: int
    notes: list[str]


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


def _receipt(record: dict[str, Any]) -> Receipt | None:
    if "receipt" not in record:
        return None
    key, digest, at = record["receipt"]
    return Receipt(str(key), str(digest), int(at))


class Pipeline:
    def __init__(self, registry: Registry, data_dir: Path, segment_bytes: int) -> None:
        self.registry = registry
        self.wal = Wal(data_dir / "wal", segment_bytes)
        self.snapshots = SnapshotStore(data_dir / "snapshots")
        self.lock = asyncio.Lock()
        self.pending: list[_Pending] = []
        self.wakeup = asyncio.Event()
        self.failed: str | None = None
        self.failed_status = 503
        self.last_snapshot: dict[str, Any] | None = None
        self.last_snapshot_at: float | None = None  # wall clock, for the snapshot's age
        self.manage_gc = False  # ``tallyd serve`` turns this on (see settle_heap)
        self.receipt_ttl_ms = 24 * 3_600_000  # idempotency keys older than this are forgotten
        self._task: asyncio.Task[None] | None = None

    # -- start / stop ---------------------------------------------------------------------------

    def recover(self) -> Recovery:
        """Load the newest valid snapshot and replay the WAL after it. Blocking: run in a thread
        before anything else touches the registry."""
        if self.manage_gc:
            gc.disable()  # millions of new objects: no collection could find garbage among them
        try:
            loaded = self.snapshots.load_newest()
            notes: list[str] = []
            if loaded.state is not None:
                notes = self.registry.load_state(loaded.state)
            replayed = 0
            for seq, payload in self.wal.open(after=self.registry.position):
                self.registry.apply(self._batch(seq, payload))
                replayed += 1
        finally:
            if self.manage_gc:
                gc.enable()
                settle_heap()
        return Recovery(
            loaded.path.name if loaded.path else None,
            loaded.problems,
            replayed,
            self.wal.truncated_bytes,
            notes,
        )

    def _batch(self, seq: int, payload: bytes) -> Batch:
        """A WAL record back into the batch it was: JSON events, or (``T``) the raw NDJSON body
        of a column-wise batch, read again by the same reader."""
        if payload[:1] != TABLE_RECORD:
            record = orjson.loads(payload)
            batch = Batch(record["source"], record["events"], seq, record["rejected"])
            batch.receipt = _receipt(record)
            return batch
        header, body = payload[1:].split(b"\n", 1)
        head = orjson.loads(header)
        source = head["source"]
        decoder = Decoder(self.registry.sources[source].spec, max_line_bytes=len(body) + 1)
        table = decoder.table(body)
        if table is not None:
            return Batch(source, [], seq, table=table, receipt=_receipt(head))
        # Read column-wise when it was logged; a different pyarrow may disagree. Row-wise gives
        # the same answers (top_k may keep different tail entries, within its error bound).
        return Batch(source, decoder.decode(body).events, seq, receipt=_receipt(head))

    def start(self) -> None:
        self._task = asyncio.create_task(self._commit_loop(), name="tallyd-committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for item in self.pending:
            if not item.done.done():
                item.done.set_exception(Unavailable("the server is shutting down"))
        self.pending.clear()
        self.wal.close()

    # -- writes ---------------------------------------------------------------------------------

    async def submit(self, batch: Batch, body: bytes | None = None) -> int:
        """Durably log and apply ``batch``; returns its WAL position. A table batch logs the
        NDJSON ``body`` it was read from (smaller and faster than re-encoding its events)."""
        if self.failed is not None:
            raise Unavailable(self.failed, self.failed_status)
        if self._task is None:
            raise Unavailable("not ready")
        receipt = (
            {}
            if batch.receipt is None
            else {"receipt": [batch.receipt.key, batch.receipt.digest, batch.receipt.at]}
        )
        if batch.table is not None:
            assert body is not None
            header = orjson.dumps({"source": batch.source, **receipt})
            payload = TABLE_RECORD + header + b"\n" + body
        else:
            payload = orjson.dumps(
                {
                    "source": batch.source,
                    "events": batch.events,
                    "rejected": batch.rejected,
                    **receipt,
                }
            )
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append(_Pending(batch, payload, done))
        self.wakeup.set()
        return await done

    async def _commit_loop(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            async with self.lock:
                group, self.pending = self.pending, []
                if group:
                    await self._commit(group)

    async def _commit(self, group: list[_Pending]) -> None:
        faults.reached("before_wal_append")
        try:
            seqs = await asyncio.to_thread(self.wal.append, [p.payload for p in group])
        except OSError as err:
            # An fsync or write failure leaves the file in an unknown state: never retry and
            # pretend (the PostgreSQL fsync lesson). Refuse writes until a restart recovers,
            # which cuts whatever part of the batch reached the log as a torn tail.
            full = err.errno == errno.ENOSPC
            self.failed_status = 507 if full else 503
            self.failed = (
                f"the write-ahead log failed ({err.strerror or err}"
                f"{': the disk is full' if full else ''}); nothing of this batch was "
                "acknowledged; restart the server once the disk is fixed"
            )
            log.error("event=wal_failed error=%r", str(err))
            for item in group:
                item.done.set_exception(Unavailable(self.failed, self.failed_status))
            return
        faults.reached("after_fsync_before_apply")
        for item, seq in zip(group, seqs, strict=True):
            item.batch.position = seq
            if item.batch.table is not None:
                # The column-wise work runs off the event loop (queries keep being answered);
                # only the short commit of its results runs on it.
                prepared = await asyncio.to_thread(self.registry.prepare, item.batch)
                self.registry.apply(item.batch, prepared)
            else:
                self.registry.apply(item.batch)
            if not item.done.done():  # the requester may have gone away; the data is in anyway
                item.done.set_result(seq)

    # -- snapshots ------------------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        async with self.lock:
            started = time.perf_counter()
            self.registry.forget_receipts_before(int(time.time() * 1000) - self.receipt_ttl_ms)
            position = self.registry.position
            # Encoded on the event loop a piece at a time (queries run between pieces; the
            # lock keeps writers out): a worker thread would hold the GIL against the queries.
            pieces = []
            for piece in self.registry.state_json():
                pieces.append(piece)
                await asyncio.sleep(0)
            framed = await asyncio.to_thread(snapshot.encode_pieces, pieces)
            del pieces
            if self.manage_gc:
                settle_heap()
            path = await asyncio.to_thread(self.snapshots.write, framed, position)
            await asyncio.to_thread(self.wal.rotate)
        trimmed = await asyncio.to_thread(self.wal.trim, self.snapshots.oldest_kept_position())
        info = {
            "file": path.name,
            "position": position,
            "bytes": sum(len(p) for p in framed),
            "seconds": round(time.perf_counter() - started, 4),
            "wal_segments_trimmed": trimmed,
        }
        self.last_snapshot = info
        self.last_snapshot_at = time.time()
        log.info("event=snapshot %s", " ".join(f"{k}={v}" for k, v in info.items()))
        return info
