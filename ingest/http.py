"""The HTTP source: events posted to ``POST /v1/sources/{source}/events``.

One call per request, ``HttpSource.append``: admission (the ingest backlog is bounded, and a body
that declares its length is refused before it is read), the idempotency check, decoding and
validation (column-wise for large clean NDJSON bodies), then the shared log:

``HttpLog`` queues the batch and waits. Its committer task takes everything queued (group
commit), appends it to the WAL with one fsync in a worker thread, then applies each batch in WAL
order in one step of the committer, then answers the waiting requests. So an ``Ack`` means "on
disk and visible", and replaying the WAL reproduces exactly the state that was served.
Idempotency receipts are logged with their batch and kept in the main snapshot, so a retry is
recognised across a crash.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from ingest import faults
from ingest.commit import Committer, Step
from ingest.decode import Decoded, Decoder
from ingest.idempotency import KEY_RULE, MAX_KEYS, TTL_MS, request_digest, valid_key
from ingest.source import oldest
from ingest.wal import Cursor, Payload, Retain, Wal
from views.durations import format_duration
from views.registry import Applied, Batch, Registry
from views.spec import SourceSpec
from views.timefmt import format_time

log = logging.getLogger("tallyd.http")
TABLE_RECORD = b"T"  # WAL records of column-wise batches start with this (JSON ones with "{")
OFFLOAD_BYTES = 256 << 10  # decode bodies larger than this in a worker thread
# A replay applies the log's records in groups of at most this many records or events (the
# events of large bodies gain nothing from a group, and are joined into one batch's columns).
REPLAY_GROUP, REPLAY_GROUP_EVENTS = 1000, 100_000


class Rejected(Exception):
    """A request refused, nothing of it applied; ``status`` is the HTTP status that says why,
    ``headers`` and ``detail`` go into the one error shape (``api.errors``, whose ``ApiError``
    is this, raised by handlers)."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, **detail: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.detail = detail


