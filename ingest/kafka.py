"""A Kafka source: a consumer-group member whose answers stay exactly right across crashes,
restarts, rebalances and broker outages.

The truth about where each partition is lives in a *part file* next to the partition's state:
``<state_dir>/<topic>-<partition>.tsnap`` holds the partition's view state and the next offset to
read, written atomically together. When a partition arrives (start, restart, rebalance), its part
file is loaded and the consumer seeks exactly there; with no part file it starts from ``start``
(earliest or latest) with empty state — never from the group's committed offset, which would skip
events this state never counted. Offsets are committed to Kafka too, for lag monitoring only.

When a partition leaves (rebalance or stop), its part file is written, then its state dropped, so
the next owner continues exactly where this one stopped. After a crash the next owner continues
from the last periodic part file and re-reads what followed: nothing lost, nothing counted twice.
Three rules keep that true while records are in flight during a hand-over: a part's file writes
are serialised (a file never goes back), a part is positioned and paused from the moment it
arrives until its state is installed, and records fetched before a hand-over are dropped after it
(each hand-over bumps the part's *epoch*; the consumer re-reads them from the installed position).

Every change to view state is a step of the committer (``ingest.commit``) that yields to the
event loop after each view, so queries keep being answered while a backlog is consumed. Fetching,
reading and applying overlap (``_consume``): a task takes each fetch (``max_batch`` records at
most) as it arrives and queues its parts to one reading thread (column-wise, in fetch order); the
loop applies a partition's fetches that are ready as one group of at most ``GROUP_RECORDS``, each
fetch a batch of its own; what the row decoder must read goes ``APPLY_CHUNK`` records a step.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from ingest import faults
from ingest.changes import ChangeDecoder, Decoded
from ingest.cluster import Membership
from ingest.commit import Committer, Step
from ingest.decode import Decoder
from ingest.http import Ack, Body, Rejected, invalid, key_in_flight, key_reused
from ingest.idempotency import (
    DEFAULT_LIMITS,
    HEADER,
    KEY_RULE,
    KeyLimits,
    Receipt,
    Receipts,
    Screened,
    TopicKeys,
    carries_requests,
    request_digest,
    request_headers,
    route,
    valid_key,
)
from ingest.kafka_records import plain_records
from ingest.snapshots import atomic_write, whole
from ingest.source import Background, oldest, partition_positions
from views import snapshot
from views.batch import Columns
from views.config import KAFKA_TIMESTAMP
from views.registry import Backfill, Batch, BuiltPart, StateMismatch
from views.spec import SourceSpec
from views.timefmt import format_optional

log = logging.getLogger("tallyd.kafka")

HEALTH_EVERY = 2.0  # seconds between broker health probes
# Records applied per turn of the event loop. A query needs several turns (read, handle, write),
# so its worst wait is a few of these: 1,000 records into four views is ~25 ms here, where 5,000
# per turn let single queries wait about 0.5 s (benchmarks/README.md).
APPLY_CHUNK = 1000
PROBE_TIMEOUT = 3.0
# A part's fetches read column-wise and ready together are applied as one group up to this many
# records: the views' fixed cost a batch is paid once (six views cost ~2.5 us a record in
# batches of a fetch's ~11,000 flights, ~1.7 us in 50,000: benchmarks/README.md), and a query
# waits at most one view's apply of the group (the apply yields after each view).
GROUP_RECORDS = 50_000
# Records fetched and waiting, their reads started, beside those being applied: at this many the
# fetch task waits. A backlog keeps the reading thread busy while the loop applies, and memory
# stays bounded.
AHEAD_RECORDS = 2 * GROUP_RECORDS


# One part's records from one ``getmany``, with the part's epoch when they were returned.
Fetched = tuple[TopicPartition, list[Any], int | None]
# A part's records read as columns (with change events' weights), or None: read them row-wise.
ReadResult = tuple[Columns, np.ndarray | None] | None
Read = asyncio.Future[ReadResult]
# A fetch of one part waiting to be applied: its records, its epoch, and its column read (or
# None: screened and read at its turn); once read column-wise, the read's columns and weights.
Waiting = tuple[list[Any], int | None, Read | None]
ReadFetch = tuple[list[Any], int | None, tuple[Columns, np.ndarray | None]]
# Per backfill of the source (by view name), how far it had read a part (None: not begun).
Progress = tuple[tuple[str, int | None], ...]


class Saved(NamedTuple):
    """What a part's file holds: its position and its backfills' progress."""

    position: int
    backfills: Progress


def part_name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def _partition(part: str) -> TopicPartition:
    topic, _, number = part.rpartition(":")
    return TopicPartition(topic, int(number))


class KafkaSource(Background, ConsumerRebalanceListener):  # type: ignore[misc]
    """Stopped, its session writes every owned part's file as it ends (``_session``); it is
    its own consumer's rebalance listener (``on_partitions_assigned`` / ``_revoked``)."""

    kind = "kafka"
    detached = True  # each partition's state and offset are saved together, in its part file

    def __init__(
        self,
        spec: SourceSpec,
        committer: Committer,
        state_dir: Path,
        decoder: Decoder,
        advertise: str | None = None,
        limits: KeyLimits = DEFAULT_LIMITS,
    ) -> None:
        self.spec = spec
        # With [cluster]: this member's address and the group's map (``ingest.cluster``).
        self.membership = None if advertise is None else Membership(advertise)
        self.producer: AIOKafkaProducer | None = None  # posts appended to the topic ([cluster])
        self.idempotent: bool | None = None  # whether the broker gave the producer an id
        # Idempotency-Key through the topic (``ingest.idempotency``): the keys this member
        # acknowledged as a writer, and per owned partition the requests it has counted.
        self.receipts = Receipts(limits)
        self.keys = TopicKeys(spec.name, limits)
        self._producing = asyncio.Lock()
        self.name = spec.name
        self.options = spec.options
        self.committer = committer
        self.registry = committer.registry  # read only: positions, watermarks
        self.state_dir = state_dir
        self.changes = ChangeDecoder(decoder, spec.format, spec.time_field == KAFKA_TIMESTAMP)
        self.consumer: AIOKafkaConsumer | None = None
        self.owned: set[str] = set()
        # part -> hand-over count: bumped whenever the part arrives or leaves. A fetch is applied
        # only if its part's epoch is still the one it had when ``getmany`` returned it; a fetch
        # that spans a hand-over belongs to the old position and is dropped (the consumer was
        # seeked to the reloaded one, so its records come again).
        self.epochs: dict[str, int] = {}
        # part -> what its part file holds: the position, and how far each backfill had read
        # the part (a backfill moves on while the live position stays put, and its progress is
        # saved too: a restart goes on from it). A part's file is rewritten when either moved.
        self.saved: dict[str, Saved] = {}
        # part -> the token this member wrote in the part's claim file when the group gave it
        # the part: a save finding another token there has been superseded (fencing, below)
        self.claims: dict[str, str] = {}
        # part -> lock serialising its file writes: two saves racing (the periodic one and a
        # hand-over's) could otherwise land out of order and leave an older position on disk.
        self.saving: dict[str, asyncio.Lock] = {}
        self.checking: set[TopicPartition] = set()  # restored here; end not yet confirmed
        # One thread reads fetches column-wise, in the order they were fetched (``_read_ahead``).
        self._reader: ThreadPoolExecutor | None = None
        self._reads: set[Read] = set()  # those not done
        self.state = "starting"
        self.error: str | None = None
        self.partition_errors: dict[str, str] = {}
        self.last_seen: dict[str, float] = {}  # part -> wall time of its last record
        self.tombstones = 0

    def position(self) -> str:
        return partition_positions(self.registry.sources[self.name].positions)

    # -- status ---------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self.state == "running" and not self.partition_errors

    def status(self) -> dict[str, Any]:
        source = self.registry.sources[self.spec.name]
        partitions = {}
        for part in sorted(self.owned | set(self.partition_errors)):
            position = source.positions.get(part)
            tp = _partition(part)
            consumer = self.consumer
            # The high watermark is known only for partitions the consumer has assigned now
            # (during a rebalance ``owned`` and the assignment briefly differ).
            assigned = consumer is not None and tp in consumer.assignment()
            end = consumer.highwater(tp) if consumer is not None and assigned else None
            partitions[part] = {
                "position": position,
                "end": end,  # the partition's high watermark, as last fetched
                "lag": None if end is None else max(0, end - (position or 0)),
                "watermark": format_optional(source.watermarks.get(part)),
                "error": self.partition_errors.get(part),
            }
        return {
            "kind": "kafka",
            "state": self.state,
            "healthy": self.healthy,
            "error": self.error,
            "group": self.options["group"],
            "topics": self.options["topics"],
            "partitions": partitions,
            "cluster": None if self.membership is None else self.membership.status(),
            "producer": None if self.producer is None else {"idempotent": self.idempotent},
            "idempotency": self.keys.status(),
            "tombstones": self.tombstones,
        }

    def watermark(self, now: float) -> int | None:
        """The view watermark: the minimum over assigned partitions that are not idle (no record
        for ``idle`` ms), so one quiet partition cannot hold freshness back forever."""
        marks = self.registry.sources[self.spec.name].watermarks
        owned = [p for p in marks if p in self.owned]
        active = [
            p for p in owned if now - self.last_seen.get(p, 0.0) < self.options["idle"] / 1000
        ]
        return oldest(marks, active or owned)

    # -- part files -----------------------------------------------------------------------------

    def _path(self, part: str) -> Path:
        topic, _, partition = part.rpartition(":")
        return self.state_dir / f"{topic}-{partition}.tsnap"

    # Fencing. A member stalled past its session timeout (a long GC, SIGSTOP, a frozen VM) is
    # still running its code when it resumes: it gives its partitions up by writing their part
    # files, or its periodic save does — over the files of the partitions' newer owners. So each
    # member, when the group gives it a partition, first writes a *claim* next to the part file
    # (a token of its own); before writing a part file it checks that the claim is still its own.
    # The group hands a partition to one member at a time, in order, so the newest claim is the
    # rightful owner's. A part file with no claim beside it (written by an older release) is
    # written as before. Between the check and the write a newer owner could claim the partition:
    # a window of one file write, where before it was the whole stall.

    def _claim_path(self, part: str) -> Path:
        topic, _, partition = part.rpartition(":")
        return self.state_dir / f"{topic}-{partition}.owner"

    def _claim_and_load(self, part: str, token: str) -> dict[str, Any] | None:
        claim = {"token": token, "pid": os.getpid(), "at": int(time.time() * 1000)}
        atomic_write(self._claim_path(part), orjson.dumps(claim))
        return self._load(part)

    def _superseded(self, part: str) -> str | None:
        """Who claimed ``part`` after this member did, or None while the claim is its own."""
        try:
            claim = orjson.loads(self._claim_path(part).read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError:
            return "an unreadable claim"
        if claim.get("token") == self.claims.get(part):
            return None
        return f"pid {claim.get('pid')} at {format_optional(claim.get('at'))}"

    async def save(self, parts: list[str] | None = None, force: bool = False) -> int:
        """Write part files for owned partitions that moved since their last file. Returns count."""
        written = 0
        for part in list(self.owned if parts is None else parts):
            async with self.saving.setdefault(part, asyncio.Lock()):
                async with self.committer.step() as step:
                    if part not in self.owned:
                        continue
                    position = self.registry.sources[self.spec.name].positions.get(part)
                    backfills = self._backfill_progress(part)
                    if position is None:
                        continue
                    saved = Saved(position, backfills)
                    if not force and self.saved.get(part) == saved:
                        continue
                    # Built and encoded in a worker thread while the step keeps writers out;
                    # queries only read, so they keep being answered on the loop meanwhile —
                    # once the part is compacted here, on the loop: the thread moves nothing.
                    step.compact_part(self.spec.name, part)
                    data = await asyncio.to_thread(self._encode_part, step, part)
                # Outside the committer's step (ingest goes on), inside the part's own: the next
                # save of this part encodes only after this file is in place.
                newer = await asyncio.to_thread(self._superseded, part)
                if newer is not None:
                    self._fenced(part, newer)
                    continue
                await whole(asyncio.to_thread(atomic_write, self._path(part), data))
                self.saved[part] = saved
            written += 1
        if written and self.consumer is not None:
            await self._commit_for_lag()
        return written

    def _backfill_progress(self, part: str) -> Progress:
        """How far each backfill of this source has read ``part`` (None: not begun)."""
        return tuple(
            sorted(
                (name, filling.positions.get(part))
                for name, filling in self.registry.backfills.items()
                if filling.view.spec.source == self.spec.name
            )
        )

    def _fenced(self, part: str, newer: str) -> None:
        message = (
            f"fenced: the partition was claimed by a newer owner ({newer}) while this member "
            "was out of the group; its part file is left as that owner wrote it"
        )
        self.partition_errors[part] = message
        log.warning("event=fenced source=%s partition=%s newer=%r", self.spec.name, part, newer)

    def _encode_part(self, step: Step, part: str) -> bytes:
        # The requests counted go with the state and the position they are counted in.
        return snapshot.encode(
            {**step.part_state(self.spec.name, part), "requests": self.keys.save(part)}
        )

    async def _commit_for_lag(self) -> None:
        """Best effort, bounded: the part files are the truth, this only feeds lag monitoring."""
        assert self.consumer is not None
        offsets = {
            tp: self.saved[part_name(tp)].position
            for tp in self.consumer.assignment()
            if part_name(tp) in self.saved
        }
        if offsets:
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(self.consumer.commit(offsets), 2.0)

    def _load(self, part: str) -> dict[str, Any] | None:
        path = self._path(part)
        if not path.exists():
            return None
        return snapshot.decode(path.read_bytes())

    # -- rebalance ------------------------------------------------------------------------------

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.acquire(list(assigned))

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self.membership is not None:
            self.membership.forget()  # until the next assignment says who owns what
        await self.release(list(revoked))

    async def acquire(self, assigned: list[TopicPartition]) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        # Before anything is awaited, every partition gets a placeholder position and is paused:
        # with none, the fetcher would go for the group's committed offset (and with no such
        # offset fail the whole session, auto_offset_reset being "none"); paused, nothing is
        # fetched until the partition's real start is known, below.
        for tp in assigned:
            consumer.seek(tp, 0)
        consumer.pause(*assigned)
        loaded: dict[TopicPartition, dict[str, Any] | None] = {}
        for tp in assigned:
            token = uuid.uuid4().hex
            self.claims[part_name(tp)] = token
            try:
                loaded[tp] = await asyncio.to_thread(self._claim_and_load, part_name(tp), token)
            except (snapshot.SnapshotError, ValueError) as err:
                self._fail(tp, f"part file {self._path(part_name(tp)).name} is unusable: {err}")
        restored: dict[TopicPartition, int] = {}
        fresh: list[TopicPartition] = []
        async with self.committer.step() as step:
            # The parts' states are built in a worker thread (a large one takes seconds; on the
            # loop it held queries and the broker probe), with the step held so that no batch
            # is applied meanwhile; queries go on, reading the state as it was.
            built = await asyncio.to_thread(self._build, step, loaded)
            # Then no await: each part's state is installed and the consumer pointed exactly
            # where that state ends.
            for tp, state in loaded.items():
                part = part_name(tp)
                self.epochs[part] = self.epochs.get(part, 0) + 1
                if state is None:
                    step.drop_part(self.spec.name, part)
                    self.keys.drop(part)
                else:
                    ready = built[tp]
                    if isinstance(ready, StateMismatch):
                        self._fail(tp, str(ready))
                        continue
                    notes = step.install_part(ready)
                    self.keys.load(part, state.get("requests"))
                    for note in notes:
                        log.warning("event=part_note source=%s note=%r", self.spec.name, note)
                self.owned.add(part)
                if state is not None and state.get("position") is not None:
                    restored[tp] = int(state["position"])
                    # what the part file holds, installed: nothing to write until either moves
                    self.saved[part] = Saved(restored[tp], self._backfill_progress(part))
                    consumer.seek(tp, restored[tp])
                else:
                    fresh.append(tp)
        # Logged in the same step as the install (no await between): whoever sees the restored
        # positions in the status can already read this line.
        log.info(
            "event=assigned source=%s partitions=%s restored=%s",
            self.spec.name,
            ",".join(part_name(tp) for tp in assigned),
            ",".join(f"{part_name(tp)}@{p}" for tp, p in restored.items()) or "none",
        )
        if fresh:
            if self.options["start"] == "earliest":
                await consumer.seek_to_beginning(*fresh)
            else:
                await consumer.seek_to_end(*fresh)
            if self.options["start"] == "latest":
                # Pin where "latest" was, so a restart before the first record does not skip
                # ahead (the parts are paused: nothing moves them meanwhile).
                positions = self.registry.sources[self.spec.name].positions
                for tp in fresh:
                    positions[part_name(tp)] = await consumer.position(tp)
        consumer.resume(*[tp for tp in assigned if part_name(tp) not in self.partition_errors])
        await self._check_positions(restored)

    def _build(
        self, step: Step, loaded: dict[TopicPartition, dict[str, Any] | None]
    ) -> dict[TopicPartition, BuiltPart | StateMismatch]:
        built: dict[TopicPartition, BuiltPart | StateMismatch] = {}
        for tp, state in loaded.items():
            if state is not None:
                try:
                    built[tp] = step.build_part(self.spec.name, part_name(tp), state)
                except StateMismatch as err:
                    built[tp] = err
        return built

    async def _check_positions(self, restored: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        if restored:
            begins = await self.consumer.beginning_offsets(list(restored))
            for tp, position in restored.items():
                if position < begins[tp]:
                    self._fail(
                        tp,
                        f"the saved position {position} is below the log start "
                        f"{begins[tp]}: retention deleted events this state never "
                        "counted",
                    )
                else:
                    self.checking.add(tp)  # confirm it is not above the end once a fetch answers

    def _fail(self, tp: TopicPartition, reason: str) -> None:
        part = part_name(tp)
        self.partition_errors[part] = reason
        log.error("event=partition_error source=%s part=%s error=%r", self.spec.name, part, reason)
        if self.consumer is not None:
            self.consumer.pause(tp)

    async def release(self, revoked: list[TopicPartition]) -> None:
        parts = [part_name(tp) for tp in revoked if part_name(tp) in self.owned]
        await self.save(parts, force=True)
        async with self.committer.step() as step:
            for part in parts:
                step.drop_part(self.spec.name, part)
                self.keys.drop(part)
                self.epochs[part] = self.epochs.get(part, 0) + 1
                self.owned.discard(part)
                self.saved.pop(part, None)
                self.last_seen.pop(part, None)
                self.claims.pop(part, None)
        for tp in revoked:
            self.partition_errors.pop(part_name(tp), None)
            self.checking.discard(tp)
        if parts:
            log.info("event=revoked source=%s partitions=%s", self.spec.name, ",".join(parts))

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until cancelled; any broker trouble is reported and retried, never fatal."""
        backoff = 0.5
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as err:
                self.state = "unhealthy"
                self.error = f"{type(err).__name__}: {err}"
                log.warning(
                    "event=kafka_unavailable source=%s error=%r retry_in=%.1f",
                    self.spec.name,
                    self.error,
                    backoff,
                )
                stopping(err)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _session(self) -> None:
        self.state = "connecting"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.options["bootstrap"],
            group_id=self.options["group"],
            enable_auto_commit=False,
            auto_offset_reset="none",  # we always seek; an out-of-range offset must be seen
            max_poll_records=self.options["max_batch"],
            request_timeout_ms=max(10_000, self.options["session_timeout"] + 5_000),
            retry_backoff_ms=200,
            # How long a crashed member keeps its partitions before the group moves them.
            session_timeout_ms=self.options["session_timeout"],
            heartbeat_interval_ms=max(100, self.options["session_timeout"] // 4),
            partition_assignment_strategy=self._strategies(),
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()  # a failed start still holds connections and tasks
            raise
        self.consumer = consumer
        plain_records(consumer)
        try:
            consumer.subscribe(topics=self.options["topics"], listener=self)
            self.state, self.error = "running", None
            health = asyncio.create_task(self._probe(consumer))
            try:
                await self._consume(consumer)
            finally:
                health.cancel()
                await asyncio.gather(health, return_exceptions=True)
        finally:
            # Every part this session owned or failed (the assignment may already be gone after
            # an error): files written, state and errors dropped; the next session starts over.
            # The consumer stops whatever that raises: one left running stays in the group,
            # heartbeating, and holds partitions that nobody reads.
            try:
                await self.release([_partition(p) for p in self.owned | set(self.partition_errors)])
            finally:
                with contextlib.suppress(KafkaError, OSError):
                    await consumer.stop()
                self.consumer = None

    # -- backfills: a view added or changed on the running server reads the topic ---------------

    async def history_size(self) -> str:
        """How many records a backfill would read here: from each owned partition's log start
        up to the live position."""
        owned = sorted(self.owned)
        if self.consumer is None or not owned:
            return "the partitions this member will own (none yet)"
        positions = self.registry.sources[self.name].positions
        try:
            begins = await self.consumer.beginning_offsets([_partition(p) for p in owned])
        except (KafkaError, OSError) as err:
            return f"the partitions this member owns (their log start is unknown: {err})"
        records = sum(max(positions.get(part, 0) - begins[_partition(part)], 0) for part in owned)
        return f"{records:,} records in the {len(owned)} partition(s) this member owns"

    async def backfill(self, name: str, chunk_bytes: int) -> None:
        """Feed the view ``name`` the history of every partition this member owns, from the
        log start up to where the live views are, with a consumer of its own (no group: the
        parts are assigned to it directly) while the live consumer goes on. Each part joins the
        live views in the step in which everything below their position has been read; the view
        is live once every part has. Records are decoded as the live path decodes them, with
        change-stream and request-key state of its own, from the log start. Broker trouble is
        retried, as the live consumer's is."""
        backoff = 0.5
        while self.registry.backfills.get(name) is not None:
            try:
                await self._backfill_session(name, chunk_bytes)
                return
            except (KafkaError, OSError) as err:
                log.warning("event=backfill_retry view=%s error=%r", name, str(err))
                stopping(err)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _backfill_session(self, name: str, chunk_bytes: int) -> None:
        registry = self.registry
        filling = registry.backfills.get(name)
        if filling is None:
            return
        changes = ChangeDecoder(
            self.changes.decoder, self.spec.format, self.spec.time_field == KAFKA_TIMESTAMP
        )
        keys = TopicKeys(self.spec.name, self.keys.limits)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.options["bootstrap"],
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a part whose log start moved on: from the new one
            max_partition_fetch_bytes=chunk_bytes,
            fetch_max_bytes=chunk_bytes,
            retry_backoff_ms=200,
        )
        await consumer.start()
        plain_records(consumer)
        try:
            reading: set[str] = set()
            while registry.backfills.get(name) is filling:
                wanted = {
                    p
                    for p in self.owned
                    if p not in filling.joined and p not in self.partition_errors
                }
                # A part handed away and back meanwhile was forgotten (``Registry.drop_part``):
                # it is read again from its start, with what was fetched of it dropped.
                new = (wanted - reading) | {p for p in wanted & reading if p not in filling.began}
                if wanted != reading or new:
                    for part in (reading - wanted) | new:
                        keys.drop(part)
                    await self._backfill_assign(consumer, filling, new, wanted)
                    reading = wanted
                if not reading:
                    async with self.committer.step():
                        if registry.backfills.get(name) is not filling:
                            return
                        # Nothing left to read here: live once every part applied has joined
                        # (not before this member owns one: it would then miss their history).
                        if self.owned and registry.backfill_join(name, None):
                            break
                    await asyncio.sleep(0.1)  # until the group gives this member a partition
                    continue
                fetched = await consumer.getmany(timeout_ms=200)
                ends = {part: await consumer.position(_partition(part)) for part in reading}
                async with self.committer.step():
                    if registry.backfills.get(name) is not filling:
                        return
                    done = self._backfill_step(name, filling, fetched, ends, changes, keys)
                faults.reached("mid_backfill")
                if done:
                    break
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()
        log.info("event=backfill_done view=%s events=%d", name, filling.events)
        await self.save(force=True)  # the view's parts, now live, into the part files

    async def _backfill_assign(
        self, consumer: AIOKafkaConsumer, filling: Backfill, new: set[str], wanted: set[str]
    ) -> None:
        """Read ``wanted`` from now on; the ``new`` ones from where their backfill got to (a
        part handed over and back starts over: ``Registry.drop_part`` forgot it) or the start."""
        consumer.assign([_partition(p) for p in sorted(wanted)])
        starting = [_partition(p) for p in sorted(new) if p not in filling.positions]
        for part in sorted(new - {part_name(tp) for tp in starting}):
            consumer.seek(_partition(part), filling.positions[part])
            log.info(  # from its part file: after a restart, or handed over mid-backfill
                "event=backfill_resumed view=%s part=%s at=%d began=%d",
                filling.view.spec.name,
                part,
                filling.positions[part],
                filling.began.get(part, 0),
            )
        if starting:
            begins = await consumer.beginning_offsets(starting)
            for tp in starting:
                consumer.seek(tp, begins[tp])
                filling.began[part_name(tp)] = filling.positions[part_name(tp)] = begins[tp]

    def _backfill_step(
        self,
        name: str,
        filling: Backfill,
        fetched: dict[TopicPartition, list[Any]],
        ends: dict[str, int],
        changes: ChangeDecoder,
        keys: TopicKeys,
    ) -> bool:
        """In a step: apply what was fetched below each part's live position, and join the parts
        whose every record below it has now been read. True when the view is live."""
        live = self.registry.sources[self.name].positions
        for part, end in ends.items():
            if part not in self.owned or part in filling.joined or part not in filling.began:
                continue  # moved away (and maybe back) meanwhile: Registry.drop_part forgot it
            tp = _partition(part)
            below = live.get(part)
            messages = [
                m
                for m in fetched.get(tp, [])
                if m.offset >= filling.positions.get(part, 0)
                and (below is None or m.offset < below)
            ]
            if messages:
                self.registry.backfill_apply(name, self._decoded(part, messages, keys, changes)[0])
            # Nothing applied live yet (then the live path brings everything), or the reader
            # is at or past the live position: every record below it is read.
            if below is None or end >= below:
                filling.positions[part] = max(filling.positions.get(part, 0), below or 0)
                if self.registry.backfill_join(name, part):
                    return True
        return False

    # -- writes through the topic ([cluster]) -----------------------------------------------------

    async def append(self, body: Body, on_error: str, key: str | None) -> Ack:
        """Post events to a clustered Kafka source: each valid event becomes a record of the
        topic (keyed by ``partition_by`` when set), produced idempotently with ``acks=all``; the
        200 comes once the broker has every record, with the positions they got. Whichever
        member owns a partition applies its records, as it applies any producer's. With an
        ``Idempotency-Key`` the records are marked so that their owners count a retried
        request once (``ingest.idempotency``)."""
        refusal = self._refuse_writes()
        if refusal is not None:
            raise refusal
        if key is not None and not valid_key(key):
            raise Rejected(400, KEY_RULE, param="Idempotency-Key")
        data = await body.read()
        if key is None:
            return await self._append(data, on_error, None)
        digest = request_digest(self.spec.name, on_error, data)
        seen = self.receipts.get(key, int(time.time() * 1000))
        if seen is not None:
            if seen.digest != digest:
                raise key_reused()
            answer: Ack = seen.answer
            return Ack(answer.accepted, answer.rejected, answer.position, replayed=True)
        if key in self.receipts.in_flight:
            raise key_in_flight()
        self.receipts.in_flight.add(key)
        try:
            ack = await self._append(data, on_error, (key, digest))
        finally:
            self.receipts.in_flight.discard(key)
        self.receipts.remember(key, Receipt(digest, int(time.time() * 1000), ack))
        return ack

    async def _append(self, data: bytes, on_error: str, request: tuple[str, str] | None) -> Ack:
        decoded = await asyncio.to_thread(self.changes.decoder.decode, data)
        if decoded.errors and on_error == "fail":
            raise invalid(decoded)
        topic, field = self.options["topics"][0], self.options["partition_by"]
        values = [event.get(field) if field is not None else None for event in decoded.events]
        ends: dict[int, int] = {}
        try:
            producer = await self._producer()
            if request is None:
                places: list[tuple[int | None, bytes | None]] = [
                    (None, None if v is None else str(v).encode()) for v in values
                ]
                headers: list[list[tuple[str, bytes]] | None] = [None] * len(values)
            else:
                key, digest = request
                partitions = sorted(await producer.partitions_for(topic))
                routed = route(values, partitions, key)
                places = list(routed)
                headers = [[(HEADER, h)] for h in request_headers(routed, digest, key)]
            sent = [
                await producer.send(
                    topic, orjson.dumps(event), key=record_key, partition=p, headers=h
                )
                for event, (p, record_key), h in zip(decoded.events, places, headers, strict=True)
            ]
            for future in sent:
                meta = await future
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        except (KafkaError, OSError) as err:
            advice = (
                "retry with the same Idempotency-Key, on any member"
                if request
                else "retry only if a duplicate is acceptable (or post with an Idempotency-Key)"
            )
            raise Rejected(
                503,
                f"the broker did not take the events ({str(err) or type(err).__name__}); some "
                f"may have been appended: {advice}",
                {"Retry-After": "1"},
            ) from None
        position = ",".join(f"{topic}:{p}@{n}" for p, n in sorted(ends.items()))
        return Ack(len(decoded.events), len(decoded.errors), position)

    def _refuse_writes(self) -> Rejected | None:
        """Why this source takes no post (405); None: it may."""
        name = self.spec.name
        if self.membership is None:
            why = (
                f"source '{name}' reads from Kafka; events are posted to it only in a cluster "
                "([cluster] table), which appends them to its topic"
            )
        elif self.spec.format != "json":
            why = f"source '{name}' reads {self.spec.format} change events; they come from Kafka"
        elif self.spec.time_field == KAFKA_TIMESTAMP:
            why = f"source '{name}' takes its time from the broker (time = kafka_timestamp)"
        elif len(self.options["topics"]) != 1:
            why = f"source '{name}' reads several topics: which one a post goes to is not known"
        else:
            return None
        return Rejected(405, why)

    async def _producer(self) -> AIOKafkaProducer:
        async with self._producing:
            if self.producer is None:
                try:
                    self.producer = await self._started_producer(idempotent=True)
                    self.idempotent = True
                except KafkaError as err:
                    # Some Kafka-protocol brokers (Tansu, the tests' broker) do not hand out
                    # producer ids. Say so, loudly and in /v1/sources: without idempotence a send
                    # retried after a lost acknowledgement can be written twice.
                    log.warning(
                        "event=producer_not_idempotent source=%s error=%r: the broker gives no "
                        "producer id; posts are appended with acks=all, and a send the client "
                        "retries after a lost acknowledgement could be written twice",
                        self.spec.name,
                        str(err) or type(err).__name__,
                    )
                    self.producer = await self._started_producer(idempotent=False)
                    self.idempotent = False
            return self.producer

    async def _started_producer(self, idempotent: bool) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.options["bootstrap"],
            enable_idempotence=idempotent,  # a retried send is written once
            acks="all",
            linger_ms=5,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # a failed start still holds connections and tasks
            raise
        return producer

    async def stop(self) -> None:
        await super().stop()
        if self._reader is not None:
            self._reader.shutdown(wait=False, cancel_futures=True)
            self._reader = None
        if self.producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self.producer.stop()
            self.producer = None

    def _strategies(self) -> tuple[Any, ...]:
        """tallyd's protocol first (members advertise their addresses); a group where a member
        does not offer it (an older release, no [cluster]) agrees on plain round robin."""
        if self.membership is None:
            return (RoundRobinPartitionAssignor,)
        return (self.membership, RoundRobinPartitionAssignor)

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        """Ask the broker for metadata every few seconds: the consumer itself retries quietly,
        so this is how an outage becomes visible (and its end, too)."""
        while True:
            await asyncio.sleep(HEALTH_EVERY)
            try:
                await asyncio.wait_for(consumer.topics(), PROBE_TIMEOUT)
            except (TimeoutError, KafkaError, OSError) as err:
                if self.state != "unhealthy":
                    log.warning(
                        "event=kafka_unhealthy source=%s error=%r",
                        self.spec.name,
                        str(err) or type(err).__name__,
                    )
                self.state = "unhealthy"
                self.error = f"broker not answering: {str(err) or type(err).__name__}"
            else:
                if self.state != "running":
                    log.info("event=kafka_recovered source=%s", self.spec.name)
                self.state, self.error = "running", None

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        """Two stages that overlap: ``_fetch``, a task of its own, takes each fetch from the
        consumer as it arrives and starts its parts' column reads at once (``_read_ahead``);
        this loop applies whatever is ready, a part's fetches together (``_apply_fetched``).
        The fetch task runs between the apply's steps (it yields after each view), so a read
        starts while the fetch before it is applied instead of after."""
        ahead = Ahead(AHEAD_RECORDS)
        fetching = asyncio.create_task(self._fetch(consumer, ahead))
        try:
            while True:
                await self._apply_fetched(*await ahead.take(fetching))
        finally:
            fetching.cancel()
            await asyncio.gather(fetching, return_exceptions=True)
            reads = list(self._reads)  # those of the fetches taken or waiting
            for read in reads:
                read.cancel()
            await asyncio.gather(*reads, return_exceptions=True)

    async def _fetch(self, consumer: AIOKafkaConsumer, ahead: Ahead) -> None:
        """Fetch while there is room ahead of the applies, each fetch's reads started."""
        while True:
            await ahead.room()
            try:
                records = await consumer.getmany(
                    timeout_ms=500, max_records=self.options["max_batch"]
                )
            except OffsetOutOfRangeError as err:
                for tp in err.args[0] if err.args and isinstance(err.args[0], dict) else []:
                    self._fail(
                        tp,
                        "the saved position is outside the partition's log (was the "
                        "topic deleted and recreated?)",
                    )
                continue
            for tp in list(self.checking):
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                self.checking.discard(tp)
                position = self.registry.sources[self.spec.name].positions.get(part_name(tp))
                if position is not None and position > highwater:
                    self._fail(
                        tp,
                        f"the saved position {position} is above the partition's end "
                        f"{highwater} (was the topic deleted and recreated?)",
                    )
            fetched = self._stamped(records)
            if fetched:
                ahead.put(fetched, self._read_ahead(fetched))

    def _stamped(self, records: dict[TopicPartition, list[Any]]) -> list[Fetched]:
        """What ``getmany`` returned, each part with its epoch as of now: call it before
        anything is awaited, so the epoch is the one the records were fetched in."""
        return [(tp, messages, self.epochs.get(part_name(tp))) for tp, messages in records.items()]

    def _read_ahead(self, fetched: list[Fetched]) -> list[Read | None]:
        """Each fetched part's column read, queued now to the source's reading thread: one read
        at a time, in fetch order, each starting as soon as the one before ends — in that thread,
        not when the event loop next gets to it (a read chained on the loop waited for the
        apply under way: benchmarks/README.md). A read runs beside the loop's applies and
        fetches, not beside other reads (several at once took the cores from the loop). None
        for a part whose records carry request headers: which of them to read depends on the
        applies before (``TopicKeys.screen``), so it is read at its turn. A read whose fetch
        turns out stale (a hand-over meanwhile) is not applied."""
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"tallyd-read-{self.name}")
        loop = asyncio.get_running_loop()
        reads: list[Read | None] = []
        for _tp, messages, _epoch in fetched:
            if carries_requests(messages):
                reads.append(None)
                continue
            # One Arrow thread: the loop has the other core (``Reader.read_json``).
            values = [m.value for m in messages]
            read = loop.run_in_executor(self._reader, self.changes.columns, values, False)
            self._reads.add(read)
            read.add_done_callback(self._reads.discard)
            read.add_done_callback(_seen)
            reads.append(read)
        return reads

    async def _apply_fetched(
        self, fetched: list[Fetched], reads: list[Read | None] | None = None
    ) -> None:
        """Fetches in the order they were made, each part's records in offset order; ``reads``:
        the parts' column reads under way (``_read_ahead``), if any. A part's consecutive
        fetches read ahead are applied as one group, up to ``GROUP_RECORDS`` records (one
        ``Registry.applying_group``: each fetch a batch of its own, with its own lateness and
        position, the views' fixed cost paid once); the others in turn (``_apply_table``, else
        row by row)."""
        parts: dict[TopicPartition, list[Waiting]] = {}
        for i, (tp, messages, epoch) in enumerate(fetched):
            parts.setdefault(tp, []).append((messages, epoch, reads[i] if reads else None))
        for tp, entries in parts.items():
            group: list[tuple[list[Any], int | None, Read]] = []
            for messages, epoch, read in entries:
                if group and (read is None or _records(group) + len(messages) > GROUP_RECORDS):
                    await self._apply_group(tp, group)
                    group = []
                if read is not None:
                    group.append((messages, epoch, read))
                elif not await self._apply_table(tp, messages, epoch):
                    await self._apply_rows(tp, messages, epoch)
            await self._apply_group(tp, group)

    async def _apply_rows(self, tp: TopicPartition, messages: list[Any], epoch: int | None) -> None:
        for start in range(0, len(messages), APPLY_CHUNK):
            await self._apply(tp, messages[start : start + APPLY_CHUNK], epoch)
            await asyncio.sleep(0)  # let queries in between batches

    async def _apply_group(
        self, tp: TopicPartition, group: list[tuple[list[Any], int | None, Read]]
    ) -> None:
        """A part's fetches read ahead, in offset order: those read column-wise applied together,
        those the row decoder must read (``got`` None) in turn between them."""
        run: list[ReadFetch] = []
        for messages, epoch, read in group:
            try:
                got = await read
            except Exception:
                await self._apply_read(tp, run)  # what came before the failed read
                raise
            if got is not None:
                run.append((messages, epoch, got))
                continue
            await self._apply_read(tp, run)
            run = []
            await self._apply_rows(tp, messages, epoch)
        await self._apply_read(tp, run)

    async def _apply_read(self, tp: TopicPartition, run: list[ReadFetch]) -> None:
        """Fetches of a part read column-wise, together when they follow one another, else
        each in turn (``_applied``), row by row when one overlaps what was counted."""
        if len(run) > 1 and await self._applied(tp, run):
            return
        for one in run:
            if not await self._applied(tp, [one]):
                await self._apply_rows(tp, one[0], one[1])

    async def _apply_table(
        self, tp: TopicPartition, messages: list[Any], epoch: int | None
    ) -> bool:
        """Many clean records at once (plain or change events), read at their turn: screened,
        read column-wise by Arrow in a worker thread, applied in one step. False: apply them
        row-wise instead."""
        part = part_name(tp)
        # Records of retried requests counted already are left out; nothing else applies to this
        # part before the step below (the loop applies one fetch at a time; a hand-over bumps
        # the epoch).
        screened = self.keys.screen(part, messages)
        values = [m.value for m in (messages if screened is None else screened.kept)]
        got = await asyncio.to_thread(self.changes.columns, values)  # Arrow, off the loop
        if got is None:
            return False
        return await self._applied(tp, [(messages, epoch, got)], screened)

    async def _applied(
        self,
        tp: TopicPartition,
        run: list[ReadFetch],
        screened: Screened | None = None,
    ) -> bool:
        """Fetches of a part read column-wise (``screened``: the one fetch's records screened
        for requests counted already) applied in one step, those stale since (a hand-over)
        dropped. False, with nothing applied: the first starts below the part's position, or
        one does not start past the one before — apply each on its own, row by row where it
        overlaps (``_counted_below``)."""
        part = part_name(tp)
        async with self.committer.step() as step:
            run = [one for one in run if self._current(part, one[1])]
            if not run:
                return True
            if self._counted_below(part, run[0][0]) is not None or not _follow(run):
                return False  # the row path drops exactly the counted records
            if screened is not None:
                self.keys.commit(part, screened)
            batches = [
                # position past the records left out, too
                Batch(self.spec.name, [], m[-1].offset + 1, part=part, columns=c, weights=w)
                for m, _epoch, (c, w) in run
            ]
            await step.apply_group_yielding(batches, lambda applied: None)
        kept = [m for m, _epoch, _got in run] if screened is None else [screened.kept]
        self.tombstones += sum(1 for m in kept for record in m if record.value is None)
        self.last_seen[part] = time.time()
        return True

    def _current(self, part: str, epoch: int | None) -> bool:
        """Whether a fetch of ``part`` made in ``epoch`` may still be applied."""
        if part not in self.owned or part in self.partition_errors:
            return False  # revoked (or failed) meanwhile: its next owner reads these again
        # Handed over and back meanwhile: the consumer was seeked to the reloaded position
        # and reads these records again from there.
        return self.epochs.get(part) == epoch

    def _counted_below(self, part: str, messages: list[Any]) -> int | None:
        """The part's position if the fetch starts below it, else None. Epochs rule it out;
        were it to happen, the records below the position are counted already and are dropped,
        the rest applied (dropping all would lose the tail, applying all count some twice)."""
        position = self.registry.sources[self.spec.name].positions.get(part)
        if position is None or messages[0].offset >= position:
            return None
        log.warning(
            "event=overlapping_fetch source=%s part=%s first=%d position=%d",
            self.spec.name,
            part,
            messages[0].offset,
            position,
        )
        return position

    def _decoded(
        self, part: str, messages: list[Any], keys: TopicKeys, changes: ChangeDecoder
    ) -> tuple[Batch, Decoded]:
        """Records (in offset order) as the batch they apply: those of requests counted already
        left out (``keys``), the rest decoded (``changes``), its position past them all. The live
        path and a backfill's reader each bring their own keys and change decoder."""
        position = messages[-1].offset + 1  # past records of retries left out, too
        screened = keys.screen(part, messages)
        if screened is not None:
            keys.commit(part, screened)
            messages = screened.kept
        decoded = changes.decode(part, [(m.offset, m.timestamp, m.value) for m in messages])
        weights = decoded.weights if self.spec.retracting else None
        return Batch(self.name, decoded.events, position, decoded.poison, part, weights), decoded

    async def _apply(self, tp: TopicPartition, messages: list[Any], epoch: int | None) -> None:
        part = part_name(tp)
        async with self.committer.step() as step:
            if not self._current(part, epoch):
                return
            position = self._counted_below(part, messages)
            if position is not None:
                messages = [m for m in messages if m.offset >= position]
                if not messages:
                    return
            batch, decoded = self._decoded(part, messages, self.keys, self.changes)
            step.apply(batch)
        self.tombstones += decoded.tombstones
        self.last_seen[part] = time.time()


