"""What a new config would change: ``tallyd plan`` (issue 17, its first step).

Teams keep their views in git, as TOML files; before a change ships they want to see, per view
and source, what it does to the running server — as ``terraform plan`` shows a change to
infrastructure. ``diff(current, new)`` compares two parsed configs (the running server's, from
``GET /v1/admin/config``, or a file) and says, per view: added, changed (and which part of the
SQL: SELECT, FROM, WHERE, GROUP BY — or only its options), removed or unchanged; per source:
added, changed (which settings), removed; and which ``[server]``, ``[cluster]`` and ``[auth]``
settings differ.

Each entry also says what applying it does, and the plan whether it can be applied to the
running server (``tallyd apply``, SIGHUP: ``live_refusals``) or only at a restart. Removed views'
state goes, options change in place. A view added, or whose SQL changed under its name, fills
from its source's history (``history``: a Kafka topic; the HTTP log kept under
``retain_events``) —
a changed one beside its old definition, which answers until the new one has caught up. Where
no history is kept, an added view starts empty and a changed one is refused (its state was made
for the old SQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import sqlglot
from sqlglot import exp

from views.config import Config
from views.durations import format_duration, parse_duration_or_off
from views.spec import SourceSpec, ViewSpec

Action = Literal["add", "change", "remove"]
SIGNS = {"add": "+", "change": "~", "remove": "-"}
# The clauses of a view's SQL a plan names, and where sqlglot keeps each.
CLAUSES = (("SELECT", "expressions"), ("FROM", "from"), ("WHERE", "where"), ("GROUP BY", "group"))


@dataclass(frozen=True)
class Entry:
    kind: Literal["view", "source", "setting"]
    name: str
    action: Action
    what: list[str] = field(default_factory=list)  # what differs
    effect: str = ""  # what applying it does today (a restart)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "what": self.what,
            "effect": self.effect,
        }


class NotLive(Exception):
    """A config the running server cannot take without a restart (``live_refusals``)."""

    def __init__(self, plan: Plan, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.plan, self.reasons = plan, reasons


@dataclass(frozen=True)
class Plan:
    current: str  # where the current config came from
    new: str
    entries: list[Entry]
    unchanged_views: list[str]
    not_live: list[str]  # why it cannot be applied without a restart (``live_refusals``)

    @property
    def changes(self) -> bool:
        return bool(self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "new": self.new,
            "changes": [e.to_json() for e in self.entries],
            "unchanged_views": self.unchanged_views,
            "live": not self.not_live,
            "not_live": self.not_live,
        }

    def render(self) -> str:
        lines = [f"tallyd plan: {self.new} against {self.current}", ""]
        for entry in self.entries:
            what = f": {'; '.join(entry.what)}" if entry.what else ""
            verb = {"add": "added", "change": "changed", "remove": "removed"}[entry.action]
            lines.append(f"  {SIGNS[entry.action]} {entry.kind} {entry.name}: {verb}{what}")
            if entry.effect:
                lines.append(f"      {entry.effect}")
        if self.unchanged_views:
            lines.append(
                f"  = {len(self.unchanged_views)} view(s) unchanged: "
                + ", ".join(self.unchanged_views)
            )
        counts = {a: sum(e.action == a for e in self.entries) for a in SIGNS}
        lines.append("")
        if not self.changes:
            lines.append("No changes.")
        else:
            lines.append(
                f"Plan: {counts['add']} to add, {counts['change']} to change, "
                f"{counts['remove']} to remove."
            )
            if self.not_live:
                lines.append("Not applicable live (tallyd apply and SIGHUP refuse it):")
                lines += [f"  - {reason}" for reason in self.not_live]
            else:
                lines.append(
                    "Applies live: tallyd apply --config NEW --url URL, or SIGHUP once NEW is "
                    "the server's config file."
                )
        return "\n".join(lines)


def history(config: Config) -> frozenset[str]:
    """The sources whose views can fill from history: Kafka ones (their topic, as far as its
    retention keeps it), file ones (the files), and the HTTP ones when the server keeps its log
    (``retain_events``)."""
    try:
        kept = parse_duration_or_off(str(config.server.get("retain_events", "off")))
    except ValueError:
        kept = 0  # a bad value: the server refuses to start with it, so nothing is kept
    return frozenset(name for name, spec in config.sources.items() if spec.kind != "http" or kept)


def diff(
    current: Config,
    new: Config,
    current_name: str,
    new_name: str,
    sizes: dict[str, str] | None = None,
) -> Plan:
    """``sizes``: per source, how much history a backfill would read (a running server says,
    ``GET /v1/admin/config``); named beside each added or changed view that fills from it."""
    entries = _views(current, new, sizes or {}) + _sources(current, new) + _settings(current, new)
    unchanged = [
        name
        for name in new.views
        if name in current.views and not any(e.kind == "view" and e.name == name for e in entries)
    ]
    return Plan(current_name, new_name, entries, unchanged, live_refusals(entries, current, new))


# -- views ----------------------------------------------------------------------------------------


def _views(current: Config, new: Config, sizes: dict[str, str]) -> list[Entry]:
    out = []
    for name, view in new.views.items():
        old = current.views.get(name)
        if old is None:
            if view.source in history(current):
                effect = (
                    f"fills from {_kept(current, view.source, sizes)} when applied, then counts "
                    "live ones; its answers say backfilling: true until it has caught up"
                )
            else:
                effect = (
                    "starts empty when applied: counts the events that arrive after ("
                    + NO_HISTORY
                    + ")"
                )
            out.append(Entry("view", name, "add", [f"from {view.source}"], effect))
            continue
        entry = _view_change(name, old, new, current, sizes)
        if entry is not None:
            out.append(entry)
    for name, view in current.views.items():
        if name not in new.views:
            effect = "its state is dropped when applied; its charts and embeds answer 404"
            out.append(Entry("view", name, "remove", [f"from {view.source}"], effect))
    return out


def _view_change(
    name: str, old: ViewSpec, new_config: Config, current: Config, sizes: dict[str, str]
) -> Entry | None:
    new = new_config.views[name]
    if old.fingerprint != new.fingerprint:
        what = [f"SQL: {', '.join(_clauses(old.sql, new.sql))}", *_options(old, new)]
        if new.source in history(current):
            effect = (
                f"the new definition fills from {_kept(current, new.source, sizes)} beside the old "
                "one, which answers until then; then one step switches every query, series "
                "and live stream to it"
            )
        else:
            effect = (
                "refused, live and at a restart: the state was made for the old SQL ("
                + NO_HISTORY
                + "). Give the new definition a new name (it starts empty beside the old one), "
                "or keep the old SQL"
            )
        return Entry("view", name, "change", what, effect)
    what = _options(old, new)
    if current.descriptions.get(name) != new_config.descriptions.get(name):
        what.append("description")
    if current.charts.get(name) != new_config.charts.get(name):
        what.append(f"chart: {current.charts.get(name)} -> {new_config.charts.get(name)}")
    if not what:
        return None
    return Entry("view", name, "change", what, "takes effect when applied; its state is kept")


def _kept(config: Config, source: str, sizes: dict[str, str]) -> str:
    """Where a view of ``source`` fills from (and how much that is, when the server said)."""
    kind = config.sources[source].kind
    where = {
        "kafka": "the topic, from its log start",
        "file": "the files, from their first line",
    }.get(kind, "the events the server kept (retain_events)")
    return f"{where} ({sizes[source]})" if source in sizes else where


# Why a view cannot fill from history: only an HTTP source without retain_events keeps none.
NO_HISTORY = "set retain_events in [server] to keep the events new views fill from"


def _clauses(old_sql: str, new_sql: str) -> list[str]:
    """Which clauses of the SQL differ, compared in sqlglot's normalised form."""
    old, new = sqlglot.parse_one(old_sql), sqlglot.parse_one(new_sql)
    out = []
    for label, key in CLAUSES:
        if _clause(old, key) != _clause(new, key):
            out.append(label)
    return out or ["its normalised form"]


