"""``GET /metrics`` (Prometheus text format, via prometheus-client) and ``GET /v1/status`` (JSON).

Most figures are read from the engine when scraped (a collector), so the hot paths pay nothing for
them; two histograms are observed as things happen: request latency by route, and events per
applied batch. The registry is per app, never the process-global one (tests run many apps).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from views.timefmt import format_optional, format_time


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Histogram(
            "tallyd_request_seconds",
            "HTTP request latency by route (method and path template) and status class.",
            ["route", "status"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.batch_events = Histogram(
            "tallyd_batch_events",
            "Events per applied batch, by source.",
            ["source"],
            registry=self.registry,
            buckets=(1, 10, 100, 1_000, 10_000, 50_000, 100_000, 500_000),
        )

    def watch(self, engine: Any) -> None:
        self.registry.register(_EngineCollector(engine))


class _EngineCollector:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        status = engine_status(self.engine)
        counters = {
            "tallyd_events_accepted": ("Events applied, by source.", "accepted"),
            "tallyd_events_rejected": ("Invalid events kept aside, by source.", "rejected"),
        }
        for name, (text, field) in counters.items():
            counter = CounterMetricFamily(name, text, labels=["source"])
            for source, s in status["sources"].items():
                counter.add_metric([source], s[field])
            yield counter
        gauges = {
            "tallyd_watermark_seconds": ("Newest event time applied (epoch s).", "watermark_ms"),
            "tallyd_freshness_lag_seconds": (
                "Server clock minus the watermark: how far behind real time a source is.",
                "lag_s",
            ),
        }
        for name, (text, field) in gauges.items():
            family = GaugeMetricFamily(name, text, labels=["source"])
            scale = 1000 if field == "watermark_ms" else 1
            for source, s in status["sources"].items():
                if s[field] is not None:
                    family.add_metric([source], s[field] / scale)
            yield family
        kafka_lag = GaugeMetricFamily(
            "tallyd_kafka_lag_records",
            "Records between a partition's position and its high watermark.",
            labels=["source", "partition"],
        )
        for source, s in status["sources"].items():
            for part, p in s.get("partitions", {}).items():
                if p.get("lag") is not None:
                    kafka_lag.add_metric([source, part], p["lag"])
        yield kafka_lag
        view_gauges = {
            "tallyd_view_groups": ("Distinct group keys alive.", "groups"),
            "tallyd_view_buckets": ("Time buckets alive.", "buckets"),
            "tallyd_view_pairs": ("(group, bucket) pairs held.", "pairs"),
            "tallyd_view_state_bytes": (
                "Bytes of the view's state arrays (pairs and aggregates), measured.",
                "state_bytes",
            ),
        }
        for name, (text, field) in view_gauges.items():
            family = GaugeMetricFamily(name, text, labels=["view"])
            for view, v in status["views"].items():
                family.add_metric([view], v[field])
            yield family
        view_counters = {
            "tallyd_view_late_events": "Events too late for their window (not applied).",
            "tallyd_view_overflow_events": "Events folded into __other__ by max_groups.",
            "tallyd_view_unmatched_retractions": "Retractions of rows that were never added.",
            "tallyd_view_out_of_range_events": "Events whose windows the view cannot place.",
        }
        fields = ("late", "overflow", "unmatched", "out_of_range")
        for (name, text), field in zip(view_counters.items(), fields, strict=True):
            per_view = CounterMetricFamily(name, text, labels=["view"])
            for view, v in status["views"].items():
                per_view.add_metric([view], v[field])
            yield per_view
        snap = status["snapshot"]
        for name, text, value in (
            ("tallyd_snapshot_duration_seconds", "Duration of the last snapshot.", "seconds"),
            ("tallyd_snapshot_bytes", "Size of the last snapshot.", "bytes"),
            ("tallyd_snapshot_age_seconds", "Time since the last snapshot.", "age_s"),
        ):
            if snap.get(value) is not None:
                yield GaugeMetricFamily(name, text, value=snap[value])
        ingest = status["ingest"]
        yield GaugeMetricFamily(
            "tallyd_wal_bytes", "Write-ahead log on disk.", value=ingest["wal_bytes"]
        )
        for name, text, field in (
            ("tallyd_wal_commits", "Group commits (one write and fsync each).", "wal_commits"),
            ("tallyd_wal_committed_bytes", "Bytes those commits wrote.", "wal_committed_bytes"),
            (
                "tallyd_wal_commit_seconds",
                "Time those commits spent writing and fsyncing: the disk's share of an ack.",
                "wal_commit_seconds",
            ),
        ):
            yield CounterMetricFamily(name, text, value=ingest[field])
        yield GaugeMetricFamily(
            "tallyd_ingest_backlog_bytes",
            "Request bodies being decoded, logged and applied.",
            value=ingest["backlog_bytes"],
        )
        yield CounterMetricFamily(
            "tallyd_ingest_shed",
            "Ingest requests refused with 503 because of the backlog.",
            value=ingest["shed"],
        )
        answers = status["answers"]
        yield CounterMetricFamily(
            "tallyd_answer_cache_hits", "Queries answered from the cache.", value=answers["hits"]
        )
        yield CounterMetricFamily(
            "tallyd_answer_cache_misses", "Queries computed.", value=answers["misses"]
        )
        live = status["live"]
        yield GaugeMetricFamily(
            "tallyd_live_subscribers",
            "Live subscriptions: each question of each open SSE stream.",
            value=live["subscribers"],
        )
        yield GaugeMetricFamily(
            "tallyd_live_streams",
            "Open SSE connections (a /v1/live stream of several questions counts once).",
            value=live["streams"],
        )
        yield CounterMetricFamily(
            "tallyd_live_dropped", "SSE subscribers dropped for not reading.", value=live["dropped"]
        )


def engine_status(engine: Any) -> dict[str, Any]:
    """What ``/v1/status`` answers and ``/metrics`` exposes, read now."""
    now = time.time()
    registry = engine.registry
    sources = {}
    for name, state in registry.sources.items():
        watermark = engine.watermark(name)
        status = engine.sources[name].status()
        sources[name] = {
            "kind": state.spec.kind,
            "accepted": state.accepted,
            "rejected": state.rejected,
            "watermark": format_optional(watermark),
            "watermark_ms": watermark,
            "lag_s": None if watermark is None else round(now - watermark / 1000, 3),
            "healthy": status.get("healthy", True),
            "partitions": status.get("partitions", {}),  # this member's
        }
        if status.get("cluster") is not None:  # who owns every partition of the topic, and where
            sources[name]["cluster"] = status["cluster"]
    views = {}
    for name, view in registry.views.items():
        views[name] = {**view.stats(), "state_bytes": view.nbytes()}
    last = engine.committer.last_snapshot or {}
    taken = engine.committer.last_snapshot_at
    wal = engine.http.wal
    wal_dir = Path(engine.settings.data_dir) / "wal"
    wal_bytes = sum(p.stat().st_size for p in wal_dir.glob("wal-*.log")) if wal_dir.exists() else 0
    return {
        "ready": engine.ready.is_set(),
        "sources": sources,
        "views": views,
        "snapshot": {
            "file": last.get("file"),
            "seconds": last.get("seconds"),
            "bytes": last.get("bytes"),
            "at": None if taken is None else format_time(int(taken * 1000)),
            "age_s": None if taken is None else round(now - taken, 3),
        },
        "ingest": {
            "wal_bytes": wal_bytes,
            "wal_commits": wal.commits,
            "wal_committed_bytes": wal.committed_bytes,
            "wal_commit_seconds": round(wal.commit_seconds, 6),
            "backlog_bytes": engine.http.backlog,
            "shed": engine.http.shed,
        },
        "answers": {"hits": engine.answers.hits, "misses": engine.answers.misses},
        "live": {
            "topics": len(engine.hub.topics),
            "subscribers": sum(len(t.subscribers) for t in engine.hub.topics.values()),
            "streams": engine.hub.streams,
            "dropped": engine.hub.dropped,
        },
    }
