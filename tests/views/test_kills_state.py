"""views/state.py's pair index, through a view: where its data begins (``View.first_start``, a
series' default range starts there) after buckets expired, for any slot, and at the epoch."""

from __future__ import annotations

from typing import Any

from views.config import parse
from views.registry import Batch, Registry
from views.view import View

MINUTE = 60_000
BASE = 1_790_000_040_000  # a minute's start
SQL = "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n FROM s GROUP BY k, m"


def view_after(*batches: list[dict[str, Any]]) -> View:
    views = {"v": {"sql": SQL, "grace": "1m", "retention": "2m"}}
    config = parse({"sources": {"s": {"time": "ts"}}, "views": views})
    registry = Registry(config.sources, config.views)
    for i, events in enumerate(batches, start=1):
        registry.apply(Batch("s", events, i))
    return registry.views["v"]


def test_the_first_start_is_the_oldest_alive_bucket_whatever_its_slot() -> None:
    first = [{"ts": BASE + 1, "k": "a"}]  # slot 0, the first bucket
    later = [{"ts": BASE + 2 * MINUTE + 1, "k": "b"}, {"ts": BASE + 2 * MINUTE + 2, "k": "a"}]
    assert view_after(first).first_start() == BASE
    assert view_after(first, later).first_start() == BASE  # nothing expired yet
    # The first bucket expires: the oldest one left is two minutes on; its first pair is b's.
    expiring = [{"ts": BASE + 4 * MINUTE + 1, "k": "c"}]
    assert view_after(first, later, expiring).first_start() == BASE + 2 * MINUTE
    only_b = [{"ts": BASE + 2 * MINUTE + 1, "k": "b"}]  # slot 1 alone in the oldest bucket
    assert view_after(first, only_b, expiring).first_start() == BASE + 2 * MINUTE


def test_the_first_start_at_the_epoch_is_zero() -> None:
    assert view_after([{"ts": 1_000, "k": "a"}]).first_start() == 0
    assert view_after([{"ts": MINUTE + 1, "k": "a"}]).first_start() == MINUTE
    assert view_after([]).first_start() is None
