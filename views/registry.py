"""The one mutable root: routes batches to the views of their source, tracks source positions,
watermarks and counters, and turns all of it into one snapshot state."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from views.spec import SourceSpec, ViewSpec
from views.view import View


@dataclass
class Batch:
    """A unit of work: validated events of one source and the position they end at."""

    source: str
    events: list[dict[str, Any]]
    position: int  # WAL sequence number of this batch
    rejected: list[dict[str, Any]] = field(default_factory=list)


class SourceState:
    def __init__(self, spec: SourceSpec, keep: int) -> None:
        self.spec = spec
        self.watermark: int | None = None
        self.position = 0
        self.accepted = 0
        self.rejected = 0
        self.rejected_events: deque[dict[str, Any]] = deque(maxlen=keep)

    def to_state(self) -> dict[str, Any]:
        return {
            "watermark": self.watermark,
            "position": self.position,
            "counters": [self.accepted, self.rejected],
            "rejected_events": list(self.rejected_events),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.watermark = state["watermark"]
        self.position = int(state["position"])
        self.accepted, self.rejected = (int(n) for n in state["counters"])
        self.rejected_events.clear()
        self.rejected_events.extend(state["rejected_events"])


class StateMismatch(ValueError):
    """Snapshot state made for different view definitions than the running ones."""


class Registry:
    def __init__(
        self, sources: dict[str, SourceSpec], views: dict[str, ViewSpec], keep: int = 1000
    ) -> None:
        self.sources = {name: SourceState(spec, keep) for name, spec in sources.items()}
        self.views = {
            name: View(spec, sources[spec.source].time_field, keep) for name, spec in views.items()
        }
        self.by_source: dict[str, list[View]] = {name: [] for name in sources}
        for view in self.views.values():
            self.by_source[view.spec.source].append(view)
        self.position = 0  # newest batch position applied, over all sources

    def apply(self, batch: Batch) -> None:
        source = self.sources[batch.source]
        time_field = source.spec.time_field
        before = source.watermark
        for view in self.by_source[batch.source]:
            view.apply(batch.events, before)
        if batch.events:
            newest = max(e[time_field] for e in batch.events)
            source.watermark = newest if before is None else max(before, newest)
        for view in self.by_source[batch.source]:
            view.expire(source.watermark)
        source.accepted += len(batch.events)
        source.rejected += len(batch.rejected)
        source.rejected_events.extend(batch.rejected)
        source.position = batch.position
        self.position = max(self.position, batch.position)

    def to_state(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "sources": {name: s.to_state() for name, s in self.sources.items()},
            "views": {name: v.to_state() for name, v in self.views.items()},
        }

    def load_state(self, state: dict[str, Any]) -> list[str]:
        """Load a snapshot state; returns notes on views/sources that were added or removed.

        Raises ``StateMismatch`` when a view kept its name but changed its SQL: its old state
        would be silently wrong under the new definition, and the events needed to rebuild it
        are gone from the trimmed WAL.
        """
        changed = [
            name
            for name, view in self.views.items()
            if name in state["views"]
            and state["views"][name]["fingerprint"] != view.spec.fingerprint
        ]
        if changed:
            raise StateMismatch(
                f"view(s) {', '.join(changed)} changed their SQL since the snapshot was taken; "
                "restore the old definition, or give the new one a new name (it starts empty)"
            )
        notes = []
        self.position = int(state["position"])
        for name, source in self.sources.items():
            if name in state["sources"]:
                source.load_state(state["sources"][name])
        for name, view in self.views.items():
            if name in state["views"]:
                view.load_state(state["views"][name])
            else:
                notes.append(f"view {name} is new: it counts events from now on")
        notes += [
            f"view {n} is no longer defined: its state was dropped"
            for n in state["views"]
            if n not in self.views
        ]
        return notes
