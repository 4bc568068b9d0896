"""Kafka end to end: consume a backlog into the demo's order views while answering queries.

    python -m benchmarks.kafka_backlog [--events 200000] [--bootstrap HOST:PORT]

Produces shop orders to a 4-partition topic (Tansu on 127.0.0.1 unless --bootstrap), starts a real
``tallyd serve`` reading it with the views of examples/shop.toml, and reports
* the end-to-end rate (records until every partition's position reaches its end);
* point-query latency while the backlog is consumed, then idle (sequential, closed loop).
Bounded: a fixed number of events; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import tomllib
import uuid
from pathlib import Path

import aiohttp

from api.demo import EXAMPLE
from api.shop import order
from benchmarks.broker import broker_unless, create_topic, produce
from benchmarks.server import ServerProcess


def config(bootstrap: str, topic: str) -> str:
    views = tomllib.loads(EXAMPLE.read_text())["views"]
    text = f"""
[server]
snapshot_every = "5s"

[sources.orders]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{topic}"
group = "bench{uuid.uuid4().hex[:6]}"
time = "ts"
"""
    text += 'fields = { user_id = "string", country = "string", device = "string", '
    text += 'product = "string", status = "string" }\n'

    for name, body in views.items():
        if "FROM orders" in body["sql"]:
            text += f"\n[views.{name}]\nsql = '''{body['sql']}'''\n"
    return text


async def latencies(
    session: aiohttp.ClientSession, url: str, stop: asyncio.Event, limit: int
) -> list[float]:
    out: list[float] = []
    while not stop.is_set() and len(out) < limit:
        sent = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
        out.append((time.perf_counter() - sent) * 1000)
    return out


def summary(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=100)
    return f"p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms, max {max(xs):.1f} ms ({len(xs)} queries)"


async def run(events: int, bootstrap: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp, broker_unless(bootstrap, Path(tmp)) as kafka:
        topic = await create_topic(kafka, 4)
        rng = random.Random(3)
        start = int(time.time() * 1000) - events
        counts = await produce(
            kafka, topic, [(i % 4, order(rng, start + i)) for i in range(events)]
        )
        end = {f"{topic}:{p}": n for p, n in counts.items()}
        path = Path(tmp) / "bench.toml"
        path.write_text(config(kafka, topic))
        server = ServerProcess(path, Path(tmp) / "data", Path(tmp) / "server.log")
        await server.start()
        point = f"{server.url}/v1/views/revenue_by_country?country=US&limit=10"
        async with aiohttp.ClientSession() as session:
            stop = asyncio.Event()
            busy = asyncio.create_task(latencies(session, point, stop, 10**6))
            started = None
            deadline = time.monotonic() + 300  # bounded: report what happened, then stop
            while time.monotonic() < deadline:
                async with session.get(f"{server.url}/v1/sources") as r:
                    parts = (await r.json())["sources"][0]["status"]["partitions"]
                positions = {p: s["position"] or 0 for p, s in parts.items()}
                if started is None and parts:  # assigned: consumption starts now
                    started = time.perf_counter()
                if positions == end:
                    break
                await asyncio.sleep(0.01)
            else:
                raise TimeoutError(
                    f"not consumed in 300 s: {positions} of {end}; "
                    f"server log: {(Path(tmp) / 'server.log').read_text()[-1500:]}"
                )
            assert started is not None
            elapsed = time.perf_counter() - started
            stop.set()
            during = await busy
            idle = await latencies(session, point, asyncio.Event(), 2000)
        server.terminate()
    if elapsed < 1.0:
        rate = f"not measured: consumed in {elapsed:.2f} s, use more --events"
    else:
        rate = f"{events / elapsed:,.0f} events/s"
    print(f"| Kafka end to end into 4 order views ({events:,} records, 4 partitions) | {rate} |")
    print(f"| point query while consuming the backlog | {summary(during)} |")
    print(f"| point query idle, same run | {summary(idle)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bootstrap")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.bootstrap))


if __name__ == "__main__":
    main()
