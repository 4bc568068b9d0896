"""What a cluster costs and gives on this machine: Kafka ingest by one process vs two members of a
[cluster] group, and a point query answered by a single node vs by a member that asks its peer.

    python -m benchmarks.cluster [--events N] [--queries Q] [--bootstrap HOST:PORT]

Everything runs here (Tansu unless ``--bootstrap``), on 127.0.0.1, bounded in events and time:

* **ingest**: N shop orders on a 4-partition topic, consumed into the four reference views by
  one process alone, then by two members of one group (each 2 partitions): events/s from the
  first record consumed to every partition's end.
* **queries** (nothing arriving meanwhile), one client, one request at a time: the same point
  query asked again (the answer cache; a member's peer answers 304), and a different point query
  each time (a member rebuilds the view from its copy of the peer's partitions and its own),
  and the first query of a view on a member (the peer sends its whole state of the view).
  Both members' answers are checked equal to the single node's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from api.shop import COUNTRIES
from benchmarks.broker import broker_unless
from benchmarks.server import ServerProcess
from benchmarks.targets import kafka_config, produce_shop

SECRET_ENV = "TALLYD_BENCH_CLUSTER_SECRET"  # noqa: S105 - a variable's name
MINUTE = 60_000


async def consumed(servers: list[ServerProcess], end: dict[str, int]) -> float:
    """Seconds from the first record consumed by any of ``servers`` until every partition's
    position is at its end (at most 600 s)."""
    first = None
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            positions: dict[str, int] = {}
            for server in servers:
                async with session.get(f"{server.url}/v1/sources") as r:
                    parts = (await r.json())["sources"][0]["status"]["partitions"]
                positions |= {p: s["position"] or 0 for p, s in parts.items()}
            if first is None and any(positions.values()):
                first = time.perf_counter()
            if positions == end and first is not None:
                return time.perf_counter() - first
            await asyncio.sleep(0.02)  # polling progress, bounded by the deadline
    raise TimeoutError(f"not consumed in 600 s: {positions} of {end}")


def clustered(text: str, shared: Path) -> str:
    """The same config as members of a cluster, sharing one state directory (so a partition
    that moves when the second member joins takes its state along)."""
    text = text.replace(
        "[sources.orders]", f'[cluster]\nsecret_env = "{SECRET_ENV}"\n\n[sources.orders]', 1
    )
    return text.replace('time = "ts"\n', f'time = "ts"\nstate_dir = "{shared}"\n', 1)


async def timed(session: aiohttp.ClientSession, url: str) -> tuple[float, Any]:
    began = time.perf_counter()
    async with session.get(url) as r:
        body = await r.json()
        assert r.status == 200, body
    return time.perf_counter() - began, body


def figures(seconds: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50_ms": 1000 * cuts[49], "p99_ms": 1000 * cuts[98], "n": len(seconds)}


def rows(body: dict[str, Any]) -> list[Any]:
    return list(body["rows"])


async def queries(single: str, members: list[str], newest: int, count: int) -> dict[str, Any]:
    rng = random.Random(3)
    minute = newest - newest % MINUTE - MINUTE
    paths = [
        f"/v1/views/revenue?country={rng.choice(COUNTRIES[:10])}"
        f"&from={minute - MINUTE * rng.randrange(0, 30)}&to={minute + MINUTE}"
        for _ in range(count)
    ]
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        cold = [(await timed(session, f"{members[0]}/v1/views/{v}"))[0] for v in ("buyers",)]
        out["first_query_of_a_view_ms"] = 1000 * cold[0]
        same = paths[0]
        for name, base in (("single", single), ("member", members[0])):
            await timed(session, base + same)  # warm: the cached path is what is measured
            out[f"{name}_same"] = figures([(await timed(session, base + same))[0] for _ in paths])
            took = []
            for path in paths:
                limit = f"&limit={rng.randint(50, 99)}"  # a different answer to compute
                seconds, _ = await timed(session, base + path + limit)
                took.append(seconds)
            out[f"{name}_different"] = figures(took)
        for path in paths[:20]:  # every member answers as the single node does
            _, want = await timed(session, single + path)
            for member in members:
                _, got = await timed(session, member + path)
                assert rows(got) == rows(want), (member, path)
                assert got["freshness"]["partial"] is False
    return out


async def run(events: int, count: int, bootstrap: str | None) -> dict[str, Any]:
    os.environ.setdefault(SECRET_ENV, os.urandom(16).hex())
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        broker_unless(bootstrap, Path(tmp_name)) as kafka,
    ):
        tmp = Path(tmp_name)
        topic, end, _ = await produce_shop(kafka, events)
        out: dict[str, Any] = {"events": events}

        def server(name: str, text: str) -> ServerProcess:
            path = tmp / f"{name}.toml"
            path.write_text(text)
            return ServerProcess(path, tmp / f"{name}-data", tmp / f"{name}.log")

        single = server("single", kafka_config(kafka, topic, "all"))
        await single.start(timeout=120)
        out["ingest_one_process_per_s"] = events / await consumed([single], end)
        group_text = clustered(kafka_config(kafka, topic, "all"), tmp / "shared")
        members = [server(f"member{i}", group_text) for i in range(2)]
        for member in members:
            await member.start(timeout=120)
        out["ingest_two_members_per_s"] = events / await consumed(members, end)
        try:
            async with aiohttp.ClientSession() as session:
                _, answer = await timed(session, f"{single.url}/v1/views/revenue?limit=1")
            newest = int(answer["freshness"]["watermark_ms"])
            out |= await queries(single.url, [m.url for m in members], newest, count)
        finally:
            for process in [single, *members]:
                process.terminate()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__)
    parser.add_argument("--events", type=int, default=400_000, help="orders on the topic")
    parser.add_argument("--queries", type=int, default=300, help="queries of each kind")
    parser.add_argument("--bootstrap", help="an existing Kafka (default: start Tansu)")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.events, args.queries, args.bootstrap))
    for key, value in result.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    main()
