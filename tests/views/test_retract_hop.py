"""A change stream into a view over hop windows: every window a retraction falls in gives the row
back, also when an earlier window of the same retraction empties its pair and the pairs are
compacted meanwhile (the bug: a later window's pair id was read before that compaction)."""

from __future__ import annotations

from typing import Any

from tests.views.test_engine_oracle import BASE, SOURCES
from views.config import parse
from views.query import all_rows
from views.registry import Batch, Registry
from views.view import View

# BASE: minutes start at BASE - 20 s, BASE + 40 s, ...
HOP = (
    "SELECT k, hop(ts, '2 minutes', '1 minute') AS w, count(*) AS n, max(a) AS hi "
    "FROM cdc GROUP BY k, w"
)


def changed(sql: str, batches: list[tuple[list[dict[str, Any]], list[int]]]) -> View:
    """A view of ``sql`` over the oracle test's change stream, after ``batches`` (rows, weights)."""
    views = {"v": {"sql": sql, "grace": "1h"}}
    config = parse({"sources": {"cdc": SOURCES["cdc"]}, "views": views})
    registry = Registry(config.sources, config.views)
    for i, (rows, weights) in enumerate(batches, start=1):
        registry.apply(Batch("cdc", [dict(r) for r in rows], i, part="t:0", weights=weights))
    return registry.views["v"]


def applied(batches: list[tuple[list[dict[str, Any]], list[int]]]) -> dict[Any, Any]:
    return all_rows(changed(HOP, batches))


def test_rows_retracted_over_overlapping_hop_windows_leave_nothing() -> None:
    a = {"ts": BASE + 253_439, "k": "k0", "a": 89.36}  # windows from BASE + 160 s and + 220 s
    b = {"ts": BASE + 192_056, "k": "k0", "a": 45.32}  # windows from BASE + 100 s and + 160 s
    never = {"ts": BASE + 123_708, "k": "k0", "a": 85.78}  # never added: takes the in-order path
    assert applied([([a, b, a, b, never], [1, 1, -1, -1, -1])]) == {}
    # The same, the adds in a batch of their own.
    assert applied([([a, b], [1, 1]), ([a, b, never], [-1, -1, -1])]) == {}
    # And what stays is exactly what was not retracted: b's windows, with b alone.
    left = applied([([a, b], [1, 1]), ([a, never], [-1, -1])])
    kept = [1, 45.32, 1]  # n, hi, and the hidden count of rows a retracting view keeps
    assert left == {(BASE + 100_000, ("k0",)): kept, (BASE + 160_000, ("k0",)): kept}
