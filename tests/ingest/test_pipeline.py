"""Group commit: concurrent submissions share one fsync, and are applied in WAL order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ingest.pipeline import Pipeline
from views.config import parse
from views.registry import Batch, Registry


@pytest.mark.asyncio
async def test_concurrent_batches_share_one_fsync(tmp_path: Path) -> None:
    config = parse(
        {
            "sources": {"s": {"time": "ts"}},
            "views": {"v": {"sql": "SELECT count(*) AS n, sum(x) AS x FROM s"}},
        }
    )
    registry = Registry(config.sources, config.views)
    pipeline = Pipeline(registry, tmp_path, 1 << 20)
    pipeline.recover()
    pipeline.start()
    try:
        batches = [Batch("s", [{"ts": i, "x": i}], 0) for i in range(50)]
        # all fifty are queued before the committer runs: one WAL append, one fsync
        positions = await asyncio.gather(*(pipeline.submit(b) for b in batches))
        assert positions == list(range(1, 51))
        assert pipeline.wal.commits == 1
        assert registry.views["v"].parts[""].buckets[0][()][1].result() == sum(range(50))
        more = await asyncio.gather(
            *(pipeline.submit(Batch("s", [{"ts": 1, "x": 1}], 0)) for _ in range(3))
        )
        assert more == [51, 52, 53]
        assert pipeline.wal.commits == 2
    finally:
        await pipeline.stop()
