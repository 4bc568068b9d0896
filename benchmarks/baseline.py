"""Baseline figures for the engine and the HTTP server, measured in one run on this machine.

    python -m benchmarks.baseline [--events 200000]

* engine: ``Registry.apply`` of pre-decoded shop orders into the demo's order views, batches of
  5,000 (pure Python, one core);
* decode: NDJSON bytes → validated events (``ingest.decode``);
* http ingest: a real ``tallyd serve`` subprocess on 127.0.0.1, one client posting 10,000-event
  NDJSON bodies back to back (each acknowledged only after fsync and apply);
* query: closed-loop sequential GETs (one in flight), so this is latency, not capacity.

Bounded: a fixed number of events and requests, then it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from api.demo import EXAMPLE
from api.shop import order
from benchmarks.server import ServerProcess
from ingest.decode import Decoder
from views.config import load
from views.registry import Batch, Registry

BATCH = 5_000


def orders(n: int) -> list[dict[str, object]]:
    rng = random.Random(1)
    start = 1_790_000_000_000
    return [order(rng, start + i * 3) for i in range(n)]


def engine(events: list[dict[str, object]]) -> float:
    config = load(EXAMPLE)
    registry = Registry(config.sources, config.views)
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        registry.apply(Batch("orders", events[i : i + BATCH], i // BATCH + 1))
    return len(events) / (time.perf_counter() - started)


def decode(events: list[dict[str, object]]) -> float:
    config = load(EXAMPLE)
    decoder = Decoder(config.sources["orders"], 1 << 20)
    bodies = [
        b"\n".join(orjson.dumps(e) for e in events[i : i + BATCH])
        for i in range(0, len(events), BATCH)
    ]
    started = time.perf_counter()
    for body in bodies:
        decoder.decode(body)
    return len(events) / (time.perf_counter() - started)


async def http(events: list[dict[str, object]], queries: int) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(EXAMPLE, Path(tmp) / "data", Path(tmp) / "log")
        await server.start()
        try:
            size = 10_000
            bodies = [
                b"\n".join(orjson.dumps(e) for e in events[i : i + size])
                for i in range(0, len(events), size)
            ]
            async with aiohttp.ClientSession() as session:
                url = f"{server.url}/v1/sources/orders/events"
                started = time.perf_counter()
                for body in bodies:
                    async with session.post(url, data=body) as response:
                        assert response.status == 200, await response.text()
                rate = len(events) / (time.perf_counter() - started)
                latencies = []
                point = f"{server.url}/v1/views/revenue_by_country?country=US&limit=10"
                for _ in range(queries):
                    sent = time.perf_counter()
                    async with session.get(point) as response:
                        await response.read()
                    latencies.append((time.perf_counter() - sent) * 1000)
        finally:
            server.terminate()
    return rate, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=2_000)
    args = parser.parse_args()
    events = orders(args.events)
    decode_rate = decode([dict(e) for e in events])
    engine_rate = engine([dict(e) for e in events])
    http_rate, latencies = asyncio.run(http(events, args.queries))
    q = statistics.quantiles(latencies, n=100)
    print(f"events: {args.events:,} shop orders into the {len(load(EXAMPLE).views)} demo views")
    print(f"| decode NDJSON + validate | {decode_rate:,.0f} events/s |")
    print(f"| engine apply (4 order views) | {engine_rate:,.0f} events/s |")
    print(f"| HTTP ingest, 10k-event bodies, fsync + apply | {http_rate:,.0f} events/s |")
    print(f"| point query, sequential | p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms |")


if __name__ == "__main__":
    main()
