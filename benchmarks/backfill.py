"""Queries while a view backfills (issue 17): how fast a view added to a running server fills
from the retained log, and what that costs the queries answered meanwhile.

    python -m benchmarks.backfill [--events 1000000] [--chunk 4194304] [--rate 500]

A real ``tallyd serve`` on 127.0.0.1 with the reference workload's config (``retain_events``
on) takes ``--events`` shop orders; then point queries run open loop at ``--rate`` per second,
twice: with nothing else going on, and right after ``tallyd apply`` added a view (the ``revenue``
SQL under a new name) that fills from all of those events, ``backfill_chunk_bytes = --chunk``
per step. It prints both query runs' percentiles, the backfill's time and rate, and checks the
new view ends equal to the one it copies.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import load
from benchmarks.server import ServerProcess
from benchmarks.shop import CONFIG, Bodies

BODY = 50_000
ADDED = "\n[views.copy]\nsql = '''{sql}'''\nretention = \"1d\"\ngrace = \"30s\"\n"
QUERY = {
    "rate": 500,
    "templates": [{"path": "/v1/views/revenue?country={country}&limit=10"}],
    "params": {"country": ["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA"]},
}


def config(chunk: int) -> str:
    text = CONFIG.read_text()
    server = f'[server]\nretain_events = "1h"\nbackfill_chunk_bytes = {chunk}\n'
    return text.replace("[server]\n", server, 1)


def revenue_sql(text: str) -> str:
    start = text.index("[views.revenue]")
    sql = text[text.index('"""', start) + 3 :]
    return sql[: sql.index('"""')]


async def queries(url: str, rate: float, seconds: float) -> dict[str, Any]:
    scenario = load.Scenario("queries", seconds, 16, {"query": {**QUERY, "rate": rate}})
    result = await load.run(scenario, url)
    stream: dict[str, Any] = result["streams"]["query"]
    return stream


async def main_async(events: int, chunk: int, rate: float) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tallyd.toml"
        text = config(chunk)
        path.write_text(text)
        server = ServerProcess(path, Path(tmp) / "data", Path(tmp) / "server.log")
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                bodies = Bodies(BODY, seed=5)
                now = int(time.time() * 1000)
                for _ in range(events // BODY):
                    async with session.post(
                        f"{server.url}/v1/sources/orders/events", data=bodies.next(now)
                    ) as r:
                        assert r.status == 200, await r.text()
                idle = await queries(server.url, rate, 5)
                new = text + ADDED.format(sql=revenue_sql(text))
                began = time.perf_counter()
                async with session.post(f"{server.url}/v1/admin/config", data=new) as r:
                    assert r.status == 200, await r.text()
                during = asyncio.create_task(queries(server.url, rate, 5))
                done_at = None
                while done_at is None and time.perf_counter() - began < 120:
                    async with session.get(f"{server.url}/v1/views/copy?limit=1") as r:
                        if not (await r.json())["freshness"]["backfilling"]:
                            done_at = time.perf_counter()
                    await asyncio.sleep(0.05)  # polling a condition, bounded by 120 s
                busy = await during
                assert done_at is not None, "the backfill did not finish in 120 s"
                answers = []
                for view in ("revenue", "copy"):
                    async with session.get(
                        f"{server.url}/v1/views/{view}?bucket=all&group_by=&limit=1"
                    ) as r:
                        answers.append((await r.json())["rows"])
        finally:
            server.terminate()
    seconds = done_at - began
    print(f"{events:,} events retained; backfill_chunk_bytes {chunk:,}")
    equal = answers[0] == answers[1]
    print(f"backfill: {seconds:.2f} s ({events / seconds:,.0f} events/s), equal: {equal}")
    print("| queries (point, open loop) | achieved/s | p50 ms | p99 ms | max ms | statuses |")
    print("|---|---|---|---|---|---|")
    for label, s in (("idle", idle), ("during the backfill", busy)):
        ms = s["latency_ms"]
        print(
            f"| {label} | {s['achieved_rate']:,.0f} | {ms['p50']} | {ms['p99']} | {ms['max']} | "
            f"{s['statuses']} |"
        )
    return 0 if equal else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=4 << 20)
    parser.add_argument("--rate", type=float, default=500)
    args = parser.parse_args()
    return asyncio.run(main_async(args.events, args.chunk, args.rate))


if __name__ == "__main__":
    raise SystemExit(main())
