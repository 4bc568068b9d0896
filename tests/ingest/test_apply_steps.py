"""A batch is applied a view at a time, so the event loop answers queries in between — but never
half of it: a cancellation (a shutdown) mid-batch finishes the batch and reports it first, so
the state and the positions it reflects stay together."""

from __future__ import annotations

import asyncio

import pytest

from ingest.commit import Step
from views.config import parse
from views.query import all_rows
from views.registry import Applied, Batch, Registry

CONFIG = {
    "sources": {"s": {"time": "ts", "fields": {"k": "string"}}},
    "views": {
        "first": {"sql": "SELECT k, count(*) AS n FROM s GROUP BY k"},
        "second": {"sql": "SELECT k, count(*) AS n, sum(x) AS total FROM s GROUP BY k"},
    },
}
EVENTS = [{"ts": 1_790_000_000_000 + i, "k": f"k{i % 3}", "x": i} for i in range(30)]


def counted(registry: Registry, view: str) -> int:
    return sum(int(values[0]) for values in all_rows(registry.views[view]).values())


@pytest.mark.asyncio
async def test_a_cancelled_apply_finishes_its_batch_and_reports_it() -> None:
    config = parse(CONFIG)
    registry = Registry(config.sources, config.views)
    reported: list[Applied] = []
    task = asyncio.create_task(
        Step(registry).apply_yielding(Batch("s", EVENTS, 7), reported.append)
    )
    await asyncio.sleep(0)  # the task runs to its first yield: one view has the batch
    assert (counted(registry, "first"), counted(registry, "second")) == (30, 0)
    assert registry.sources["s"].positions.get("") is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (counted(registry, "first"), counted(registry, "second")) == (30, 30)
    assert registry.sources["s"].positions[""] == 7
    assert len(reported) == 1
    assert set(reported[0].views) == {"first", "second"}


@pytest.mark.asyncio
async def test_steps_and_one_apply_leave_the_same_state() -> None:
    config = parse(CONFIG)
    stepped, whole = Registry(config.sources, config.views), Registry(config.sources, config.views)
    reported: list[Applied] = []
    await Step(stepped).apply_yielding(Batch("s", EVENTS, 1), reported.append)
    applied = whole.apply(Batch("s", EVENTS, 1))
    assert reported == [applied]
    for view in ("first", "second"):
        assert all_rows(stepped.views[view]) == all_rows(whole.views[view])