def _clause(tree: exp.Expression, key: str) -> str:
    value = tree.args.get(key)
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(v.sql(normalize=True) for v in value)
    return str(value.sql(normalize=True))


def _options(old: ViewSpec, new: ViewSpec) -> list[str]:
    out = []
    for label, before, after in (
        ("grace", old.grace, new.grace),
        ("retention", old.retention, new.retention),
    ):
        if before != after:
            out.append(f"{label}: {_duration(before)} -> {_duration(after)}")
    if old.max_groups != new.max_groups:
        out.append(f"max_groups: {old.max_groups} -> {new.max_groups}")
    return out


def _duration(ms: int | None) -> str:
    return "none" if ms is None else format_duration(ms)


# -- sources and settings -------------------------------------------------------------------------


def _sources(current: Config, new: Config) -> list[Entry]:
    out = []
    for name, source in new.sources.items():
        old = current.sources.get(name)
        if old is None:
            effect = "starts when applied, with no state"
            out.append(Entry("source", name, "add", [f"from {source.kind}"], effect))
            continue
        what = source_changes(old, source)
        if what:
            effect = (
                "restarted with these settings when applied; its state is kept"
                if _restartable(what)
                else "refused live (how its events are read changed): takes effect at a restart"
            )
            if old.kind == "kafka" and source.kind == "kafka":
                moved = {"bootstrap", "topics", "group"} & {
                    k for k in source.options if old.options.get(k) != source.options.get(k)
                }
                if moved:
                    effect += (
                        f" ({', '.join(sorted(moved))} changed: each partition resumes from its "
                        "part file when it has one for the topic, else from 'start')"
                    )
            out.append(Entry("source", name, "change", what, effect))
    for name, source in current.sources.items():
        if name not in new.sources:
            effect = "stops when applied; its state is dropped"
            out.append(Entry("source", name, "remove", [f"from {source.kind}"], effect))
    return out


