"""SIGKILL at every named point of the write path (ingest/faults.py), then restart: nothing
acknowledged is lost, nothing is counted twice, and the snapshot files left behind are handled."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import aiohttp
import pytest

from benchmarks.crash import CONFIG, Ledger, post_batch, verdict
from benchmarks.server import ServerProcess
from ingest.faults import POINTS

WAL_POINTS = [
    "before_wal_append",
    "after_write_before_fsync",
    "after_fsync_before_apply",
    "before_response",
]
SNAPSHOT_POINTS = ["mid_snapshot", "after_rename_before_dir_fsync"]


def test_every_named_point_is_tested() -> None:
    assert sorted(WAL_POINTS + SNAPSHOT_POINTS) == sorted(POINTS)


@pytest.mark.asyncio
@pytest.mark.parametrize("point", WAL_POINTS + SNAPSHOT_POINTS)
async def test_a_kill_at_a_named_point_loses_and_duplicates_nothing(
    point: str, tmp_path: Path
) -> None:
    config = tmp_path / "tallyd.toml"
    config.write_text(CONFIG.format(snapshot_every="1h"))
    data, log = tmp_path / "data", tmp_path / "server.log"
    armed = ServerProcess(
        config, data, log, launcher=[sys.executable, "-m", "tests.e2e.crashpoint", point, "3"]
    )
    await armed.start()
    ledger, rng = Ledger(), random.Random(3)
    async with aiohttp.ClientSession() as session:
        if point in WAL_POINTS:  # the third batch dies at the point
            for _ in range(10):
                if not await post_batch(session, armed.url, ledger, rng):
                    break
        else:  # batches, then snapshots: the third snapshot write dies at the point
            for _ in range(3):
                await post_batch(session, armed.url, ledger, rng)
            for _ in range(3):
                try:
                    async with session.post(f"{armed.url}/v1/admin/snapshot") as response:
                        await response.read()
                except aiohttp.ClientError:
                    break
    assert armed.proc is not None
    assert await asyncio.to_thread(armed.proc.wait, 10) == -9  # it died by SIGKILL, at the point
    leftovers = sorted(p.name for p in (data / "snapshots").glob("*"))
    restarted = ServerProcess(config, data, log)
    await restarted.start()
    try:
        result = await verdict(restarted.url, ledger, kafka=False)
    finally:
        restarted.terminate()
    assert result.problems == [], (point, result.problems, leftovers)
    assert result.lost == result.duplicated == 0
    assert result.acknowledged <= result.counted <= result.sent
    if point == "before_wal_append":
        assert result.counted == result.acknowledged  # the batch in flight never reached the log
    if point in ("after_fsync_before_apply", "before_response"):
        assert result.counted == result.sent  # on disk before the kill: counted, unacknowledged
    if point == "mid_snapshot":
        assert any(name.endswith(".tmp") for name in leftovers)  # ignored by the restart
