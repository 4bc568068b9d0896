"""SIGKILL at every named point of the write path (ingest/faults.py), then restart: nothing
acknowledged is lost, nothing is counted twice, and the snapshot files left behind are handled."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.crash import CONFIG, Ledger, post_batch, verdict
from benchmarks.server import ServerProcess
from ingest.faults import POINTS
from tests.api.test_backfill import ADDED, TWIN, body, reference, to_ms
from tests.helpers import until

WAL_POINTS = [
    "before_wal_append",
    "after_write_before_fsync",
    "after_fsync_before_apply",
    "before_response",
]
SNAPSHOT_POINTS = ["mid_snapshot", "after_rename_before_dir_fsync"]
BACKFILL_POINTS = ["mid_backfill"]  # test_a_kill_mid_backfill_resumes_and_ends_exact


def test_every_named_point_is_tested() -> None:
    assert sorted(WAL_POINTS + SNAPSHOT_POINTS + BACKFILL_POINTS) == sorted(POINTS)


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


@pytest.mark.asyncio
async def test_a_kill_mid_backfill_resumes_and_ends_exact(tmp_path: Path) -> None:
    """A view added to a running server is filling from the retained log when the process dies
    (SIGKILL after its 40th step of ~60). The restart — with the config file now holding the
    view — goes on from the backfill the newest snapshot holds and ends equal to the reference
    over every acknowledged event, and to a twin view defined from the start."""
    server = '[server]\nsnapshot_every = "100ms"\nbackfill_chunk_bytes = 1500\n'
    config = tmp_path / "tallyd.toml"
    config.write_text(TWIN.replace("[server]\n", server))
    data, log = tmp_path / "data", tmp_path / "server.log"
    launcher = [sys.executable, "-m", "tests.e2e.crashpoint", "mid_backfill", "40"]
    armed = ServerProcess(config, data, log, launcher=launcher)
    await armed.start()
    rng, acked = random.Random(5), []
    async with aiohttp.ClientSession() as session:
        for n in range(300):
            body_bytes, events = body(rng, n * 20_000, large=False)
            async with session.post(f"{armed.url}/v1/sources/orders/events", data=body_bytes) as r:
                assert r.status == 200, await r.text()
            acked += events
        config.write_text(ADDED.replace("[server]\n", server))
        with contextlib.suppress(aiohttp.ClientError):  # it may die before it answers
            async with session.post(f"{armed.url}/v1/admin/config", data=config.read_text()) as r:
                assert r.status == 200, await r.text()
    assert armed.proc is not None
    assert await asyncio.to_thread(armed.proc.wait, 30) == -9  # it died mid-backfill
    restarted = ServerProcess(config, data, log)
    await restarted.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def answer(view: str) -> dict[str, Any]:
                async with session.get(f"{restarted.url}/v1/views/{view}?limit=10000") as r:
                    assert r.status == 200
                    got: dict[str, Any] = await r.json()
                    return got

            async def done() -> bool:
                return (await answer("added"))["freshness"]["backfilling"] is False

            await until(done, 60)
            added, twin = await answer("added"), await answer("twin")
    finally:
        assert restarted.terminate() == 0
    rows = {(r["status"], r["m"]): (r["n"], r["total"]) for r in added["rows"]}
    assert rows == {(r["status"], r["m"]): (r["n"], r["total"]) for r in twin["rows"]}
    expected = reference(acked)
    assert {(s, to_ms(m)): v for (s, m), v in rows.items()} == expected
    assert "goes on filling from the retained history" in log.read_text()
