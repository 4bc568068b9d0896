"""Issue 11: any node answers for the whole topic. Three `tallyd serve` processes with [cluster]
split a 6-partition topic (a real broker); a fourth, alone in its own group, reads every partition
and is the single-node answer. Every node's answers — rows, percentiles, exact and approximate
distinct counts, top-k, ordering, pages, series split by a key, CSV — equal the single node's.
Then one member stops: once the group has rebalanced, the others answer for the whole topic
again. A peer called without the cluster's secret refuses."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from benchmarks.server import ServerProcess
from tests.helpers import BASE_TS
from tests.kafka.broker import create_topic, produce
from tests.kafka.cluster import SECRET, SECRET_ENV, agreed, kafka_config

PARTITIONS = 6
VIEWS = """
[views.by_key]
sql = '''SELECT k, count(*) AS n, sum(v) AS total, p95(v) AS p95, count_distinct(u) AS users,
         approx_count_distinct(u) AS users_approx, top_k(u, 3) AS top_users, min(v) AS lo,
         max(v) AS hi FROM events GROUP BY k'''

[views.per_minute]
sql = '''SELECT k, tumble(ts, '1 minute') AS minute, count(*) AS n, avg(v) AS mean
         FROM events GROUP BY k, minute'''
"""


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, {"text": await r.text(), "partial": r.headers.get("X-Tallyd-Partial")}


async def caught_up(urls: list[str], end: dict[str, int], timeout: float) -> None:
    """Every partition read to its end by whichever node owns it."""

    async def poll() -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                positions: dict[str, int] = {}
                for url in urls:
                    _, body = await get(session, f"{url}/v1/sources")
                    parts = body["sources"][0]["status"]["partitions"]
                    positions |= {p: s["position"] or 0 for p, s in parts.items()}
                if positions == end:
                    return
                await asyncio.sleep(0.1)  # polling a condition, bounded by wait_for

    await asyncio.wait_for(poll(), timeout)


QUERIES = [
    "/v1/views/by_key",
    "/v1/views/by_key?order_by=-total&limit=3",
    "/v1/views/by_key?k=k3&k=k5",
    "/v1/views/per_minute?limit=7",
    "/v1/views/per_minute?group_by=k&order_by=-n",
    "/v1/views/per_minute?bucket=all&group_by=",
    "/v1/views/per_minute/series?metric=n&split_by=k&top=3",
    "/v1/views/per_minute/series?metric=mean&bucket=5m",
    "/v1/views/per_minute/series?metric=n&split_by=k&format=csv",
]


async def answers(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    out = {}
    for path in QUERIES:
        status, body = await get(session, url + path)
        assert status == 200, (path, body)
        out[path] = body
    # the second page of a paged answer, through its cursor
    _, first = await get(session, url + "/v1/views/per_minute?limit=5")
    _, second = await get(
        session, url + f"/v1/views/per_minute?limit=5&cursor={first['next_cursor']}"
    )
    out["page 2"] = second
    return out


async def parts_calls(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """How many times the member answered the members-only route, by status class (its own
    Prometheus metrics)."""
    async with session.get(f"{url}/metrics") as r:
        text = await r.text()
    out = {"2xx": 0.0, "3xx": 0.0}
    route = 'route="GET /v1/cluster/parts/{view}"'
    for line in text.splitlines():
        if line.startswith("tallyd_request_seconds_count{") and route in line:
            status = line.split('status="', 1)[1][:3]
            out[status] = out.get(status, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) of each Server-Sent Event of a stream."""
    event, data = "message", b""
    async for line in response.content:
        line = line.rstrip(b"\n")
        if line.startswith(b"event: "):
            event = line[7:].decode()
        elif line.startswith(b"data: "):
            data += line[6:]
        elif not line and data:
            yield event, orjson.loads(data)
            event, data = "message", b""


def differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Each differing (row, column) of two answers, for a failure message a person can read."""
    out = [
        f"{k}: {got.get(k)!r} != {want.get(k)!r}"
        for k in want
        if k not in ("rows",)
        and got.get(k) != want.get(k)
        and k not in ("freshness", "next_cursor")
    ]
    for i, (a, b) in enumerate(zip(got.get("rows", []), want.get("rows", []), strict=False)):
        out += [f"row {i} {c}: {a.get(c)!r} != {b[c]!r}" for c in b if a.get(c) != b[c]]
    if len(got.get("rows", [])) != len(want.get("rows", [])):
        out.append(f"{len(got.get('rows', []))} rows != {len(want.get('rows', []))}")
    return out


def same_answers(url: str, got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every answer a member gave equals the single node's, but for freshness and cursors."""
    for path, body in got.items():
        assert without_freshness(body) == without_freshness(expected[path]), (
            url,
            path,
            differences(body, expected[path]),
        )


def without_freshness(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("freshness", "next_cursor", "partial")}


