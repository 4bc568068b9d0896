"""Issue 11: writes to any member. In a cluster, a post to a Kafka source appends its events to
the topic (idempotent producer, acks=all, keyed by ``partition_by``) and answers once the broker
has them, with their positions; a read on another member with ``min_position`` waits until the
cluster has applied that far (read-your-writes across members). A bad body names its line and
field and appends nothing; a request with an Idempotency-Key is counted once however many
members it is retried on; a Kafka source outside a cluster still takes no posts."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from benchmarks.server import ServerProcess
from tests.helpers import BASE_TS
from tests.kafka.broker import create_topic
from tests.kafka.cluster import SECRET, SECRET_ENV, agreed, kafka_config

PARTITIONS = 4


BY_K = 'partition_by = "k"'
VIEWS = """
[views.by_key]
sql = "SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k"
"""


def body(events: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(e) for e in events) + b"\n"


@pytest.mark.asyncio
async def test_a_post_to_one_member_is_read_on_another(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    topic = await create_topic(kafka, PARTITIONS)
    group = f"g{uuid.uuid4().hex[:8]}"
    path = tmp_path / "cluster.toml"
    path.write_text(kafka_config(kafka, topic, tmp_path / "shared", VIEWS, group=group, extra=BY_K))
    lone = tmp_path / "lone.toml"
    lone.write_text(
        kafka_config(
            kafka, topic, tmp_path / "lone", VIEWS, group=f"{group}-lone", cluster=False, extra=BY_K
        )
    )
    a, b = (ServerProcess(path, tmp_path / n, tmp_path / f"{n}.log") for n in "ab")
    single = ServerProcess(lone, tmp_path / "single", tmp_path / "single.log")
    for server in (a, b, single):
        await server.start()
    await agreed([a.url, b.url], 90)
    events: list[dict[str, Any]] = [
        {"ts": BASE_TS + i, "k": f"k{i % 7}", "v": i} for i in range(300)
    ]
    url = "/v1/sources/events/events"
    async with aiohttp.ClientSession() as session:
        async with session.post(a.url + url, data=body(events)) as r:
            ack = await r.json()
            assert r.status == 200, ack
        assert ack["accepted"] == 300
        assert ack["rejected"] == 0
        ends = dict(item.split("@") for item in ack["position"].split(","))
        assert sum(int(n) for n in ends.values()) == 300  # a new topic: offsets count records

        async with session.get(f"{b.url}/v1/views/by_key?min_position={ack['position']}") as r:
            answer = await r.json()
        assert answer["freshness"]["min_position_reached"] is True
        want = [
            {"k": f"k{j}", "n": len(events[j::7]), "total": sum(e["v"] for e in events[j::7])}
            for j in range(7)
        ]
        assert answer["rows"] == want
        async with session.get(f"{single.url}/v1/views/by_key?min_position={ack['position']}") as r:
            assert r.status == 400  # not a cluster member: it has no such wait
        # a bad body: its line and field named, nothing appended
        bad = body(events[:1]) + b'{"k": "k1", "v": 1}\n'
        async with session.post(a.url + url, data=bad) as r:
            refusal = await r.json()
        assert r.status == 400
        assert refusal["error"]["errors"][0]["line"] == 2
        assert refusal["error"]["errors"][0]["field"] == "ts"
        answer = await idempotent_posts(session, a.url, b.url, answer["rows"])
        for headers in ({}, {"Idempotency-Key": "k-2"}):  # a Kafka source outside a cluster
            async with session.post(single.url + url, data=body(events[:5]), headers=headers) as r:
                refusal = await r.json()
            assert r.status == 405
            assert "only in a cluster" in refusal["error"]["message"]
        # nothing of the refused posts reached the topic
        async with session.get(f"{a.url}/v1/views/by_key?min_position={ack['position']}") as r:
            again = await r.json()
        assert again["rows"] == answer["rows"]
    for server in (a, b, single):
        assert server.terminate() == 0


async def idempotent_posts(
    session: aiohttp.ClientSession, a: str, b: str, before: list[dict[str, Any]]
) -> dict[str, Any]:
    """A request with an Idempotency-Key, retried on the member that took it (answered from
    memory) and on another (appended again, dropped by the partitions' owners): counted once.
    A key reused for another body: refused where it was taken, dropped by the owners where it
    was not. Events with and without the ``partition_by`` field (placed in blocks)."""
    url = "/v1/sources/events/events"
    events: list[dict[str, Any]] = [
        {"ts": BASE_TS + i, "v": 1000 + i} | ({"k": f"k{i % 3}"} if i % 2 else {})
        for i in range(40)
    ]
    key = {"Idempotency-Key": f"req-{uuid.uuid4()}"}
    acks = []
    for member, replayed in ((a, "true"), (a, "true"), (b, None)):
        async with session.post(member + url, data=body(events), headers=key) as r:
            acks.append(await r.json())
            assert r.status == 200, acks[-1]
            assert acks[-1]["accepted"] == 40
            assert r.headers.get("Idempotent-Replayed") == (replayed if len(acks) > 1 else None)
    assert acks[1] == acks[0]  # the same member answers the retry from memory
    assert acks[2]["position"] != acks[0]["position"]  # another member appended it again
    async with session.post(a + url, data=body(events[:7]), headers=key) as r:
        assert r.status == 422  # the key with another body, on a member that took it
    # A second key, taken by a; then reused for another body on b, which never saw it: b
    # appends, the owners drop those records (the first body counts) and say so.
    second = {"Idempotency-Key": f"req-{uuid.uuid4()}"}
    async with session.post(a + url, data=body(events[:7]), headers=second) as r:
        assert r.status == 200
        acks.append(await r.json())
    async with session.post(b + url, data=body(events[7:10]), headers=second) as r:
        assert r.status == 200
        acks.append(await r.json())
    # every position covered: the answer counts the 40 events once, the reused key's not at all
    positions: dict[str, int] = {}
    for ack in acks:
        for item in ack["position"].split(","):
            part, _, offset = item.rpartition("@")
            positions[part] = max(positions.get(part, 0), int(offset))
    wait = ",".join(f"{part}@{offset}" for part, offset in sorted(positions.items()))
    async with session.get(f"{b}/v1/views/by_key?min_position={wait}&limit=100") as r:
        answer = await r.json()
    assert answer["freshness"]["min_position_reached"] is True
    totals: dict[str | None, list[int]] = {row["k"]: [row["n"], row["total"]] for row in before}
    for event in events + events[:7]:
        total = totals.setdefault(event.get("k"), [0, 0])
        total[0] += 1
        total[1] += event["v"]
    got = {row["k"]: [row["n"], row["total"]] for row in answer["rows"]}
    assert got == totals
    dropped = conflicts = 0
    for member in (a, b):
        async with session.get(f"{member}/v1/sources") as r:
            status = (await r.json())["sources"][0]["status"]["idempotency"]
        dropped, conflicts = dropped + status["dropped"], conflicts + status["conflicts"]
    assert (dropped, conflicts) == (40, 3)
    rows: dict[str, Any] = answer
    return rows
