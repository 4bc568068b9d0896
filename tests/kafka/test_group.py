"""Acceptance 4: two servers in one consumer group split a 4-partition topic, never both counting
a partition; the union of their answers equals the reference. Then one stops, and the other takes
over its partitions (from the part files it wrote on the way out) and alone equals the reference."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.server import ServerProcess
from tests.e2e.test_sigkill import rows
from tests.helpers import BASE_TS
from tests.kafka.broker import create_topic, produce

PARTITIONS = 4


def config(bootstrap: str, topic: str, shared: Path) -> str:
    return f"""
[server]
snapshot_every = "300ms"

[sources.events]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{topic}"
group = "g{uuid.uuid4().hex[:8]}"
time = "ts"
state_dir = "{shared}"
session_timeout = "6s"

[views.by_key]
sql = "SELECT k, count(*) AS n, sum(id) AS ids FROM events GROUP BY k"
"""


async def status(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/sources") as r:
        return dict((await r.json())["sources"][0]["status"])


async def settle(urls: list[str], end: dict[str, int], timeout: float) -> list[set[str]]:
    """Wait until the servers together own every partition once, each read to its end."""

    async def poll() -> list[set[str]]:
        while True:
            owned = []
            positions: dict[str, int] = {}
            for url in urls:
                parts = (await status(url))["partitions"]
                owned.append(set(parts))
                positions |= {p: s["position"] or 0 for p, s in parts.items()}
            disjoint = sum(len(o) for o in owned) == len(set().union(*owned))
            if disjoint and positions == end and all(owned):
                return owned
            await asyncio.sleep(0.05)  # polling a condition, bounded by wait_for

    return await asyncio.wait_for(poll(), timeout)


def reference(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    n = Counter(e["k"] for e in data)
    ids: Counter[str] = Counter()
    for e in data:
        ids[e["k"]] += e["id"]
    return [{"k": k, "n": n[k], "ids": ids[k]} for k in sorted(n)]


@pytest.mark.asyncio
async def test_two_servers_split_then_one_takes_over(kafka: str, tmp_path: Path) -> None:
    topic = await create_topic(kafka, PARTITIONS)
    rng = random.Random(21)
    data: list[dict[str, Any]] = [
        {"id": i, "ts": BASE_TS + i, "k": rng.choice("abcdefgh")} for i in range(1, 20_001)
    ]
    counts = await produce(kafka, topic, [(e["id"] % PARTITIONS, e) for e in data])
    end = {f"{topic}:{p}": n for p, n in counts.items()}
    path = tmp_path / "tallyd.toml"
    path.write_text(config(kafka, topic, tmp_path / "shared"))
    a = ServerProcess(path, tmp_path / "a", tmp_path / "a.log")
    b = ServerProcess(path, tmp_path / "b", tmp_path / "b.log")
    await a.start()
    await b.start()
    owned = await settle([a.url, b.url], end, 90)
    assert all(len(o) == 2 for o in owned), owned  # the range assignor splits 4 partitions 2/2

    union: Counter[str] = Counter()
    union_ids: Counter[str] = Counter()
    for url in (a.url, b.url):
        for row in await rows(url, "by_key"):
            union[row["k"]] += row["n"]
            union_ids[row["k"]] += row["ids"]
    assert [{"k": k, "n": union[k], "ids": union_ids[k]} for k in sorted(union)] == reference(data)

    assert a.terminate() == 0  # leaves the group after writing its partitions' part files
    (alone,) = await settle([b.url], end, 90)
    assert len(alone) == PARTITIONS
    assert await rows(b.url, "by_key") == reference(data)
    assert b.terminate() == 0
