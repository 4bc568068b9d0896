"""How long a restart takes to replay a log of small bodies (the HTTP WAL after the last snapshot).

A real ``tallyd serve`` with the ``shop`` views (no snapshot during the run) takes ``--bodies``
bodies of ``--events`` events each, ``--connections`` at a time; it is then killed (SIGKILL: a
crash, no snapshot on the way out) and started again on the same data directory, and its
``/readyz`` says how many log records it replayed and in how many seconds. Prints that, and the
live ingest rate for comparison.

    python -m benchmarks.wal_replay [--bodies 20000] [--events 1] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from benchmarks.server import ServerProcess
from benchmarks.shop import event

SHOP = Path(__file__).parent / "workloads" / "shop.toml"


async def ingest(url: str, bodies: list[bytes], connections: int) -> float:
    """Post every body, ``connections`` at a time; the seconds it took."""
    queue = list(reversed(bodies))
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            while queue:
                body = queue.pop()
                async with session.post(f"{url}/v1/sources/orders/events", data=body) as answer:
                    assert answer.status == 200, await answer.text()

        await asyncio.gather(*(client() for _ in range(connections)))
    return time.perf_counter() - started


async def measure(bodies: int, events: int, connections: int) -> dict[str, float]:
    rng = random.Random(7)
    now = int(time.time() * 1000)
    made = [
        b"".join(orjson.dumps(event(rng, now + i)) + b"\n" for _ in range(events))
        for i in range(bodies)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "shop.toml"  # no periodic snapshot: the whole run stays in the log
        config.write_text(
            SHOP.read_text().replace('snapshot_every = "30s"', 'snapshot_every = "1h"')
        )
        server = ServerProcess(config, Path(tmp) / "data", Path(tmp) / "server.log")
        await server.start()
        try:
            seconds = await ingest(server.url, made, connections)
        finally:
            server.kill()
        await server.start(timeout=600)
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{server.url}/readyz") as answer,
            ):
                recovery = (await answer.json())["recovery"]
        finally:
            server.kill()
    return {
        "bodies": bodies,
        "events_per_body": events,
        "live_bodies_per_s": round(bodies / seconds),
        "replayed": recovery["replayed_batches"],
        "replay_seconds": recovery["replay_seconds"],
        "replay_bodies_per_s": round(recovery["replayed_batches"] / recovery["replay_seconds"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    print(asyncio.run(measure(args.bodies, args.events, args.connections)))


if __name__ == "__main__":
    main()
