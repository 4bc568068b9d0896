"""Load a tallyd TOML file into validated source and view specs.

Every error names the file, the thing (view or source) and the field, e.g.
``shop.toml: view 'revenue': field 'sql': FROM order: no such source (sources: orders)``.
The ``[server]`` table is returned as-is; ``api.settings`` validates it against its own table, and
``ingest.cluster`` the ``[cluster]`` table.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from views.durations import parse_duration
from views.expr import TYPES
from views.spec import SourceSpec, ViewSpec
from views.sql import SqlError, compile_view

SOURCE_FIELDS = {
    "http": {"time", "fields", "from"},
    "kafka": {
        "time",
        "fields",
        "from",
        "bootstrap",
        "topic",
        "topics",
        "group",
        "format",
        "start",
        "state_dir",
        "max_batch",
        "idle",
        "session_timeout",
        "partition_by",
    },
    "file": {"time", "fields", "from", "path", "format", "follow"},
}
FORMATS = {"http": ("json",), "kafka": ("json", "debezium"), "file": ("ndjson", "csv")}
KAFKA_TIMESTAMP = "kafka_timestamp"
VIEW_FIELDS = {"sql", "retention", "grace", "max_groups", "description", "chart"}


class ConfigError(ValueError):
    def __init__(self, path: str, where: str, field: str | None, message: str) -> None:
        place = f"{where}: field '{field}'" if field else where
        super().__init__(f"{path}: {place}: {message}")
        self.path, self.where, self.field = path, where, field


@dataclass(frozen=True)
class Config:
    path: str
    server: dict[str, Any]
    sources: dict[str, SourceSpec]
    views: dict[str, ViewSpec]
    descriptions: dict[str, str] = field(default_factory=dict)
    auth: dict[str, Any] = field(default_factory=dict)  # checked by api.auth (tokens, CORS)
    # The aggregate the dashboard charts, per view (None: not charted). Like the description,
    # presentation only: it never changes a view's state, so it is not part of its spec.
    charts: dict[str, str | None] = field(default_factory=dict)
    # [cluster] as written (None: no table); api.engine resolves the advertised address
    cluster: dict[str, Any] | None = None
    # The TOML as read: what a running server says it runs (GET /v1/admin/config, tallyd plan)
    raw: dict[str, Any] = field(default_factory=dict)


def load(path: str | Path) -> Config:
    text_path = str(path)
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(text_path, "file", None, "no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(text_path, "file", None, f"not valid TOML: {err}") from None
    return parse(raw, text_path)


def parse(raw: dict[str, Any], path: str = "<config>") -> Config:
    unknown = set(raw) - {"server", "sources", "views", "auth", "cluster"}
    if unknown:
        raise ConfigError(
            path,
            "file",
            None,
            f"unknown table(s) {sorted(unknown)}; expected [server], [sources.NAME], "
            "[views.NAME], [auth], [cluster]",
        )
    sources = {name: _source(path, name, body) for name, body in _tables(raw, "sources", path)}
    if not sources:
        raise ConfigError(path, "file", None, "define at least one [sources.NAME]")
    views: dict[str, ViewSpec] = {}
    descriptions: dict[str, str] = {}
    charts: dict[str, str | None] = {}
    for name, body in _tables(raw, "views", path):
        views[name] = _view(path, name, body, sources)
        descriptions[name] = str(body.get("description", ""))
        charts[name] = _chart(path, body, views[name])
    sources = _with_schemas(path, sources, views)
    server = raw.get("server", {})
    if not isinstance(server, dict):
        raise ConfigError(path, "server", None, "must be a table")
    auth = raw.get("auth", {})
    if not isinstance(auth, dict):
        raise ConfigError(path, "auth", None, "must be a table")
    cluster = raw.get("cluster")
    if cluster is not None:
        if not isinstance(cluster, dict):
            raise ConfigError(path, "cluster", None, "must be a table")
        if not any(spec.kind == "kafka" for spec in sources.values()):
            raise ConfigError(
                path,
                "cluster",
                None,
                "a cluster is the members of a Kafka consumer group: define a source with "
                'from = "kafka"',
            )
    return Config(path, server, sources, views, descriptions, auth, charts, cluster, raw)


def _tables(raw: dict[str, Any], kind: str, path: str) -> list[tuple[str, dict[str, Any]]]:
    section = raw.get(kind, {})
    if not isinstance(section, dict):
        raise ConfigError(path, kind, None, f"must be tables like [{kind}.NAME]")
    out = []
    for name, body in section.items():
        if not isinstance(body, dict):
            raise ConfigError(path, f"{kind[:-1]} '{name}'", None, "must be a table")
        if not name.isidentifier():
            raise ConfigError(
                path,
                f"{kind[:-1]} '{name}'",
                None,
                "names are letters, digits and underscores, not starting with a digit",
            )
        out.append((name, body))
    return out


def _source(path: str, name: str, body: dict[str, Any]) -> SourceSpec:
    where = f"source '{name}'"
    kind = body.get("from", "http")
    if kind not in SOURCE_FIELDS:
        raise ConfigError(path, where, "from", f"{kind!r} is not one of http, kafka, file")
    unknown = set(body) - SOURCE_FIELDS[kind]
    if unknown:
        raise ConfigError(
            path,
            where,
            sorted(unknown)[0],
            f"unknown field for a {kind} source; known: {sorted(SOURCE_FIELDS[kind])}",
        )
    time_field = body.get("time")
    if not isinstance(time_field, str) or not time_field:
        raise ConfigError(path, where, "time", 'name the event-time field, e.g. time = "ts"')
    declared = body.get("fields", {})
    if not isinstance(declared, dict):
        raise ConfigError(path, where, "fields", 'must be a table of field = "type"')
    for field_name, kind_name in declared.items():
        if kind_name not in TYPES:
            raise ConfigError(
                path,
                where,
                f"fields.{field_name}",
                f"type {kind_name!r} is not one of {', '.join(TYPES)}",
            )
    fmt = body.get("format", FORMATS[kind][0])
    if fmt not in FORMATS[kind]:
        raise ConfigError(
            path, where, "format", f"{fmt!r} is not one of {', '.join(FORMATS[kind])}"
        )
    options = (
        _kafka_options(path, where, body)
        if kind == "kafka"
        else (_file_options(path, where, body, declared) if kind == "file" else {})
    )
    return SourceSpec(name, time_field, dict(declared), kind=kind, format=fmt, options=options)


def _text(path: str, where: str, body: dict[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(path, where, key, "required: a non-empty string")
    return value


def _kafka_options(path: str, where: str, body: dict[str, Any]) -> dict[str, Any]:
    if ("topic" in body) == ("topics" in body):
        raise ConfigError(path, where, "topic", 'give either topic = "name" or topics = [...]')
    topics = [body["topic"]] if "topic" in body else body["topics"]
    if (
        not isinstance(topics, list)
        or not topics
        or not all(isinstance(t, str) and t for t in topics)
    ):
        raise ConfigError(
            path,
            where,
            "topics" if "topics" in body else "topic",
            "topic names must be non-empty strings",
        )
    start = body.get("start", "earliest")
    if start not in ("earliest", "latest"):
        raise ConfigError(path, where, "start", f"{start!r} is not 'earliest' or 'latest'")
    max_batch = body.get("max_batch", 20_000)
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise ConfigError(path, where, "max_batch", f"{max_batch!r} is not a positive integer")
    state_dir = body.get("state_dir")
    if state_dir is not None and (not isinstance(state_dir, str) or not state_dir):
        raise ConfigError(path, where, "state_dir", "must be a directory path")
    partition_by = body.get("partition_by")
    if partition_by is not None and (not isinstance(partition_by, str) or not partition_by):
        raise ConfigError(path, where, "partition_by", "must name a field of the events")
    return {
        "partition_by": partition_by,
        "bootstrap": _text(path, where, body, "bootstrap"),
        "topics": topics,
        "group": _text(path, where, body, "group"),
        "start": start,
        "state_dir": state_dir,
        "max_batch": max_batch,
        "idle": _duration(path, where, body, "idle") or 60_000,
        "session_timeout": _duration(path, where, body, "session_timeout") or 10_000,
    }


def _file_options(
    path: str, where: str, body: dict[str, Any], declared: dict[str, Any]
) -> dict[str, Any]:
    follow = body.get("follow", False)
    if not isinstance(follow, bool):
        raise ConfigError(path, where, "follow", "must be true or false")
    if body.get("format") == "csv" and not declared:
        raise ConfigError(
            path,
            where,
            "fields",
            "a csv source must declare its columns' types, "
            'e.g. fields = { ts = "number", amount = "number" }',
        )
    return {"path": _text(path, where, body, "path"), "follow": follow}


def _duration(path: str, where: str, body: dict[str, Any], key: str) -> int | None:
    if key not in body:
        return None
    try:
        return parse_duration(str(body[key]))
    except ValueError as err:
        raise ConfigError(path, where, key, str(err)) from None


def _view(path: str, name: str, body: dict[str, Any], sources: dict[str, SourceSpec]) -> ViewSpec:
    where = f"view '{name}'"
    unknown = set(body) - VIEW_FIELDS
    if unknown:
        raise ConfigError(
            path, where, sorted(unknown)[0], f"unknown field; known: {sorted(VIEW_FIELDS)}"
        )
    sql = body.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise ConfigError(path, where, "sql", 'write the view as SQL: sql = "SELECT ..."')
    retention = _duration(path, where, body, "retention")
    grace = _duration(path, where, body, "grace") or 0
    max_groups = body.get("max_groups", 100_000)
    if not isinstance(max_groups, int) or isinstance(max_groups, bool) or max_groups < 1:
        raise ConfigError(path, where, "max_groups", f"{max_groups!r} is not a positive integer")
    if retention is not None and grace > retention:
        raise ConfigError(path, where, "grace", "grace cannot be longer than retention")
    try:
        spec = compile_view(
            name, sql, sources, retention=retention, grace=grace, max_groups=max_groups
        )
    except SqlError as err:
        raise ConfigError(path, where, "sql", str(err)) from None
    if spec.window is None and (retention is not None or "grace" in body):
        field_name = "retention" if retention is not None else "grace"
        raise ConfigError(
            path,
            where,
            field_name,
            f"only views with a time window have {field_name}; this view keeps all-time totals",
        )
    return spec


def _chart(path: str, body: dict[str, Any], spec: ViewSpec) -> str | None:
    """``chart = "<aggregate>"``: what the dashboard plots for a windowed view. Absent, the first
    aggregate that is not a count: a view names its volume first by SQL habit (``count(*) AS
    requests, p95(latency_ms) AS p95``) but is about what follows it, so charting the count
    would show traffic on a latency view. A view of counts only charts its first count."""
    plottable = [c for c in spec.columns if c.role == "aggregate" and c.type != "array"]
    if "chart" not in body:
        if spec.window is None:
            return None
        counts_last = sorted(plottable, key=lambda c: c.aggregate == "count")  # stable
        return counts_last[0].name if counts_last else None
    where, name = f"view '{spec.name}'", body["chart"]
    if spec.window is None:
        raise ConfigError(
            path,
            where,
            "chart",
            "only views with a time window are charted; this view keeps "
            "all-time totals (the dashboard shows it as a table)",
        )
    if not isinstance(name, str) or name not in [c.name for c in plottable]:
        choices = ", ".join(c.name for c in plottable) or "none"
        raise ConfigError(
            path,
            where,
            "chart",
            f"{name!r} is not an aggregate column a chart can plot "
            f"(numbers, not top_k lists); this view's: {choices}",
        )
    return name


def _with_schemas(
    path: str, sources: dict[str, SourceSpec], views: dict[str, ViewSpec]
) -> dict[str, SourceSpec]:
    """Merge declared field types with what each view needs; conflicts name both sides."""
    out = {}
    for name, source in sources.items():
        schema = dict(source.declared)
        origin = {f: "the declared fields" for f in schema}
        for view in views.values():
            if view.source != name:
                continue
            for field_name, kind in view.requirements.items():
                have = schema.get(field_name, "scalar")
                if kind == "scalar" or kind == have:
                    schema.setdefault(field_name, kind)
                elif have == "scalar":
                    schema[field_name] = kind
                    origin[field_name] = f"view '{view.name}'"
                else:
                    raise ConfigError(
                        path,
                        f"view '{view.name}'",
                        "sql",
                        f"field '{field_name}' is used as a {kind}, but "
                        f"{origin[field_name]} use(s) it as a {have}",
                    )
        out[name] = dataclasses.replace(source, schema=schema)
    return out
