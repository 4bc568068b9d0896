"""``Committer.snapshot`` (ingest/commit.py), where its mutants survived: what the main snapshot
holds (not the partitions of a source saved apart, in part files), what it reports of itself
(in /v1/status: the file's size and the time it took) and the line it logs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from ingest.commit import Committer
from ingest.http import HttpLog
from views import snapshot
from views.config import parse
from views.registry import Batch, Registry

T0 = 1_790_000_000_000
KAFKA = {"from": "kafka", "topic": "t", "bootstrap": "127.0.0.1:9", "group": "g", "time": "ts"}
CONFIG = {
    "sources": {"s": {"time": "ts"}, "k": KAFKA},
    "views": {
        "on_s": {"sql": "SELECT x, count(*) AS n FROM s GROUP BY x"},
        "on_k": {"sql": "SELECT x, count(*) AS n FROM k GROUP BY x"},
    },
}


@pytest.mark.asyncio
async def test_a_snapshot_leaves_detached_partitions_out_and_reports_its_size_and_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse(CONFIG)
    committer = Committer(Registry(config.sources, config.views), tmp_path, frozenset({"k"}))
    log = HttpLog(committer, tmp_path, 1 << 20, 1 << 20)
    committer.recover(log)
    log.start()
    try:
        events = [{"ts": T0 + i, "x": i % 7} for i in range(5_000)]
        await log.submit(Batch("s", events, 0), None, None)
        async with committer.step() as step:
            step.apply(Batch("k", events, 5_000, part="t:0"))  # a Kafka partition's records
        caplog.set_level(logging.DEBUG, logger="tallyd.commit")
        started = time.perf_counter()
        info = await committer.snapshot(log)
        wall = time.perf_counter() - started
    finally:
        await log.stop()
    path = tmp_path / "snapshots" / info["file"]
    assert info["bytes"] == path.stat().st_size
    assert isinstance(info["seconds"], float)
    assert 0 <= info["seconds"] <= wall
    assert info["seconds"] == round(info["seconds"], 4)  # shown to a tenth of a millisecond
    state = snapshot.decode(path.read_bytes())
    assert set(state["views"]["on_s"]["parts"]) == {""}  # the HTTP source's one partition
    assert "parts" not in state["views"]["on_k"]  # the Kafka partition is in its part file
    assert "positions" not in state["sources"]["k"]
    assert state["sources"]["s"]["positions"] == {"": info["position"]}
    logged = [r.getMessage() for r in caplog.records if r.name == "tallyd.commit"]
    assert logged == ["event=snapshot " + " ".join(f"{k}={v}" for k, v in info.items())]


@pytest.mark.asyncio
async def test_a_recovery_reports_the_time_it_took_to_load_and_to_replay(tmp_path: Path) -> None:
    """/readyz's state_seconds and replay_seconds: each a part of the recovery's wall time."""
    config = parse(CONFIG)
    committer = Committer(Registry(config.sources, config.views), tmp_path, frozenset({"k"}))
    log = HttpLog(committer, tmp_path, 1 << 20, 1 << 20)
    committer.recover(log)
    log.start()
    events = [{"ts": T0 + i, "x": i % 7} for i in range(5_000)]
    try:
        await log.submit(Batch("s", events, 0), None, None)
        await committer.snapshot(log)
        await log.submit(Batch("s", events, 0), None, None)  # after the snapshot: replayed
    finally:
        await log.stop()
    again = Committer(Registry(config.sources, config.views), tmp_path, frozenset({"k"}))
    started = time.perf_counter()
    result = again.recover(HttpLog(again, tmp_path, 1 << 20, 1 << 20))
    wall = time.perf_counter() - started
    assert result.replayed == 1
    assert 0 < result.state_seconds < wall
    assert 0 < result.replay_seconds < wall
    assert result.state_seconds + result.replay_seconds <= wall
