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

Mutations happen under the one pipeline lock, in bounded batches (``max_batch`` records), with a
yield to the event loop after each, so queries keep being answered while a backlog is consumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from ingest.changes import ChangeDecoder
from ingest.decode import Decoder
from ingest.snapshots import atomic_write
from views import snapshot
from views.config import KAFKA_TIMESTAMP
from views.registry import Batch, Registry
from views.spec import SourceSpec

log = logging.getLogger("tallyd.kafka")

HEALTH_EVERY = 2.0  # seconds between broker health probes
# Records applied per turn of the event loop. A query needs several turns (read, handle, write),
# so its worst wait is a few of these: 1,000 records into four views is ~25 ms here, where 5,000
# per turn let single queries wait about 0.5 s (benchmarks/README.md).
APPLY_CHUNK = 1000
PROBE_TIMEOUT = 3.0


def part_name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


class KafkaSource:
    def __init__(
        self,
        spec: SourceSpec,
        registry: Registry,
        lock: asyncio.Lock,
        state_dir: Path,
        decoder: Decoder,
    ) -> None:
        self.spec = spec
        self.options = spec.options
        self.registry = registry
        self.lock = lock
        self.state_dir = state_dir
        self.changes = ChangeDecoder(decoder, spec.format, spec.time_field == KAFKA_TIMESTAMP)
        self.consumer: AIOKafkaConsumer | None = None
        self.owned: set[str] = set()
        self.saved: dict[str, int] = {}  # part -> position in its part file
        self.checking: set[TopicPartition] = set()  # restored here; end not yet confirmed
        self.state = "starting"
        self.error: str | None = None
        self.partition_errors: dict[str, str] = {}
        self.last_seen: dict[str, float] = {}  # part -> wall time of its last record
        self.tombstones = 0

    # -- status ---------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self.state == "running" and not self.partition_errors

    def status(self) -> dict[str, Any]:
        source = self.registry.sources[self.spec.name]
        partitions = {}
        for part in sorted(self.owned | set(self.partition_errors)):
            position = source.positions.get(part)
            topic, _, number = part.rpartition(":")
            tp = TopicPartition(topic, int(number))
            consumer = self.consumer
            # The high watermark is known only for partitions the consumer has assigned now
            # (during a rebalance ``owned`` and the assignment briefly differ).
            end = (
                consumer.highwater(tp)
                if consumer is not None and tp in consumer.assignment()
                else None
            )
            partitions[part] = {
                "position": position,
                "end": end,  # the partition's high watermark, as last fetched
                "lag": None if end is None else max(0, end - (position or 0)),
                "watermark": source.watermarks.get(part),
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
            "tombstones": self.tombstones,
        }

    def watermark(self, now: float) -> int | None:
        """The view watermark: the minimum over assigned partitions that are not idle (no record
        for ``idle`` ms), so one quiet partition cannot hold freshness back forever."""
        source = self.registry.sources[self.spec.name]
        idle = self.options["idle"] / 1000
        marks = {p: w for p, w in source.watermarks.items() if p in self.owned}
        active = [w for p, w in marks.items() if now - self.last_seen.get(p, 0.0) < idle]
        pool = active or list(marks.values())
        return min(pool) if pool else None

    # -- part files -----------------------------------------------------------------------------

    def _path(self, part: str) -> Path:
        topic, _, partition = part.rpartition(":")
        return self.state_dir / f"{topic}-{partition}.tsnap"

    async def save(self, parts: list[str] | None = None, force: bool = False) -> int:
        """Write part files for owned partitions that moved since their last file. Returns count."""
        written = 0
        for part in list(self.owned if parts is None else parts):
            async with self.lock:
                if part not in self.owned:
                    continue
                position = self.registry.sources[self.spec.name].positions.get(part)
                if position is None or (not force and self.saved.get(part) == position):
                    continue
                # Built and encoded in a worker thread while the lock keeps writers out;
                # queries only read, so they keep being answered on the loop meanwhile.
                data = await asyncio.to_thread(self._encode_part, part)
            await asyncio.to_thread(atomic_write, self._path(part), data)
            self.saved[part] = position
            written += 1
        if written and self.consumer is not None:
            await self._commit_for_lag()
        return written

    def _encode_part(self, part: str) -> bytes:
        return snapshot.encode(self.registry.part_state(self.spec.name, part))

    async def _commit_for_lag(self) -> None:
        """Best effort, bounded: the part files are the truth, this only feeds lag monitoring."""
        assert self.consumer is not None
        offsets = {
            tp: self.saved[part_name(tp)]
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

    async def acquire(self, assigned: list[TopicPartition]) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        restored: dict[TopicPartition, int] = {}
        fresh: list[TopicPartition] = []
        for tp in assigned:
            part = part_name(tp)
            if part in self.owned:
                continue
            try:
                state = await asyncio.to_thread(self._load, part)
            except (snapshot.SnapshotError, ValueError) as err:
                self._fail(tp, f"part file {self._path(part).name} is unusable: {err}")
                continue
            async with self.lock:
                if state is not None:
                    for note in self.registry.load_part(self.spec.name, part, state):
                        log.warning("event=part_note source=%s note=%r", self.spec.name, note)
                else:
                    self.registry.drop_part(self.spec.name, part)
                self.owned.add(part)
            if state is not None and state.get("position") is not None:
                restored[tp] = self.saved[part] = int(state["position"])
            else:
                fresh.append(tp)
        # Every partition gets its position before anything is awaited on the broker: the
        # fetcher must never see an assigned partition without one (auto_offset_reset="none").
        for tp, position in restored.items():
            consumer.seek(tp, position)
        if fresh:  # marks them for reset synchronously, then waits for the offsets
            if self.options["start"] == "earliest":
                await consumer.seek_to_beginning(*fresh)
            else:
                await consumer.seek_to_end(*fresh)
        await self._check_positions(restored, fresh)
        log.info(
            "event=assigned source=%s partitions=%s restored=%s",
            self.spec.name,
            ",".join(part_name(tp) for tp in assigned),
            ",".join(f"{part_name(tp)}@{p}" for tp, p in restored.items()) or "none",
        )

    async def _check_positions(
        self, restored: dict[TopicPartition, int], fresh: list[TopicPartition]
    ) -> None:
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
        if self.options["start"] == "latest":
            # Pin where "latest" was, so a restart before the first record does not skip ahead.
            positions = self.registry.sources[self.spec.name].positions
            for tp in fresh:
                positions[part_name(tp)] = await self.consumer.position(tp)

    def _fail(self, tp: TopicPartition, reason: str) -> None:
        part = part_name(tp)
        self.partition_errors[part] = reason
        log.error("event=partition_error source=%s part=%s error=%r", self.spec.name, part, reason)
        if self.consumer is not None:
            self.consumer.pause(tp)

    async def release(self, revoked: list[TopicPartition]) -> None:
        parts = [part_name(tp) for tp in revoked if part_name(tp) in self.owned]
        await self.save(parts, force=True)
        async with self.lock:
            for part in parts:
                self.registry.drop_part(self.spec.name, part)
                self.owned.discard(part)
                self.saved.pop(part, None)
                self.last_seen.pop(part, None)
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
        )
        listener = _Listener(self)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()  # a failed start still holds connections and tasks
            raise
        self.consumer = consumer
        try:
            consumer.subscribe(topics=self.options["topics"], listener=listener)
            self.state, self.error = "running", None
            health = asyncio.create_task(self._probe(consumer))
            try:
                await self._consume(consumer)
            finally:
                health.cancel()
                await asyncio.gather(health, return_exceptions=True)
        finally:
            await self.release([tp for tp in consumer.assignment()])
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()
            self.consumer = None

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
        while True:
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
            for tp, messages in records.items():
                if await self._apply_table(tp, messages):
                    continue
                for start in range(0, len(messages), APPLY_CHUNK):
                    await self._apply(tp, messages[start : start + APPLY_CHUNK])
                    await asyncio.sleep(0)  # let queries in between batches

    async def _apply_table(self, tp: TopicPartition, messages: list[Any]) -> bool:
        """Many clean JSON records at once: column-wise, the heavy half in a worker thread."""
        table = self.changes.table([m.value for m in messages])
        if table is None:
            return False
        part = part_name(tp)
        batch = Batch(self.spec.name, [], messages[-1].offset + 1, part=part, table=table)
        positions = self.registry.sources[self.spec.name].positions
        before = positions.get(part)
        prepared = await asyncio.to_thread(self.registry.prepare, batch)
        async with self.lock:
            if not self._owned(part):
                return True  # revoked while the fetch was in flight: the new owner reads it
            position = positions.get(part)
            if position is not None and messages[0].offset < position:
                # Partly counted already (a hand-over reloaded the part meanwhile): the row
                # path drops exactly the counted records and applies the rest.
                return False
            # Prepared against the part as it was; if a hand-over reloaded it meanwhile,
            # prepare again against what is there now.
            self.registry.apply(batch, prepared if position == before else None)
        self.last_seen[part] = time.time()
        return True

    def _owned(self, part: str) -> bool:
        return part in self.owned and part not in self.partition_errors

    async def _apply(self, tp: TopicPartition, messages: list[Any]) -> None:
        part = part_name(tp)
        async with self.lock:
            if not self._owned(part):
                return  # revoked while the fetch was in flight: the new owner reads it again
            # Records below the part's position are counted already (the part was handed over
            # and reloaded while this fetch was in flight): drop exactly those, keep the rest.
            # Skipping the whole batch instead would lose its uncounted tail.
            position = self.registry.sources[self.spec.name].positions.get(part)
            if position is not None:
                messages = [m for m in messages if m.offset >= position]
            if not messages:
                return
            records = [(m.offset, m.timestamp, m.value) for m in messages]
            decoded = self.changes.decode(part, records)
            batch = Batch(
                self.spec.name,
                decoded.events,
                messages[-1].offset + 1,
                decoded.poison,
                part,
                decoded.weights if self.spec.retracting else None,
            )
            self.registry.apply(batch)
        self.tombstones += decoded.tombstones
        self.last_seen[part] = time.time()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.source.release(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.source.acquire(list(assigned))