class Unavailable(RuntimeError):
    """The log cannot take writes (not started, stopping, or a fatal disk error).
    ``status``: 507 when the disk is full, else 503."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Receipt:
    """An ``Idempotency-Key`` request: its key, a digest of the request, when it arrived (ms)."""

    key: str
    digest: str
    at: int


@dataclass(frozen=True)
class Ack:
    accepted: int
    rejected: int
    position: str
    # What the events did to each view of the source (``outcomes``): a 200 whose events were
    # all late, or all filtered out by a WHERE, must not look like one that moved every chart.
    views: dict[str, dict[str, Any]] | None = None
    replayed: bool = False  # the answer to an earlier request with the same Idempotency-Key

    def to_json(self) -> dict[str, Any]:
        out = {"accepted": self.accepted, "rejected": self.rejected, "position": self.position}
        return out if self.views is None else {**out, "views": self.views}


def key_reused() -> Rejected:
    return Rejected(
        422,
        "this Idempotency-Key was already used with a different request (source, body or "
        "on_error); use a new key for new events",
        param="Idempotency-Key",
    )


def key_in_flight() -> Rejected:
    return Rejected(
        409,
        "a request with this Idempotency-Key is being processed; retry when it has answered",
        {"Retry-After": "1"},
        param="Idempotency-Key",
    )


@dataclass
class Body:
    """A request body not yet read: its declared length (None: chunked) and how to read it."""

    declared: int | None
    read: Callable[[], Awaitable[bytes]]


@dataclass
class _Pending:
    batch: Batch
    payload: Payload
    receipt: Receipt | None
    done: asyncio.Future[tuple[int, Applied]]


class HttpLog:
    """The write-ahead log every HTTP source shares, and what rides with it: the position, the
    idempotency receipts, the ingest backlog."""

    def __init__(
        self, committer: Committer, data_dir: Path, segment_bytes: int, max_backlog: int
    ) -> None:
        self.committer = committer
        self.registry = committer.registry  # read only: the sources' specs
        self.wal = Wal(data_dir / "wal", segment_bytes)
        self.retain: Retain | None = None  # retain_events: the log kept after snapshots
        self.position = 0  # newest WAL position applied
        # Idempotency keys of applied batches: key -> {digest, at, source, accepted, rejected,
        # position}. In the WAL with their batch and in snapshots, so a retry after a restart
        # is still recognised. Bounded: the oldest go first beyond ``max_receipts``.
        self.receipts: dict[str, dict[str, Any]] = {}
        self.max_receipts = MAX_KEYS
        self.receipt_ttl_ms = TTL_MS
        self.keys_in_flight: set[str] = set()  # Idempotency-Key requests being committed
        self.max_backlog = max_backlog
        self.backlog = 0  # request bodies read and not yet answered (the ingest backlog)
        self.peak = 0
        self.shed = 0  # requests refused with 503 because of that backlog
        self.pending: list[_Pending] = []
        self.wakeup = asyncio.Event()
        self.failed: str | None = None
        self.failed_status = 503
        # An apply raised: the views may hold part of a group the position does not cover, so
        # no snapshot may be written (it would count that part again after a restart).
        self.partly_applied = False
        self._task: asyncio.Task[None] | None = None

    # -- recovery and snapshots -----------------------------------------------------------------

    def restore(self, state: dict[str, Any] | None, step: Step) -> tuple[int, int]:
        """Take the snapshot's fields, then replay the WAL after its position (blocking), in
        groups of records as the live server applies them (``Step.apply_group``: the state of
        each record in turn), so that a log of small bodies replays at their live pace."""
        if state is not None:
            self.position = int(state["position"])
            self.receipts = dict(state.get("receipts", {}))
        replayed = 0
        group: list[tuple[Batch, Receipt | None]] = []
        events = 0
        for seq, payload in self.wal.open(after=self.position):
            batch, receipt = self._batch(seq, payload)
            if batch.source in self.registry.sources:
                group.append((batch, receipt))
                events += len(batch)
                if len(group) >= REPLAY_GROUP or events >= REPLAY_GROUP_EVENTS:
                    self._replay(step, group)
                    group, events = [], 0
            else:  # a source removed from the config: its events go with it
                self.position = max(self.position, seq)
            replayed += 1
        self._replay(step, group)
        return replayed, self.wal.truncated_bytes

    def _replay(self, step: Step, group: list[tuple[Batch, Receipt | None]]) -> None:
        applied = step.apply_group([batch for batch, _ in group])
        for (batch, receipt), did in zip(group, applied, strict=True):
            if receipt is not None:
                self.remember(batch, receipt, did)
            self.position = max(self.position, batch.position)

    def _batch(self, seq: int, payload: bytes) -> tuple[Batch, Receipt | None]:
        """A WAL record back into the batch it was: JSON events, or (``T``) the raw NDJSON body
        of a column-wise batch, read again by the same reader."""
        if payload[:1] != TABLE_RECORD:
            record = orjson.loads(payload)
            return Batch(record["source"], record["events"], seq, record["rejected"]), _receipt(
                record
            )
        header, body = payload[1:].split(b"\n", 1)
        head = orjson.loads(header)
        source = head["source"]
        if source not in self.registry.sources:  # removed from the config: nothing to read
            return Batch(source, [], seq), None
        decoder = Decoder(self.registry.sources[source].spec, max_line_bytes=len(body) + 1)
        columns = decoder.columns(body)
        if columns is not None:
            return Batch(source, [], seq, columns=columns), _receipt(head)
        # Read column-wise when it was logged; a different pyarrow may disagree. Row-wise gives
        # the same answers (top_k may keep different tail entries, within its error bound).
        return Batch(source, decoder.decode(body).events, seq), _receipt(head)

    def snapshot_extra(self, now_ms: int) -> tuple[int, dict[str, Any]]:
        self.forget_receipts_before(now_ms - self.receipt_ttl_ms)
        return self.position, {"position": self.position, "receipts": self.receipts}

    def snapshot_written(self) -> None:
        self.wal.rotate()

    def trim(self, oldest_kept: int) -> int:
        """Drop what the oldest kept snapshot covers — and, under ``retain``, only what is older
        or beyond its size — but never what a backfill has still to read."""
        reading = [
            b.positions.get("", 0)
            for b in self.registry.backfills.values()
            if self.registry.sources[b.view.spec.source].spec.kind == "http"
        ]
        return self.wal.trim(min([oldest_kept, *reading]), self.retain)

    # -- backfills: views added on the running server fill from the retained log ---------------

    async def backfill(self, name: str, chunk_bytes: int = 4 << 20) -> None:
        """Feed the view ``name`` its history from the oldest record the log holds, a chunk
        (``chunk_bytes`` of records) per step, until it has read everything applied live; then,
        in that same step, it joins the live views. Read and decoded in a worker thread; each
        step applies one chunk to that one view, so queries and live batches go on between."""
        registry = self.registry
        filling = registry.backfills.get(name)
        if filling is None:
            return
        # From where it was (a restart), or from the oldest record the log still holds.
        after = filling.positions.get("")
        if after is None:
            after = await asyncio.to_thread(self.wal.first) - 1
        cursor = Cursor(self.wal, after)
        while True:
            upto = self.position  # applied live, so whole on disk
            batches = await asyncio.to_thread(self._history, cursor, upto, chunk_bytes)
            async with self.committer.step():
                if registry.backfills.get(name) is not filling:
                    return  # removed, or changed again (a new backfill has its own reader)
                filling.began.setdefault("", after)
                filling.positions.setdefault("", after)
                for batch in batches:
                    registry.backfill_apply(name, batch)
                if filling.positions[""] >= self.position:
                    registry.backfill_join(name, "")
                    log.info("event=backfill_done view=%s events=%d", name, filling.events)
                    return
            faults.reached("mid_backfill")

    def history_size(self) -> str:
        """The log records kept, and since when (blocking: it lists the segments)."""
        first, segments = self.wal.first(), self.wal.segments()
        since = (
            ""
            if not segments
            else " since " + format_time(int(segments[0][1].stat().st_mtime * 1000))
        )
        records = max(self.position - first + 1, 0)
        return f"up to {records:,} log records of the HTTP sources{since}"

    def _history(self, cursor: Cursor, upto: int, chunk_bytes: int) -> list[Batch]:
        """The next chunk of the log as batches (blocking: a worker thread)."""
        return [self._batch(seq, payload)[0] for seq, payload in cursor.read(upto, chunk_bytes)]

    # -- receipts -------------------------------------------------------------------------------

    def remember(self, batch: Batch, receipt: Receipt, applied: Applied) -> None:
        self.receipts.pop(receipt.key, None)  # re-inserted last: the dict stays in arrival order
        self.receipts[receipt.key] = {
            "digest": receipt.digest,
            "at": receipt.at,
            "source": batch.source,
            "accepted": len(batch),
            "rejected": len(batch.rejected),
            "position": batch.position,
            "views": outcomes(self.registry, len(batch), applied),
        }
        while len(self.receipts) > self.max_receipts:
            del self.receipts[next(iter(self.receipts))]

    def forget_receipts_before(self, at: int) -> int:
        """Drop idempotency keys that arrived before ``at`` (expired); returns how many."""
        old = [k for k, r in self.receipts.items() if r["at"] < at]
        for key in old:
            del self.receipts[key]
        return len(old)

    # -- start / stop ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._commit_loop(), name="tallyd-committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        _refuse(self.pending, SHUTDOWN_UNLOGGED)
        self.pending.clear()
        self.wal.close()

    # -- admission ------------------------------------------------------------------------------

    def admit(self, size: int) -> None:
        """Refuse a body that would take the ingest backlog past ``max_backlog``: a 503 with
        Retry-After now instead of a timeout later, and memory that stays bounded. A single body
        is always admitted when nothing else is in progress."""
        if self.backlog and self.backlog + size > self.max_backlog:
            self.shed += 1
            raise Rejected(
                503,
                f"overloaded: {self.backlog} bytes of events are being written "
                f"(max_ingest_backlog_bytes is {self.max_backlog}); retry after the Retry-After "
                "seconds",
                {"Retry-After": "1"},
            )

    # -- writes ---------------------------------------------------------------------------------

    async def submit(
        self, batch: Batch, body: bytes | None, receipt: Receipt | None
    ) -> tuple[int, Applied]:
        """Durably log and apply ``batch``; returns its WAL position and what it did. A table
        batch logs the NDJSON ``body`` it was read from (smaller and faster than re-encoding
        its events)."""
        if self.failed is not None:
            raise Unavailable(self.failed, self.failed_status)
        if self._task is None:
            raise Unavailable("not ready")
        extra = {} if receipt is None else {"receipt": [receipt.key, receipt.digest, receipt.at]}
        if batch.columns is not None:
            assert body is not None
            header = orjson.dumps({"source": batch.source, **extra})
            payload: Payload = (TABLE_RECORD + header + b"\n", body)
        else:
            record = {"source": batch.source, "events": batch.events, "rejected": batch.rejected}
            payload = orjson.dumps({**record, **extra})
        done: asyncio.Future[tuple[int, Applied]] = asyncio.get_running_loop().create_future()
        self.pending.append(_Pending(batch, payload, receipt, done))
        self.wakeup.set()
        return await done

    async def _commit_loop(self) -> None:
        """Append what is queued to the WAL (one fsync for the group), then hand the group to
        the applier: the next group's append runs while this one is applied, so the disk and
        the views work side by side. Groups are applied in WAL order, in one step each or, when
        several are logged by the time the views are free, together."""
        appended: asyncio.Queue[tuple[list[_Pending], list[int]]] = asyncio.Queue(maxsize=2)
        applier = asyncio.create_task(self._apply_loop(appended), name="tallyd-applier")
        try:
            while True:
                await self.wakeup.wait()
                # Let requests whose bodies are read already join this group: a group is
                # logged with one fsync and applied at once, so larger groups cost less per
                # request (1-event bodies: ~2,300 -> ~2,800 events/s, benchmarks/README).
                for _ in range(2):
                    await asyncio.sleep(0)
                self.wakeup.clear()
                group, self.pending = self.pending, []
                if not group:
                    continue
                faults.reached("before_wal_append")
                try:
                    seqs = await asyncio.to_thread(self.wal.append, [p.payload for p in group])
                except OSError as err:
                    self._fail(err, group)
                    continue
                except asyncio.CancelledError:  # stopping: the write goes on in its thread
                    _refuse(group, SHUTDOWN_LOGGING)
                    raise
                faults.reached("after_fsync_before_apply")
                await appended.put((group, seqs))
        finally:
            applier.cancel()
            await asyncio.gather(applier, return_exceptions=True)
            while not appended.empty():  # logged, never applied here: a restart replays them
                _refuse(appended.get_nowait()[0], SHUTDOWN_LOGGED)

    async def _apply_loop(self, appended: asyncio.Queue[tuple[list[_Pending], list[int]]]) -> None:
        while True:
            group, seqs = await appended.get()
            if self.failed is not None:  # logged after a failed apply: a restart replays it
                _refuse(group, self.failed, self.failed_status)
                continue
            try:
                async with self.committer.step() as step:
                    # Every group logged meanwhile too, in log order: one apply for them all
                    # (small bodies cost a fixed ~1 ms per apply; see Registry.applying_group).
                    while not appended.empty():
                        more, more_seqs = appended.get_nowait()
                        group, seqs = group + more, seqs + more_seqs
                    for item, seq in zip(group, seqs, strict=True):
                        item.batch.position = seq
                    batches = [item.batch for item in group]
                    await step.apply_group_yielding(batches, partial(self._applied, group, seqs))
            except asyncio.CancelledError:  # stopping: what this group had not applied yet
                _refuse(group, SHUTDOWN_LOGGED)
                raise
            except Exception:  # a bug: the views may hold part of this group, the log all of it
                log.exception("event=apply_failed batches=%d", len(group))
                self.partly_applied = True
                self.failed_status = 500
                self.failed = APPLY_FAILED
                _refuse(group, self.failed, self.failed_status)

    def _applied(self, group: list[_Pending], seqs: list[int], applied: list[Applied]) -> None:
        for item, seq, did in zip(group, seqs, applied, strict=True):
            if item.receipt is not None:
                self.remember(item.batch, item.receipt, did)
            self.position = max(self.position, seq)
            if not item.done.done():  # the requester may have gone: the data is in
                item.done.set_result((seq, did))

    def _fail(self, err: OSError, group: list[_Pending]) -> None:
        # An fsync or write failure leaves the file in an unknown state: never retry and pretend
        # (the PostgreSQL fsync lesson). Refuse writes until a restart recovers, which cuts
        # whatever part of the batch reached the log as a torn tail.
        full = err.errno == errno.ENOSPC
        self.failed_status = 507 if full else 503
        self.failed = (
            f"the write-ahead log failed ({err.strerror or err}"
            f"{': the disk is full' if full else ''}); nothing of this batch was "
            "acknowledged; restart the server once the disk is fixed"
        )
        log.error("event=wal_failed error=%r", str(err))
        _refuse(group, self.failed, self.failed_status)


# What a request still waiting when the log stops is told (in the server, aiohttp has finished or
# cancelled every request by then; in-process callers of ``submit`` still wait).
SHUTDOWN_UNLOGGED = "the server is shutting down; nothing of this batch was logged"
SHUTDOWN_LOGGED = (
    "the server is shutting down; this batch is logged and is applied when the server restarts"
)
SHUTDOWN_LOGGING = (
    "the server is shutting down while this batch is being logged: a restart applies it if its "
    "write completes; send it again with the same Idempotency-Key to have it counted once"
)


APPLY_FAILED = (
    "applying logged events to the views failed (an internal error; the server's log has its "
    "stack): these events are in the write-ahead log, and nothing more is accepted until a "
    "restart, which applies the log again"
)


def _refuse(items: list[_Pending], message: str, status: int = 503) -> None:
    """Answer each waiter still waiting with ``Unavailable``: a requester gone (its request
    cancelled) has a cancelled future, which takes no answer."""
    for item in items:
        if not item.done.done():
            item.done.set_exception(Unavailable(message, status))


def _receipt(record: dict[str, Any]) -> Receipt | None:
    if "receipt" not in record:
        return None
    key, digest, at = record["receipt"]
    return Receipt(str(key), str(digest), int(at))


class HttpSource:
    """One HTTP source: what ``POST /v1/sources/{name}/events`` writes to."""

    kind = "http"
    detached = False  # its state rides in the main snapshot

    def __init__(self, spec: SourceSpec, registry: Registry, log_: HttpLog, decoder: Decoder):
        self.spec = spec
        self.name = spec.name
        self.registry = registry
        self.log = log_
        self.decoder = decoder

    # -- the Source protocol --------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing runs per source: the shared log's committer task is started with it."""

    async def stop(self) -> None:
        """Nothing to stop or save apart: the main snapshot and the WAL hold everything."""

    async def save(self) -> None:
        """Saved by the main snapshot."""

    async def backfill(self, name: str, chunk_bytes: int) -> None:
        """Read from the log every HTTP source shares."""
        await self.log.backfill(name, chunk_bytes)

    async def history_size(self) -> str:
        return await asyncio.to_thread(self.log.history_size)

    def status(self) -> dict[str, Any]:
        return {"kind": "http", "state": "running", "healthy": True}

    def watermark(self, now: float) -> int | None:
        return oldest(self.registry.sources[self.name].watermarks)

    def position(self) -> str:
        return f"wal:{self.registry.sources[self.name].positions.get('', 0)}"

    # -- appending ------------------------------------------------------------------------------

    async def append(self, body: Body, on_error: str, key: str | None) -> Ack:
        """Admit, read, check, decode, log and apply one request's events: an ``Ack`` once they
        are on disk and visible, or ``Rejected`` with nothing applied. ``on_error``: ``fail``
        (any invalid line rejects the body) or ``skip`` (valid lines applied, invalid kept);
        ``key``: the request's Idempotency-Key."""
        log_ = self.log
        log_.admit(body.declared or 0)  # before reading: shed load, not memory
        data = await body.read()
        log_.admit(len(data))
        log_.backlog += len(data)
        log_.peak = max(log_.peak, log_.backlog)
        try:
            receipt, replayed = self._idempotency(key, on_error, data)
            if replayed is not None:
                return replayed
            if receipt is None:
                return await self._ingest(on_error, data, None)
            log_.keys_in_flight.add(receipt.key)
            try:
                return await self._ingest(on_error, data, receipt)
            finally:
                log_.keys_in_flight.discard(receipt.key)
        finally:
            log_.backlog -= len(data)

    def _idempotency(
        self, key: str | None, on_error: str, body: bytes
    ) -> tuple[Receipt | None, Ack | None]:
        """The request's receipt (None without an Idempotency-Key), or the answer a retry gets."""
        if key is None:
            return None, None
        if not valid_key(key):
            raise Rejected(400, KEY_RULE, param="Idempotency-Key")
        name = self.name
        digest = request_digest(name, on_error, body)
        now = int(time.time() * 1000)
        seen = self.log.receipts.get(key)
        if seen is not None and seen["at"] >= now - self.log.receipt_ttl_ms:
            if seen["digest"] != digest or seen["source"] != name:
                raise key_reused()
            position = f"wal:{seen['position']}"
            return None, Ack(seen["accepted"], seen["rejected"], position, seen.get("views"), True)
        if key in self.log.keys_in_flight:
            raise key_in_flight()
        return Receipt(key, digest, now), None

    async def _ingest(self, on_error: str, body: bytes, receipt: Receipt | None) -> Ack:
        decoder = self.decoder
        offload = len(body) > OFFLOAD_BYTES  # large bodies are read in a worker thread
        # Alone in the server, a body is read with Arrow's threads (the shortest wait); beside
        # others, in one thread (less CPU: the cores are shared). Measured in benchmarks/README.
        read = partial(decoder.columns, threads=self.log.backlog <= len(body))
        columns = await asyncio.to_thread(read, body) if offload else read(body)
        if columns is not None:  # a clean NDJSON body, read column-wise by Arrow
            return await self._submit(Batch(self.name, [], 0, columns=columns), body, receipt)
        decoded = await asyncio.to_thread(decoder.decode, body) if offload else decoder.decode(body)
        if decoded.errors and on_error == "fail":
            raise invalid(decoded)
        if not decoded.events and not decoded.errors:
            return Ack(0, 0, self.position())
        received = format_time(int(time.time() * 1000))  # wall clock: when it reached us
        rejected = [
            {**e.describe(), "text": e.text, "received_at": received} for e in decoded.errors
        ]
        return await self._submit(Batch(self.name, decoded.events, 0, rejected), None, receipt)

    async def _submit(self, batch: Batch, body: bytes | None, receipt: Receipt | None) -> Ack:
        try:
            position, applied = await self.log.submit(batch, body, receipt)
        except Unavailable as err:
            raise Rejected(err.status, str(err), {"Retry-After": "5"}) from None
        faults.reached("before_response")
        views = outcomes(self.registry, len(batch), applied)
        return Ack(len(batch), len(batch.rejected), f"wal:{position}", views)


