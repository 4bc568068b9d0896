"""The server's runtime root: config + registry + pipeline, and the background tasks around them,
started and stopped (cancelled *and awaited*) in one place: ``engine_context``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from api.cache import AnswerCache
from api.live import Hub
from api.metrics import Metrics
from api.settings import Settings
from ingest.decode import Decoder
from ingest.files import FileSource
from ingest.kafka import KafkaSource
from ingest.pipeline import Pipeline
from views.config import Config
from views.registry import Registry

log = logging.getLogger("tallyd.engine")


class Engine:
    def __init__(self, config: Config, settings: Settings, manage_gc: bool = False) -> None:
        self.config = config
        self.settings = settings
        self.registry = Registry(config.sources, config.views, settings.keep_rejected)
        self.pipeline = Pipeline(self.registry, Path(settings.data_dir), settings.wal_segment_bytes)
        self.pipeline.manage_gc = manage_gc  # the server process's heap; not a test runner's
        self.pipeline.receipt_ttl_ms = settings.idempotency_ttl
        self.registry.max_receipts = settings.idempotency_max_keys
        self.keys_in_flight: set[str] = set()  # Idempotency-Key requests being committed
        self.ingest_bytes = 0  # request bodies read and not yet answered (the ingest backlog)
        self.ingest_peak = 0
        self.shed = 0  # ingest requests refused with 503 because of that backlog
        self.streams_by_token: dict[str, int] = {}  # open SSE streams per token (a limit)
        self.buckets: dict[str, tuple[float, float]] = {}  # token -> (allowance, at): rates
        self.decoders = {
            name: Decoder(spec, settings.max_line_bytes, settings.max_future)
            for name, spec in config.sources.items()
        }
        self.answers = AnswerCache(settings.answer_cache_bytes)
        self.metrics = Metrics()
        self.metrics.watch(self)
        batch_events = self.metrics.batch_events
        self.registry.observers.append(
            lambda batch: batch_events.labels(batch.source).observe(len(batch))
        )
        self.hub = Hub()
        self.ready = asyncio.Event()
        self.fatal = asyncio.Event()
        self.fatal_reason: str | None = None
        self.recovery: dict[str, object] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.kafka = {
            name: KafkaSource(
                spec,
                self.registry,
                self.pipeline.lock,
                Path(spec.options["state_dir"] or Path(settings.data_dir) / "kafka" / name),
                self.decoders[name],
            )
            for name, spec in config.sources.items()
            if spec.kind == "kafka"
        }
        base = Path(config.path).resolve().parent  # relative file paths: next to the config
        self.files = {
            name: FileSource(spec, self.registry, self.pipeline.lock, self.decoders[name], base)
            for name, spec in config.sources.items()
            if spec.kind == "file"
        }

    async def start(self) -> None:
        """Restore (in a thread: nothing else touches the registry until ``ready``), then serve."""
        try:
            result = await asyncio.to_thread(self.pipeline.recover)
        except Exception as err:  # any failure to restore must stop the server, loudly
            self.fatal_reason = f"cannot restore state from {self.settings.data_dir}: {err}"
            log.error("event=restore_failed error=%r", self.fatal_reason)
            self.fatal.set()
            return
        self.recovery = {
            "snapshot": result.snapshot,
            "problems": result.problems,
            "replayed_batches": result.replayed,
            "torn_tail_bytes": result.torn_bytes,
            "notes": result.notes,
        }
        for problem in result.problems:
            log.warning("event=snapshot_skipped reason=%r", problem)
        for note in result.notes:
            log.warning("event=view_state note=%r", note)
        log.info(
            "event=restored snapshot=%s replayed_batches=%d torn_tail_bytes=%d position=%d",
            result.snapshot,
            result.replayed,
            result.torn_bytes,
            self.registry.position,
        )
        self.pipeline.start()
        self._tasks.append(asyncio.create_task(self._snapshot_loop(), name="tallyd-snapshots"))
        for name, source in self.kafka.items():
            self._tasks.append(asyncio.create_task(source.run(), name=f"tallyd-kafka-{name}"))
        for name, files in self.files.items():
            self._tasks.append(asyncio.create_task(files.run(), name=f"tallyd-file-{name}"))
        self.ready.set()

    def source_status(self, name: str) -> dict[str, Any]:
        kafka = self.kafka.get(name)
        if kafka is not None:
            return kafka.status()
        if name in self.files:
            return self.files[name].status()
        return {"kind": self.config.sources[name].kind, "state": "running", "healthy": True}

    def watermark(self, name: str) -> int | None:
        kafka = self.kafka.get(name)
        if kafka is not None:
            return kafka.watermark(time.time())
        return self.registry.sources[name].watermark

    async def _snapshot_loop(self) -> None:
        taken_at = self.registry.version
        while True:
            await asyncio.sleep(self.settings.snapshot_every / 1000)
            for source in self.kafka.values():
                try:
                    await source.save()
                except OSError as err:
                    log.error("event=part_save_failed error=%r", str(err))
            if self.registry.version != taken_at:
                version = self.registry.version  # a change during the snapshot: next round
                try:
                    await self.pipeline.snapshot()
                    taken_at = version
                except OSError as err:
                    log.error("event=snapshot_failed error=%r", str(err))

    async def stop(self) -> None:
        await self.hub.close()
        for task in self._tasks:  # Kafka sources write their part files as they stop
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.ready.is_set() and self.pipeline.failed is None:
            with contextlib.suppress(OSError):
                await self.pipeline.snapshot()  # on SIGTERM: restart without replaying the WAL
        await self.pipeline.stop()


ENGINE = web.AppKey("engine", Engine)


async def engine_context(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    starter = asyncio.create_task(engine.start(), name="tallyd-restore")
    yield
    starter.cancel()
    await asyncio.gather(starter, return_exceptions=True)
    await engine.stop()
