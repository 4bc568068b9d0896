"""The server's runtime root: config + registry + committer + sources, and the background work
around them, started and stopped (cancelled *and awaited*) in one place: ``engine_context``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shlex
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from api import logs
from api.auth import AuthError, parse_auth
from api.cache import AnswerCache
from api.live import Hub
from api.metrics import Metrics
from api.settings import Settings, config_dir
from ingest.cluster import advertised, cluster_secret
from ingest.commit import Committer, Recovery
from ingest.decode import Decoder
from ingest.files import FileSource
from ingest.http import HttpLog, HttpSource
from ingest.idempotency import KeyLimits
from ingest.kafka import KafkaSource
from ingest.source import Source
from ingest.wal import Retain, WalCorrupt
from views.config import Config, ConfigError, load
from views.plan import NotLive, Plan, diff, history, source_changes
from views.registry import Backfill, Registry
from views.spec import SourceSpec

log = logging.getLogger("tallyd.engine")


class Engine:
    def __init__(self, config: Config, settings: Settings, manage_gc: bool = False) -> None:
        self.config = config
        self.settings = settings
        self.data_dir = data_dir = Path(settings.data_dir)
        # [cluster]: the address the Kafka sources advertise to their groups (ingest.cluster)
        self.advertise: str | None = None
        self.cluster_secret: bytes | None = None  # what members present to each other
        if config.cluster is not None:
            self.advertise = advertised(config.cluster, settings.listen, config.path)
            self.cluster_secret = cluster_secret(config.cluster, config.path)
        self.registry = Registry(config.sources, config.views, settings.keep_rejected)
        self.committer = Committer(self.registry, data_dir, frozenset())
        self.committer.manage_gc = manage_gc  # the server process's heap; not a test runner's
        self.http = HttpLog(
            self.committer, data_dir, settings.wal_segment_bytes, settings.max_ingest_backlog_bytes
        )
        self.http.receipt_ttl_ms = settings.idempotency_ttl
        if settings.retain_events:  # the HTTP log is kept: new and changed views backfill
            self.http.retain = Retain(settings.retain_events, settings.retain_events_bytes)
        self.registry.history = history(config)  # ... and always from Kafka topics
        self._backfills: dict[str, asyncio.Task[None]] = {}  # view -> its reader
        self.backfill_chunk_bytes = settings.backfill_chunk_bytes  # log read per step
        self._backfill_began: dict[str, tuple[float, int]] = {}  # view -> (when, read then)
        self._backfill_failed: dict[str, str] = {}  # view -> why its reader stopped
        self.http.max_receipts = settings.idempotency_max_keys
        self.sources: dict[str, Source] = {
            name: self._source(spec) for name, spec in config.sources.items()
        }
        self.committer.detached = frozenset(n for n, s in self.sources.items() if s.detached)
        self.streams_by_token: dict[str, int] = {}  # open SSE streams per token (a limit)
        self.buckets: dict[str, tuple[float, float]] = {}  # token -> (allowance, at): rates
        self.answers = AnswerCache(settings.answer_cache_bytes)
        # [cluster]: each peer's partitions of a view as last sent, with its ETag (api.cluster)
        self.peer_states: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        # [cluster]: one HTTP client for every call to the peers (kept-alive connections)
        self.peer_session: aiohttp.ClientSession | None = None
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
        self._snapshots: asyncio.Task[None] | None = None
        self._summary: asyncio.Task[None] | None = None
        self.snapshots_taken = 0  # by this process, for the periodic summary
        self._started: list[Source] = []

    def _source(self, spec: SourceSpec) -> Source:
        settings = self.settings
        decoder = Decoder(spec, settings.max_line_bytes, settings.max_future)
        base = config_dir(self.config.path)  # relative paths in the config: next to it
        if spec.kind == "kafka":
            configured = spec.options["state_dir"]
            state_dir = base / configured if configured else self.data_dir / "kafka" / spec.name
            limits = KeyLimits(self.settings.idempotency_ttl, self.settings.idempotency_max_keys)
            return KafkaSource(spec, self.committer, state_dir, decoder, self.advertise, limits)
        if spec.kind == "file":
            return FileSource(spec, self.committer, decoder, base)
        return HttpSource(spec, self.registry, self.http, decoder)

    async def start(self) -> None:
        """Restore (in a thread: nothing else touches the registry until ``ready``), then serve."""
        try:
            result = await asyncio.to_thread(self.committer.recover, self.http)
        except Exception as err:  # any failure to restore must stop the server, loudly
            self.fatal_reason = f"cannot restore state from {self.data_dir}: {err}"
            if self.committer.skipped:
                self.fatal_reason += f" (snapshots not used: {'; '.join(self.committer.skipped)})"
            if isinstance(err, WalCorrupt):
                self.fatal_reason += f"; {self._repair_hint()}"
            log.error("event=restore_failed error=%r", self.fatal_reason)
            self.fatal.set()
            return
        self.recovery = {
            "snapshot": result.snapshot,
            "problems": result.problems,
            "replayed_batches": result.replayed,
            "torn_tail_bytes": result.torn_bytes,
            "notes": result.notes,
            "state_seconds": round(result.state_seconds, 4),
            "replay_seconds": round(result.replay_seconds, 4),
        }
        self._log_restored(result)
        self.http.start()
        self._start_backfills()  # those the snapshot was in the middle of, and new views'
        self._snapshots = asyncio.create_task(self._snapshot_loop(), name="tallyd-snapshots")
        self._summary = asyncio.create_task(self._summary_loop(), name="tallyd-summary")
        for source in self.sources.values():
            await source.start()
            self._started.append(source)
        self.ready.set()

    def _repair_hint(self) -> str:
        return (
            f"'tallyd repair --config {shlex.quote(self.config.path)} --data-dir "
            f"{shlex.quote(str(self.data_dir))}' keeps the newest usable snapshot and the log "
            "records that continue it, and moves the rest aside (nothing is deleted; add "
            "--dry-run to see what it would keep and drop first)"
        )

    def _log_restored(self, result: Recovery) -> None:
        for problem in result.problems:
            log.warning("event=snapshot_skipped reason=%r", problem)
        for note in result.notes:
            log.warning("event=view_state note=%r", note)
        if result.snapshot is None and not result.replayed and not result.torn_bytes:
            log.info("event=restored data_dir=%s state='empty: nothing to restore'", self.data_dir)
            return
        log.info(
            "event=restored data_dir=%s snapshot=%s replayed_batches=%d torn_tail_bytes=%d "
            "position=%d state_seconds=%.3f replay_seconds=%.3f",
            self.data_dir,
            result.snapshot,
            result.replayed,
            result.torn_bytes,
            self.http.position,
            result.state_seconds,
            result.replay_seconds,
        )

    def watermark(self, name: str) -> int | None:
        return self.sources[name].watermark(time.time())

    async def apply_config(self, new: Config) -> Plan:
        """Apply ``new`` without a restart, in one step: views added or changed (backfilling
        where their source has history, else an added one starts empty), removed, their options
        changed; sources added, removed, or restarted when how they connect changed. Then the
        backfills' readers start and a snapshot is taken, so that a restart with the new file
        starts from here (a crash between the step and the snapshot: the views new since the
        snapshot before backfill at the restart, or, with no history kept, start empty and take
        the log replayed after it, so they may count a few events from just before the apply).
        ``NotLive`` (and nothing changed) when something in it changes only at a restart."""
        # Token scopes must name views that exist (the server's secrets are its own: not reread)
        parse_auth(new.auth, new.path, list(new.views), list(new.sources), read_secrets=False)
        plan = diff(self.config, new, f"the running config ({self.config.path})", new.path)
        if plan.not_live:
            raise NotLive(plan, plan.not_live)
        if plan.changes:
            old = self.config.sources
            # removed, or restarted: how it connects changed (not merely the fields its views
            # read, which follow the views: a view removed must not restart its source)
            gone = [
                n for n in old if n not in new.sources or source_changes(old[n], new.sources[n])
            ]
            readers = [  # a backfill reads through its source: restarted with it
                (view, task)
                for view, task in self._backfills.items()
                if view not in self.registry.backfills
                or self.registry.backfills[view].view.spec.source in gone
            ]
            for view, task in readers:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                self._backfills.pop(view, None)
            for name in gone:  # removed, or restarted: stopped first (Kafka saves its parts)
                source = self.sources[name]
                if source in self._started:
                    await source.stop()
                    self._started.remove(source)
            fresh = {
                name: self._source(spec)
                for name, spec in new.sources.items()
                if name not in old or name in gone
            }
            async with self.committer.step() as step:
                step.reconfigure(new.views, new.sources if old != new.sources else None)
                self.sources = {n: fresh[n] if n in fresh else self.sources[n] for n in new.sources}
                self.committer.detached = frozenset(
                    n for n, s in self.sources.items() if s.detached
                )
                self.registry.history = history(new)
                self.config = dataclasses.replace(new, path=self.config.path)
            for source in fresh.values():
                await source.start()
                self._started.append(source)
            self._start_backfills()
            await self.snapshot()
        return plan

    def _start_backfills(self) -> None:
        """A reader for each view filling from history that has none running."""
        for name in self.registry.backfills:
            running = self._backfills.get(name)
            if running is not None and not running.done():
                continue
            self._backfill_failed.pop(name, None)
            filling = self.registry.backfills[name]
            self._backfill_began[name] = (time.monotonic(), self._progress(filling)[0])
            reader = self.sources[filling.view.spec.source].backfill(
                name, self.backfill_chunk_bytes
            )
            task = asyncio.create_task(reader, name=f"tallyd-backfill-{name}")
            task.add_done_callback(partial(self._backfill_ended, name))
            self._backfills[name] = task

    def _backfill_ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self._backfills.get(name) is task:
            del self._backfills[name]
        if not task.cancelled() and task.exception() is not None:
            error = str(task.exception())
            self._backfill_failed[name] = error  # shown with its progress until it is re-applied
            log.error("event=backfill_failed view=%s error=%r", name, error)
            return
        # A view changed again while its reader ran: the new backfill needs a reader.
        if name in self.registry.backfills and not task.cancelled():
            self._start_backfills()

    async def history_sizes(self) -> dict[str, str]:
        """Per source whose views can backfill, how much history a new view would read (what
        ``tallyd plan --url`` shows beside each added or changed view)."""
        return {
            name: await self.sources[name].history_size() for name in sorted(self.registry.history)
        }

    def _progress(self, filling: Backfill) -> tuple[int, int]:
        """(records read, records to read) over the parts whose history it reads: those of the
        HTTP log (one part, up to the log's applied position) or of the topic's partitions (up
        to each one's live position)."""
        source = filling.view.spec.source
        live = (  # HTTP: log records; Kafka: offsets; files: bytes
            {"": self.http.position}
            if self.config.sources[source].kind == "http"
            else self.registry.sources[source].positions
        )
        read = total = 0
        for part, began in filling.began.items():
            done = filling.positions.get(part, began) - began
            read += done
            total += max(live.get(part, began) - began, done)
        return read, total

    def backfill_progress(self, name: str) -> dict[str, Any]:
        """How far a view's backfill is: log records read of those to read, events applied, and
        when, at the pace since its reader started, it should be done."""
        filling = self.registry.backfills[name]
        read, total = self._progress(filling)
        started, read_then = self._backfill_began.get(name, (time.monotonic(), read))
        pace = (read - read_then) / max(time.monotonic() - started, 1e-9)
        eta = None if pace <= 0 else round((total - read) / pace, 1)
        return {
            "replaces": filling.replaces,
            "read": read,
            "total": total,
            "unit": "bytes"
            if self.config.sources[filling.view.spec.source].kind == "file"
            else "records",
            "events": filling.events,
            "eta_seconds": eta,
            "failed": self._backfill_failed.get(name),
        }

    async def reload(self) -> None:
        """SIGHUP: read the config file again and apply it; what happened is logged."""
        try:
            plan = await self.apply_config(load(self.config.path))
        except (ConfigError, AuthError, OSError, NotLive) as err:
            log.error("event=config_refused file=%s error=%r", self.config.path, str(err))
            return
        log.info(
            "event=config_applied file=%s changes=%d %s",
            self.config.path,
            len(plan.entries),
            " ".join(f"{e.kind}:{e.name}:{e.action}" for e in plan.entries),
        )

    def config_file_note(self) -> str | None:
        """None if the config file holds what runs now; else why a restart would differ."""
        try:
            on_disk = load(self.config.path).raw
        except (ConfigError, OSError) as err:
            return f"the config file cannot be read ({err}): a restart needs the applied config"
        if on_disk == self.config.raw:
            return None
        return (
            f"{self.config.path} differs from the config applied: a restart reads the file, "
            "so write the applied config there too"
        )

    async def snapshot(self) -> dict[str, Any]:
        """The main snapshot: every source's state but the detached ones', with the WAL's."""
        if self.http.partly_applied:
            raise OSError(
                "no snapshot after a failed apply: the views may hold part of events the log "
                "position does not cover yet; restart the server, which replays the log"
            )
        info = await self.committer.snapshot(self.http)
        self.snapshots_taken += 1
        return info

    def totals(self) -> logs.Totals:
        registry = self.registry
        last = self.committer.last_snapshot or {}
        return logs.Totals(
            accepted=sum(s.accepted for s in registry.sources.values()),
            rejected=sum(s.rejected for s in registry.sources.values()),
            late=sum(v.counter("late") for v in registry.views.values()),
            snapshots=self.snapshots_taken,
            last_snapshot_s=last.get("seconds"),
            wal_bytes=self.http.wal.size(),
        )

    async def _summary_loop(self) -> None:
        before, at = self.totals(), time.monotonic()
        while True:
            await asyncio.sleep(self.settings.summary_every / 1000)
            now, now_at = self.totals(), time.monotonic()
            line = logs.summary(before, now, now_at - at)
            if line is not None:
                log.info(line)
            before, at = now, now_at

    async def _snapshot_loop(self) -> None:
        taken_at = self.registry.version
        while True:
            await asyncio.sleep(self.settings.snapshot_every / 1000)
            for source in self.sources.values():
                try:
                    await source.save()
                except OSError as err:
                    log.error("event=part_save_failed error=%r", str(err))
            if self.registry.version != taken_at:
                version = self.registry.version  # a change during the snapshot: next round
                try:
                    await self.snapshot()
                    taken_at = version
                except OSError as err:
                    log.error("event=snapshot_failed error=%r", str(err))

    async def stop(self) -> None:
        await self.hub.close()
        readers = list(self._backfills.values())
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        loops = [t for t in (self._snapshots, self._summary) if t is not None]
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for source in self._started:  # Kafka sources write their part files as they stop
            await source.stop()
        self._started.clear()
        if self.ready.is_set() and self.http.failed is None:
            with contextlib.suppress(OSError):
                await self.snapshot()  # on SIGTERM: restart without replaying the WAL
        await self.http.stop()
        if self.peer_session is not None:
            await self.peer_session.close()
            self.peer_session = None


ENGINE = web.AppKey("engine", Engine)


async def engine_context(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    starter = asyncio.create_task(engine.start(), name="tallyd-restore")
    yield
    starter.cancel()
    await asyncio.gather(starter, return_exceptions=True)
    await engine.stop()
