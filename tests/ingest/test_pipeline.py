"""Group commit: concurrent submissions share one fsync, and are applied in WAL order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ingest.commit import Committer
from ingest.http import HttpLog
from views.config import parse
from views.query import all_rows
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
    committer = Committer(registry, tmp_path, frozenset())
    log = HttpLog(committer, tmp_path, 1 << 20, 1 << 20)
    committer.recover(log)
    log.start()
    try:
        batches = [Batch("s", [{"ts": i, "x": i}], 0) for i in range(50)]
        # all fifty are queued before the committer runs: one WAL append, one fsync
        done = await asyncio.gather(*(log.submit(b, None, None) for b in batches))
        assert [position for position, _ in done] == list(range(1, 51))
        assert all(applied.views["v"].applied == 1 for _, applied in done)
        assert log.wal.commits == 1
        assert all_rows(registry.views["v"]) == {(0, ()): [50, sum(range(50))]}
        more = await asyncio.gather(
            *(log.submit(Batch("s", [{"ts": 1, "x": 1}], 0), None, None) for _ in range(3))
        )
        assert [position for position, _ in more] == [51, 52, 53]
        assert log.wal.commits == 2
        assert log.position == 53
    finally:
        await log.stop()
