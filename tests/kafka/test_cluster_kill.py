"""Issue 11, acceptance 2 in small: SIGKILL one member of three while queries run against the
other two. No answer is a 5xx; every answer is either whole (every partition, the exact total) or
says it is partial, and then its total is exactly that of the partitions its freshness lists;
once the group has rebalanced, every answer is whole and exact again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.cluster import PEER_TIMEOUT, WAIT
from benchmarks.server import ServerProcess
from tests.helpers import BASE_TS
from tests.kafka.broker import create_topic, produce
from tests.kafka.cluster import SECRET, SECRET_ENV, agreed, kafka_config

PARTITIONS = 6


VIEWS = """
[views.totals]
sql = "SELECT count(*) AS n, sum(id) AS ids FROM events"
"""


def present(freshness: dict[str, Any]) -> list[int]:
    """The partitions an answer's freshness lists as included."""
    return [int(p.split("@")[0].rpartition(":")[2]) for p in freshness["position"].split(",") if p]


@pytest.mark.asyncio
async def test_a_member_killed_mid_queries_never_gives_a_short_answer_as_whole(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    topic = await create_topic(kafka, PARTITIONS)
    records = [(i % PARTITIONS, {"id": i, "ts": BASE_TS + i}) for i in range(1, 6001)]
    counts = await produce(kafka, topic, records)
    ids = {p: sum(v["id"] for q, v in records if q == p) for p in range(PARTITIONS)}
    path = tmp_path / "tallyd.toml"
    path.write_text(kafka_config(kafka, topic, tmp_path / "shared", VIEWS, snapshot_every="500ms"))
    nodes = [ServerProcess(path, tmp_path / n, tmp_path / f"{n}.log") for n in "abc"]
    for node in nodes:
        await node.start()
    urls = [node.url for node in nodes]
    await agreed(urls, 90)
    survivors = urls[1:]

    answers: list[tuple[float, int, dict[str, Any]]] = []
    async with aiohttp.ClientSession() as session:

        async def whole_everywhere() -> bool:
            for url in survivors:
                async with session.get(f"{url}/v1/views/totals") as r:
                    body = await r.json()
                fresh = body["freshness"]
                if fresh["partial"] or body["rows"][0]["n"] != sum(counts.values()):
                    return False
            return True

        deadline = time.monotonic() + 120
        while not await whole_everywhere():  # before the kill: whole once caught up
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline
        nodes[0].kill()
        whole_after = 0
        while whole_after < 10 and time.monotonic() < deadline:  # bounded in time
            for url in survivors:
                asked = time.monotonic()
                async with session.get(f"{url}/v1/views/totals") as r:
                    answers.append((time.monotonic() - asked, r.status, await r.json()))
            await asyncio.sleep(0.02)  # pacing the queries
            last = answers[-2:]
            if all(s == 200 and not b["freshness"]["partial"] for _, s, b in last):
                whole_after += 1
            else:
                whole_after = 0
    assert whole_after == 10, "the survivors never answered whole again"
    assert all(status == 200 for _, status, _ in answers), [s for _, s, _ in answers]
    partial = 0
    for _, _, body in answers:
        fresh = body["freshness"]
        row = body["rows"][0] if body["rows"] else {"n": 0, "ids": 0}  # no partition: no row
        parts = present(fresh)
        assert row["n"] == sum(counts[p] for p in parts), fresh
        assert row["ids"] == sum(ids[p] for p in parts), fresh
        if fresh["partial"]:
            partial += 1
            if fresh["missing_partitions"] is not None:
                missing = [int(p.rpartition(":")[2]) for p in fresh["missing_partitions"]]
                assert sorted(missing + parts) == list(range(PARTITIONS)), fresh
        else:
            assert sorted(parts) == list(range(PARTITIONS)), fresh
    assert partial > 0, "the kill was never seen: the test did not test anything"
    # bounded: the wait for a map (api.cluster.WAIT) plus a peer's timeout (PEER_TIMEOUT)
    assert max(took for took, _, _ in answers) < WAIT + PEER_TIMEOUT + 2
    for node in nodes[1:]:
        assert node.terminate() == 0