# What a source change may touch and still apply live: how it connects (its options), not how
# its events are read (``source_changes`` names those first).
READ_CHANGES = ("from:", "format:", "time:", "declared field types")


def _restartable(what: list[str]) -> bool:
    """Whether a source change touches only how it connects (then it restarts live)."""
    return not any(w.startswith(READ_CHANGES) for w in what)


def source_changes(old: SourceSpec, new: SourceSpec) -> list[str]:
    """What differs in how a source connects or reads (not which fields its views read: that
    follows from the views)."""
    what = []
    if old.kind != new.kind:
        what.append(f"from: {old.kind} -> {new.kind}")
    if old.format != new.format:
        what.append(f"format: {old.format} -> {new.format}")
    if old.time_field != new.time_field:
        what.append(f"time: {old.time_field} -> {new.time_field}")
    if old.declared != new.declared:
        what.append("declared field types")
    for key in sorted(set(old.options) | set(new.options)):
        before, after = old.options.get(key), new.options.get(key)
        if before != after:
            what.append(f"{key}: {_shown(before)} -> {_shown(after)}")
    return what


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _settings(current: Config, new: Config) -> list[Entry]:
    out = []
    for key in sorted(set(current.server) | set(new.server)):
        before, after = current.server.get(key), new.server.get(key)
        if before != after:
            out.append(
                Entry(
                    "setting",
                    f"[server] {key}",
                    "change",
                    [f"{_shown(before)} -> {_shown(after)}"],
                    "takes effect at a restart",
                )
            )
    for table, before_table, after_table in (
        ("[cluster]", current.cluster, new.cluster),
        ("[auth]", current.auth or None, new.auth or None),
    ):
        if before_table != after_table:
            action: Action = (
                "add" if before_table is None else "remove" if after_table is None else "change"
            )
            keys = sorted(
                k
                for k in set(before_table or {}) | set(after_table or {})
                if (before_table or {}).get(k) != (after_table or {}).get(k)
            )
            out.append(Entry("setting", table, action, keys, "takes effect at a restart"))
    return out


# -- what can change on a running server ---------------------------------------------------------


def live_refusals(entries: list[Entry], current: Config, new: Config) -> list[str]:
    """Why ``new`` cannot be applied to a running server (``tallyd apply``, SIGHUP); empty when
    it can. Live: views added (backfilled, or starting empty), removed (their state goes),
    their options changed (grace, retention, max_groups, description, chart), and their SQL
    changed where the source keeps history (``history``). Not yet live: a view's SQL changed
    where it does not (its state was made for the old SQL), sources, and the [server],
    [cluster] and [auth] settings — and new views reading fields as types their source does not
    check now (the decoder's checks are set at start)."""
    out = []
    kept = history(current)
    for entry in entries:
        if (
            entry.kind == "view"
            and any(w.startswith("SQL:") for w in entry.what)
            and new.views[entry.name].source not in kept
        ):
            out.append(
                f"view {entry.name}: its SQL changed, and its state was made for the old SQL; "
                "give the new definition a new name (a new view, starting empty), then remove "
                "the old one"
            )
        elif entry.kind == "source" and entry.action == "change" and not _restartable(entry.what):
            out.append(
                f"source {entry.name}: its kind, format, time field or declared field types "
                "change only at a restart (how it connects can change live: it is restarted)"
            )
        elif entry.kind == "setting":
            out.append(f"{entry.name}: changes only at a restart")
    for name, source in new.sources.items():
        old = current.sources.get(name)
        if old is None or source_changes(old, source):  # new, or restarted with a new decoder
            continue
        added = sorted(f"{f}:{t}" for f, t in source.schema.items() if old.schema.get(f) != t)
        if added:
            out.append(
                f"source {name}: the new views read {', '.join(added)}, which it does not check "
                "now; a source's field checks change only at a restart"
            )
    return out
