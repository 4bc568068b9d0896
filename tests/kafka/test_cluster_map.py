"""Issue 11, the first step: three `tallyd serve` processes with [cluster] in one consumer group on
a 6-partition topic (a real broker) each know, through the group protocol alone, every member's
address and partitions — the same map on every node, agreeing with what each node consumes. When
one leaves, the others agree on the next map without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.server import ServerProcess
from tests.kafka.broker import create_topic
from tests.kafka.cluster import SECRET, SECRET_ENV, agreed, kafka_config

PARTITIONS = 6
VIEWS = '[views.n]\nsql = "SELECT count(*) AS n FROM events"\n'


@pytest.mark.asyncio
async def test_every_node_knows_who_owns_which_partition_and_where(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    topic = await create_topic(kafka, PARTITIONS)
    path = tmp_path / "tallyd.toml"
    path.write_text(kafka_config(kafka, topic, tmp_path / "shared", VIEWS))
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