def invalid(decoded: Decoded) -> Rejected:
    shown = decoded.errors[:100]
    first = shown[0]
    where = f"line {first.line}" + (f", field '{first.field}'" if first.field else "")
    return Rejected(
        400,
        f"{len(decoded.errors)} of {decoded.lines} lines are invalid, nothing was applied; "
        f"first: {where}: {first.reason}",
        errors=[e.describe() for e in shown],
        invalid_lines=len(decoded.errors),
    )


def outcomes(registry: Registry, accepted: int, applied: Applied) -> dict[str, dict[str, Any]]:
    """Per view, what a batch's ``accepted`` events did: ``applied``, ``late`` (with the
    watermark and grace that made them late, and the time before which an event is late),
    ``filtered`` (not passing the view's WHERE), ``overflow`` (folded into ``__other__``),
    ``out_of_range`` (windows the view cannot place: ``views.view``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, effect in applied.views.items():
        entry: dict[str, Any] = {
            "applied": effect.applied,
            "late": effect.late,
            "filtered": max(0, accepted - effect.applied - effect.late - effect.out_of_range),
        }
        if effect.overflow:
            entry["overflow"] = effect.overflow
        if effect.out_of_range:
            entry["out_of_range"] = effect.out_of_range
        if effect.late and applied.watermark is not None:
            grace = registry.views[name].spec.grace
            entry["late_before"] = format_time(applied.watermark - grace)
            entry["watermark"] = format_time(applied.watermark)
            entry["grace"] = format_duration(grace) if grace else "0s"
        out[name] = entry
    return out
