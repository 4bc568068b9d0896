"""Every server setting in one declarative table: name, default, type, help. Read once at start
from the config file's ``[server]`` table (and CLI overrides); nothing reads ``os.environ`` ad hoc.
``tests/api/test_docs.py`` fails if a setting is missing from the README."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from views.durations import parse_duration, parse_duration_or_off


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str


def _positive_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{value!r} is not a positive integer")
    return value


def _listen(value: Any) -> str:
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT, e.g. 127.0.0.1:8080")
    return str(value)


def _duration(value: Any) -> int:
    return parse_duration(str(value))


def _duration_or_off(value: Any) -> int:
    return parse_duration_or_off(str(value))


SETTINGS = (
    Setting("listen", "127.0.0.1:8080", _listen, "HOST:PORT the HTTP server binds to."),
    Setting(
        "data_dir",
        "./data",
        str,
        "Directory for the write-ahead log and snapshots; relative to the config file's directory "
        "(--data-dir: to the working directory). One server at a time (it is locked).",
    ),
    Setting(
        "snapshot_every",
        "30s",
        _duration,
        "How often view state is snapshotted; each snapshot lets the WAL be trimmed.",
    ),
    Setting(
        "summary_every",
        "60s",
        _duration,
        "How often one info log line sums up what happened since the last one (events accepted, "
        "rejected, late; snapshots; WAL bytes); nothing is logged when nothing happened.",
    ),
    Setting(
        "max_body_bytes",
        64 << 20,
        _positive_int,
        "Largest request body accepted, counted after gzip decompression (413 beyond).",
    ),
    Setting("max_line_bytes", 1 << 20, _positive_int, "Largest single NDJSON line accepted."),
    Setting("default_limit", 100, _positive_int, "Rows returned when a query gives no limit."),
    Setting("max_limit", 10_000, _positive_int, "Hard cap on a query's limit (400 beyond)."),
    Setting(
        "keep_rejected",
        1000,
        _positive_int,
        "How many rejected events per source, and late events per view, are kept for "
        "inspection (the newest ones; counters count all).",
    ),
    Setting(
        "wal_segment_bytes",
        64 << 20,
        _positive_int,
        "Size at which the write-ahead log starts a new segment file.",
    ),
    Setting(
        "retain_events",
        "off",
        _duration_or_off,
        "How long the events posted over HTTP stay in the write-ahead log after a snapshot covers "
        "them (e.g. '7d'), so that views added or changed on the running server fill from them "
        "(backfill); 'off' trims the log at each snapshot, and such views then start empty.",
    ),
    Setting(
        "retain_events_bytes",
        1 << 30,
        _positive_int,
        "Most disk the retained events may take (with retain_events): beyond it the oldest "
        "segments go first, whatever their age.",
    ),
    Setting(
        "backfill_chunk_bytes",
        4 << 20,
        _positive_int,
        "Log bytes a backfilling view reads and applies per step: smaller keeps answers and "
        "ingest quicker during a backfill, larger fills faster.",
    ),
    Setting(
        "max_series_points",
        10_000,
        _positive_int,
        "Most points (buckets x series) one series answer may have (400 beyond).",
    ),
    Setting(
        "sse_heartbeat",
        "15s",
        _duration,
        "How often an idle live stream sends a comment line, so proxies keep it open.",
    ),
    Setting(
        "max_future",
        "1h",
        _duration,
        "Events dated further ahead of the server's clock are refused (line error, or a kept "
        "poison record for Kafka and files): one would move the watermark and make on-time "
        "events late.",
    ),
    Setting(
        "max_ingest_backlog_bytes",
        256 << 20,
        _positive_int,
        "Request bodies being decoded, logged and applied at once; beyond it ingest answers 503 "
        "with Retry-After (load is shed, memory stays bounded).",
    ),
    Setting(
        "max_time_range",
        "366d",
        _duration,
        "Longest from..to span a query or series may ask for (400 beyond): a cost cap.",
    ),
    Setting(
        "max_groups_scanned",
        1_000_000,
        _positive_int,
        "Most (bucket, key) groups one query may read (400 beyond, naming how to narrow it).",
    ),
    Setting(
        "rate_limit",
        100,
        _positive_int,
        "Requests per second per token, on average (429 with Retry-After beyond); only when "
        "authorization is on.",
    ),
    Setting(
        "rate_burst",
        500,
        _positive_int,
        "Requests a token may make at once before rate_limit applies.",
    ),
    Setting(
        "max_subscribers_per_token",
        100,
        _positive_int,
        "Live streams (SSE) one token may hold open at once (429 beyond).",
    ),
    Setting(
        "max_live_subscriptions",
        32,
        _positive_int,
        "Subscriptions one /v1/live stream may carry (400 beyond); the stream counts once "
        "against max_subscribers_per_token.",
    ),
    Setting(
        "idempotency_ttl",
        "24h",
        _duration,
        "How long an Idempotency-Key is remembered: a retry within it returns the first answer.",
    ),
    Setting(
        "idempotency_max_keys",
        100_000,
        _positive_int,
        "Most Idempotency-Keys remembered; beyond it the oldest are forgotten first.",
    ),
    Setting(
        "answer_cache_bytes",
        64 << 20,
        _positive_int,
        "Memory for encoded query answers, each reused until its source next changes "
        "(dashboards polling the same query cost one computation per change).",
    ),
)


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:8080"
    data_dir: str = "./data"
    snapshot_every: int = 30_000
    summary_every: int = 60_000
    max_body_bytes: int = 64 << 20
    max_line_bytes: int = 1 << 20
    default_limit: int = 100
    max_limit: int = 10_000
    keep_rejected: int = 1000
    wal_segment_bytes: int = 64 << 20
    retain_events: int = 0
    retain_events_bytes: int = 1 << 30
    backfill_chunk_bytes: int = 4 << 20
    max_series_points: int = 10_000
    sse_heartbeat: int = 15_000
    max_future: int = 3_600_000
    max_ingest_backlog_bytes: int = 256 << 20
    max_time_range: int = 366 * 86_400_000
    max_groups_scanned: int = 1_000_000
    rate_limit: int = 100
    rate_burst: int = 500
    max_subscribers_per_token: int = 100
    max_live_subscriptions: int = 32
    idempotency_ttl: int = 24 * 3_600_000
    idempotency_max_keys: int = 100_000
    answer_cache_bytes: int = 64 << 20

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class SettingsError(ValueError):
    pass


def config_dir(path: str) -> Path:
    """The directory that relative paths in the config file ``path`` are relative to (its own)."""
    return Path(path).resolve().parent


def load_settings(raw: dict[str, Any], path: str = "<config>", **overrides: Any) -> Settings:
    """The ``[server]`` table of the config file ``path``, with command-line ``overrides``."""
    table = {s.name: s for s in SETTINGS}
    values: dict[str, Any] = {}
    merged = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    for name, value in merged.items():
        setting = table.get(name)
        if setting is None:
            raise SettingsError(
                f"{path}: server: field '{name}': unknown setting; known: {', '.join(table)}"
            )
        try:
            values[name] = setting.parse(value)
        except ValueError as err:
            raise SettingsError(f"{path}: server: field '{name}': {err}") from None
    for setting in SETTINGS:
        values.setdefault(setting.name, setting.parse(setting.default))
    # A path in the file is relative to the file's directory, as every path there is; one given
    # on the command line is relative to the working directory, as any command-line path is.
    base = Path.cwd() if overrides.get("data_dir") is not None else config_dir(path)
    values["data_dir"] = os.path.abspath(base / values["data_dir"])
    if values["default_limit"] > values["max_limit"]:
        raise SettingsError(f"{path}: server: field 'default_limit': exceeds max_limit")
    assert {f.name for f in fields(Settings)} == set(table)
    return Settings(**values)