class Ahead:
    """Fetches taken from the consumer and not yet applied, oldest first, with their reads:
    ``KafkaSource._fetch`` puts, the applying loop takes them all at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # records; the fetch task waits at or above it
        self.fetched: list[Fetched] = []
        self.reads: list[Read | None] = []
        self.records = 0
        self._arrived = asyncio.Event()
        self._taken = asyncio.Event()

    def put(self, fetched: list[Fetched], reads: list[Read | None]) -> None:
        self.fetched += fetched
        self.reads += reads
        self.records += sum(len(messages) for _tp, messages, _epoch in fetched)
        self._arrived.set()

    async def room(self) -> None:
        while self.records >= self.limit:
            self._taken.clear()
            await self._taken.wait()

    async def take(self, fetching: asyncio.Task[None]) -> tuple[list[Fetched], list[Read | None]]:
        """Everything fetched so far, waiting for a fetch if there is none; the fetch task's
        error (it ends no other way) is raised here."""
        while not self.fetched:
            self._arrived.clear()
            arrived = asyncio.ensure_future(self._arrived.wait())
            try:
                await asyncio.wait([arrived, fetching], return_when=asyncio.FIRST_COMPLETED)
            finally:
                arrived.cancel()
            if fetching.done():
                fetching.result()
                raise RuntimeError("the fetch task ended")
        taken = self.fetched, self.reads
        self.fetched, self.reads, self.records = [], [], 0
        self._taken.set()
        return taken


def _records(group: list[tuple[list[Any], int | None, Read]]) -> int:
    return sum(len(messages) for messages, _epoch, _read in group)


def _follow(run: list[ReadFetch]) -> bool:
    """Whether each fetch starts past the one before (offsets may skip: compaction, markers)."""
    return all(b[0][0].offset > a[0][-1].offset for a, b in itertools.pairwise(run))


def _seen(read: Read) -> None:
    """A read's error is its fetch's, raised where the fetch is applied; a fetch never applied
    (its session ended first) must not leave the error unretrieved, for asyncio to log when the
    task is collected."""
    if not read.cancelled():
        read.exception()


def stopping(err: BaseException) -> None:
    """Raise CancelledError when the current task was asked to stop: a retry loop that caught an
    error its cleanup raised on the way out (a part file that could not be written) must not
    swallow the cancellation and go on with a new session."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from err