@pytest.mark.asyncio
async def test_every_node_answers_for_the_whole_topic(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    topic = await create_topic(kafka, PARTITIONS)
    rng = random.Random(11)
    data: list[dict[str, Any]] = [
        {
            "id": i,
            "ts": BASE_TS + i * 7,
            "k": f"k{rng.randint(0, 9)}",
            "u": f"u{rng.randint(0, 400)}",
            "v": round(rng.lognormvariate(3, 1), 2),
        }
        for i in range(1, 12_001)
    ]
    counts = await produce(kafka, topic, [(e["id"] % PARTITIONS, e) for e in data])
    end = {f"{topic}:{p}": n for p, n in counts.items()}

    shared = tmp_path / "shared"
    group = f"g{uuid.uuid4().hex[:8]}"
    members_path = tmp_path / "cluster.toml"
    members_path.write_text(kafka_config(kafka, topic, shared, VIEWS, group=group))
    single_path = tmp_path / "single.toml"
    single_path.write_text(
        kafka_config(
            kafka, topic, tmp_path / "alone", VIEWS, group=f"{group}-single", cluster=False
        )
    )
    nodes = [ServerProcess(members_path, tmp_path / n, tmp_path / f"{n}.log") for n in "abc"]
    single = ServerProcess(single_path, tmp_path / "single", tmp_path / "single.log")
    for server in [*nodes, single]:
        await server.start()
    urls = [node.url for node in nodes]
    await agreed(urls, 90)
    await caught_up(urls, end, 90)
    await caught_up([single.url], end, 90)

    async with aiohttp.ClientSession() as session:
        expected = await answers(session, single.url)
        assert len(expected["/v1/views/by_key"]["rows"]) == 10
        assert sum(r["n"] for r in expected["/v1/views/by_key"]["rows"]) == len(data)
        for url in urls:
            got = await answers(session, url)
            same_answers(url, got, expected)
            assert got["/v1/views/per_minute/series?metric=n&split_by=k&format=csv"]["partial"] == (
                "false"
            )
            fresh = got["/v1/views/by_key"]["freshness"]
            assert fresh["partial"] is False
            assert fresh["missing_partitions"] == []
            assert fresh["nodes"] == 3
            assert fresh["position"] == ",".join(
                f"{topic}:{p}@{counts[p]}" for p in range(PARTITIONS)
            )

        # /v1/views: each view's figures are the whole topic's
        _, listed = await get(session, single.url + "/v1/views")
        for url in urls:
            _, theirs = await get(session, url + "/v1/views")
            for mine, want in zip(theirs["views"], listed["views"], strict=True):
                assert mine["stats"] == want["stats"], (url, mine["name"])
                assert mine["freshness"]["partial"] is False

        # Asked again with nothing new on the topic, the peers answer 304 (their state is the one
        # already held) and the answer is the same.
        before = [await parts_calls(session, url) for url in urls[1:]]
        _, again = await get(session, urls[0] + "/v1/views/by_key")
        assert without_freshness(again) == without_freshness(expected["/v1/views/by_key"])
        after = [await parts_calls(session, url) for url in urls[1:]]
        for was, now in zip(before, after, strict=True):
            assert now["3xx"] == was["3xx"] + 1
            assert now["2xx"] == was["2xx"]

        # without the cluster's secret a member gives nothing away
        status, body = await get(session, f"{urls[0]}/v1/cluster/parts/by_key")
        assert status == 403
        assert "shared secret" in body["error"]["message"]

        # A live stream on one member carries changes from partitions the others own.
        member = urls[1]
        async with session.get(f"{member}/v1/views/by_key/subscribe?interval=200ms") as stream:
            events = sse(stream)
            event, first = await anext(events)
            assert event == "answer"
            rows = {r["k"]: r for r in first["rows"]}
            assert list(rows.values()) == expected["/v1/views/by_key"]["rows"]
            more: list[dict[str, Any]] = [
                {"id": i, "ts": BASE_TS + i * 7, "k": f"k{i % 3}", "u": "u1", "v": 1.0}
                for i in range(12_001, 12_601)
            ]
            added = await produce(kafka, topic, [(e["id"] % PARTITIONS, e) for e in more])
            end = {p: end[p] + added.get(int(p.rpartition(":")[2]), 0) for p in end}
            await caught_up([single.url], end, 60)
            _, want = await get(session, single.url + "/v1/views/by_key")

            async def follow() -> None:
                while [rows[k] for k in sorted(rows)] != want["rows"]:
                    event, change = await anext(events)
                    assert event == "change"
                    rows.update({r["k"]: r for r in change["upsert"]})
                    for gone in change["delete"]:
                        rows.pop(gone["k"], None)

            await asyncio.wait_for(follow(), 60)
        data += more

    assert nodes[0].terminate() == 0  # leaves the group; the others take its partitions over
    await agreed(urls[1:], 90)
    await caught_up(urls[1:], end, 90)
    async with aiohttp.ClientSession() as session:
        expected = await answers(session, single.url)
        assert sum(r["n"] for r in expected["/v1/views/by_key"]["rows"]) == len(data)
        for url in urls[1:]:
            got = await answers(session, url)
            same_answers(url, got, expected)
            assert got["/v1/views/by_key"]["freshness"]["nodes"] == 2
    for server in [*nodes[1:], single]:
        assert server.terminate() == 0
