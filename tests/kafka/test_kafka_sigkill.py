"""Acceptance 2: produce a seeded event set to a 4-partition topic in stages, SIGKILL the
consuming server at random points, restart it each time: the final answers equal the reference
over the topic."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.server import ServerProcess
from tests import reference as ref
from tests.e2e.test_sigkill import rows
from tests.helpers import BASE_TS, until
from tests.kafka.broker import create_topic, produce
from views import snapshot

N = 60_000
PARTITIONS = 4
STAGES = 5


def config(bootstrap: str, topic: str) -> str:
    return f"""
[server]
snapshot_every = "200ms"

[sources.events]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{topic}"
group = "g{uuid.uuid4().hex[:8]}"
time = "ts"
max_batch = 500
session_timeout = "6s"

[views.audit]
sql = "SELECT count(*) AS n, sum(id) AS ids, count_distinct(id) AS distinct_ids FROM events"

[views.stats]
sql = '''SELECT k, tumble(ts, '1 minute') AS minute, count(*) AS n, sum(v) AS total,
         max(v) AS hi FROM events GROUP BY k, minute'''
grace = "1d"
"""


def events() -> list[dict[str, Any]]:
    rng = random.Random(11)
    return [
        {
            "id": i,
            "ts": BASE_TS + i * 5 + rng.randrange(3000),
            "k": rng.choice("abcdef"),
            "v": rng.choice([rng.randrange(1000), round(rng.random() * 100, 2)]),
        }
        for i in range(1, N + 1)
    ]


async def positions(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/sources") as r:
        status = (await r.json())["sources"][0]["status"]
    return {p: s["position"] or 0 for p, s in status["partitions"].items()}


def saved(state_dir: Path) -> int:
    """Records covered by the part files on disk (what a restart resumes from)."""
    total = 0
    for path in state_dir.glob("*.tsnap"):
        total += snapshot.decode(path.read_bytes())["position"] or 0
    return total


async def wait_saved(state_dir: Path, target: int, timeout: float) -> None:
    async def reached() -> bool:
        return saved(state_dir) >= target

    await until(reached, timeout)


async def wait_until(url: str, done: Any, timeout: float) -> dict[str, int]:
    async def poll() -> dict[str, int]:
        while True:
            current = await positions(url)
            if done(current):
                return current
            await asyncio.sleep(0.02)  # polling a condition, bounded by wait_for

    return await asyncio.wait_for(poll(), timeout)


@pytest.mark.long
@pytest.mark.asyncio
async def test_sigkill_while_consuming_counts_every_event_once(kafka: str, tmp_path: Path) -> None:
    topic = await create_topic(kafka, PARTITIONS)
    data = events()
    path = tmp_path / "tallyd.toml"
    path.write_text(config(kafka, topic))
    server = ServerProcess(path, tmp_path / "data", tmp_path / "server.log")
    state_dir = tmp_path / "data" / "kafka" / "events"
    rng = random.Random(5)
    # The topic grows in stages, one before each start, and each kill lands once the part files
    # cover a random point inside the newest stage: the process is killed while it has that
    # stage's records to consume (or has just consumed them), never after the topic's end. A
    # single produce up front let a fast consumer reach the end before three kills had landed.
    size = N // STAGES
    end: dict[str, int] = {}
    kills = 0
    for stage in range(STAGES):
        chunk = data[stage * size : (stage + 1) * size]
        counts = await produce(kafka, topic, [(e["id"] % PARTITIONS, e) for e in chunk])
        for p, n in counts.items():
            end[f"{topic}:{p}"] = end.get(f"{topic}:{p}", 0) + n
        await server.start()
        if stage == STAGES - 1:
            break
        await wait_saved(state_dir, stage * size + rng.randrange(1_000, size - 1_000), 60)
        server.kill()
        kills += 1
    await wait_until(server.url, lambda p: p == end, 120)
    # Read once the positions are at the end: the "assigned" line is written in the same step
    # that installs the restored positions, so it is there even when they needed no consuming.
    log = (tmp_path / "server.log").read_text()
    resumed = [
        line
        for line in log.splitlines()
        if "event=assigned" in line and "restored=none" not in line
    ]
    assert len(resumed) >= kills, "each restart must resume from part files, not from scratch"
    audit = await rows(server.url, "audit")
    assert audit == [{"n": N, "ids": N * (N + 1) // 2, "distinct_ids": N}]

    truth = [dict(e, _ts=e["ts"]) for e in data]
    expected = []
    for (start, k), group in ref.group(truth, lambda e: True, ["k"], ref.tumble(60_000)).items():
        vs = [e["v"] for e in group]
        expected.append(
            {
                "k": k,
                "minute": ref.iso(start),
                "n": len(group),
                "total": ref.fsum_or_none(vs),
                "hi": max(vs),
            }
        )
    expected.sort(key=lambda r: (r["minute"], r["k"]))
    assert await rows(server.url, "stats") == expected
    assert server.terminate() == 0
    parts = sorted(p.name for p in (tmp_path / "data" / "kafka" / "events").glob("*.tsnap"))
    assert parts == [f"{topic}-{p}.tsnap" for p in range(PARTITIONS)]
