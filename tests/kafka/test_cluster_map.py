"""Issue 11, the first step: three `tallyd serve` processes with [cluster] in one consumer group on
a 6-partition topic (a real broker) each know, through the group protocol alone, every member's
address and partitions — the same map on every node, agreeing with what each node consumes. When
one leaves, the others agree on the next map without it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.server import ServerProcess
from tests.kafka.broker import create_topic

PARTITIONS = 6
SECRET = "test-cluster-secret-0123456789abcdef"  # noqa: S105 - a test's own


def config(bootstrap: str, topic: str, shared: Path) -> str:
    return f"""
[server]
snapshot_every = "1s"

[cluster]
secret_env = "TALLYD_TEST_CLUSTER_SECRET"

[sources.events]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{topic}"
group = "g{uuid.uuid4().hex[:8]}"
time = "ts"
state_dir = "{shared}"
session_timeout = "6s"

[views.n]
sql = "SELECT count(*) AS n FROM events"
"""


async def source_status(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/v1/sources") as r:
        assert r.status == 200
        return dict((await r.json())["sources"][0]["status"])


async def agreed(urls: list[str], timeout: float) -> dict[str, Any]:
    """The map, once every node reports the same assignment, naming exactly these nodes, and
    each node consumes exactly the partitions the map gives it."""

    async def poll() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            while True:
                statuses = [await source_status(session, url) for url in urls]
                maps = [s["cluster"] for s in statuses]
                ids = {m["assignment"] for m in maps}
                if None not in ids and len(ids) == 1:
                    members = maps[0]["members"]
                    by_url = {m["url"]: m["partitions"] for m in members}
                    if sorted(by_url) == sorted(urls) and all(
                        sorted(s["partitions"]) == sorted(by_url[url])
                        for url, s in zip(urls, statuses, strict=True)
                    ):
                        return {"maps": maps, "by_url": by_url}
                await asyncio.sleep(0.1)  # polling a condition, bounded by wait_for

    return await asyncio.wait_for(poll(), timeout)


@pytest.mark.asyncio
async def test_every_node_knows_who_owns_which_partition_and_where(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLYD_TEST_CLUSTER_SECRET", SECRET)
    topic = await create_topic(kafka, PARTITIONS)
    path = tmp_path / "tallyd.toml"
    path.write_text(config(kafka, topic, tmp_path / "shared"))
    nodes = [ServerProcess(path, tmp_path / n, tmp_path / f"{n}.log") for n in "abc"]
    for node in nodes:
        await node.start()
    urls = [node.url for node in nodes]
    state = await agreed(urls, 90)
    every = [f"{topic}:{p}" for p in range(PARTITIONS)]
    owned = [p for parts in state["by_url"].values() for p in parts]
    assert sorted(owned) == sorted(every)  # each partition once
    assert sorted(len(parts) for parts in state["by_url"].values()) == [2, 2, 2]
    for url, status in zip(urls, state["maps"], strict=True):
        assert status["advertise"] == url  # from --listen: [cluster] without advertise
        assert status["protocol"] == "tallyd"
        assert [m["url"] for m in status["members"] if m["self"]] == [url]

    assert nodes[0].terminate() == 0  # leaves the group
    after = await agreed(urls[1:], 90)
    assert after["maps"][0]["assignment"] != state["maps"][0]["assignment"]
    assert sorted(p for parts in after["by_url"].values() for p in parts) == sorted(every)
    for node in nodes[1:]:
        assert node.terminate() == 0
