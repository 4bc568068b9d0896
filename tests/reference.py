"""An independent reference: plain Python over the raw events, no code shared with views/.

Groups rows the slow, obvious way and computes each aggregate with ``math.fsum``, ``set``,
``sorted`` and ``collections.Counter``. Approximate aggregates get the exact value, and the
comparison checks the documented error bound against it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

Event = dict[str, Any]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{ms % 1000:03d}Z"
    )


def tumble(size: int) -> Callable[[int], list[int]]:
    return lambda ts: [(ts // size) * size]


def hop(size: int, slide: int) -> Callable[[int], list[int]]:
    def windows(ts: int) -> list[int]:
        first = ((ts - size) // slide) * slide
        return [s for s in range(first, ts + 1, slide) if s <= ts < s + size]

    return windows


def group(
    events: Iterable[Event],
    where: Callable[[Event], bool],
    keys: list[str],
    windows: Callable[[int], list[int]] | None,
    window_name: str | None = None,
) -> dict[tuple[Any, ...], list[Event]]:
    out: dict[tuple[Any, ...], list[Event]] = defaultdict(list)
    for e in events:
        if not where(e):
            continue
        starts = windows(e["_ts"]) if windows else [None]
        for start in starts:
            out[(start, *[e.get(k) for k in keys])].append(e)
    return out


def values(rows: list[Event], field: str | Callable[[Event], Any]) -> list[Any]:
    get = field if callable(field) else (lambda e: e.get(field))
    return [v for v in (get(e) for e in rows) if v is not None]


def fsum_or_none(xs: list[Any]) -> Any:
    if not xs:
        return None
    if all(isinstance(x, int) for x in xs):
        return sum(xs)
    return math.fsum(xs)


def avg(xs: list[Any]) -> Any:
    if not xs:
        return None
    return math.fsum(xs) / len(xs)


def lower_quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    return sorted(xs)[math.floor(q * (len(xs) - 1))]


def top(xs: list[Any], k: int) -> list[dict[str, Any]]:
    ranked = sorted(Counter(xs).items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"value": v, "count": c} for v, c in ranked[:k]]


class Approx:
    """An expected value checked within a stated bound, so rows compare with ==."""

    def __init__(self, exact: float | None, rel: float) -> None:
        self.exact, self.rel = exact, rel

    def __eq__(self, other: object) -> bool:
        if self.exact is None or other is None:
            return self.exact is None and other is None
        assert isinstance(other, int | float)
        return abs(other - self.exact) <= self.rel * abs(self.exact) + 1e-9

    def __repr__(self) -> str:
        return f"Approx({self.exact}, ±{self.rel:.1%})"

    __hash__ = None  # type: ignore[assignment]


# -- the written policies (README "Late data", view.py's docstring), the slow, obvious way -------

OTHER = "__other__"


def judge_late(batches: list[list[Event]], grace: int) -> tuple[list[Event], list[Event]]:
    """(on time, late), each in arrival order: an event is late when its time is before
    ``watermark - grace``, the watermark being the newest event time of the batches *before*
    its own (so within a batch, order does not matter)."""
    on_time: list[Event] = []
    late: list[Event] = []
    watermark: int | None = None
    for batch in batches:
        for e in batch:
            is_late = watermark is not None and e["_ts"] < watermark - grace
            (late if is_late else on_time).append(e)
        for e in batch:
            watermark = e["_ts"] if watermark is None else max(watermark, e["_ts"])
    return on_time, late


def retained(starts: Iterable[int], size: int, watermark: int, retention: int) -> set[int]:
    """The window starts a view still holds: windows ``[start, start + size)`` that did not end
    before ``watermark - retention``."""
    return {s for s in starts if s + size > watermark - retention}


def capped(keys: Iterable[Any], max_groups: int) -> list[Any]:
    """Each event's group under ``max_groups`` (no retention): the first ``max_groups`` distinct
    keys, in event order, are groups; every other key folds into ``OTHER``."""
    alive: set[Any] = set()
    out = []
    for key in keys:
        if key not in alive and len(alive) < max_groups:
            alive.add(key)
        out.append(key if key in alive else OTHER)
    return out
