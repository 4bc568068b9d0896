"""How long installing a large Kafka partition's state holds the event loop (issue 11).

A partition arriving at a member (start, restart, rebalance) brings its part file: the crash
suite's exact audit (``count_distinct`` of every id) reached 82 MB per partition, and installing
it on the event loop held queries and the broker probe for seconds (benchmarks/README.md, "The
crash suite's long form"). Now the state is built in a worker thread while the committer's step
keeps writers out, and swapped in at once (``Registry.build_part`` / ``install_part``).

This builds such a part (``--events`` ids over ``--groups`` batches), then installs it twice
while a ticker on the loop sleeps 1 ms at a time: once built on the loop (as before), once built
in a worker thread. It prints the longest gap the ticker saw — the longest a query would have
waited — and the install's wall time.

    python -m benchmarks.part_install [--events 2000000] [--groups 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from views import snapshot
from views.config import parse
from views.registry import Batch, Registry

KAFKA = {"from": "kafka", "topic": "t", "bootstrap": "127.0.0.1:9", "group": "g", "time": "ts"}
AUDIT = "SELECT batch, count(*) AS n, count_distinct(id) AS ids FROM s GROUP BY batch"
T0 = 1_790_000_000_000


def registry() -> Registry:
    config = parse({"sources": {"s": KAFKA}, "views": {"audit": {"sql": AUDIT}}})
    return Registry(config.sources, config.views)


def part_file(events: int, groups: int) -> bytes:
    source = registry()
    step = 100_000
    for start in range(0, events, step):
        batch = [
            {"ts": T0 + i, "batch": i % groups, "id": i}
            for i in range(start, min(events, start + step))
        ]
        source.apply(Batch("s", batch, start + len(batch), part="t:0"))
    return snapshot.encode(source.part_state("s", "t:0"))


async def stalled(install: Callable[[], object]) -> tuple[float, float]:
    """(longest gap between the ticker's 1 ms sleeps, install wall time), in seconds."""
    longest = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    result = install()
    if asyncio.iscoroutine(result):
        await result
    wall = time.perf_counter() - start
    done.set()
    await task
    return longest, wall


async def run(events: int, groups: int) -> None:
    data = part_file(events, groups)
    print(f"part file: {len(data) / 1e6:.1f} MB ({events:,} ids over {groups:,} groups)")
    state = snapshot.decode(data)

    on_loop = registry()
    gap, wall = await stalled(lambda: on_loop.load_part("s", "t:0", state))
    print(f"built on the loop:      longest loop stall {gap * 1000:8.1f} ms, install {wall:.2f} s")

    aside = registry()

    async def in_thread() -> None:
        built = await asyncio.to_thread(aside.build_part, "s", "t:0", state)
        aside.install_part(built)

    gap, wall = await stalled(in_thread)
    print(f"built in a thread:      longest loop stall {gap * 1000:8.1f} ms, install {wall:.2f} s")
    assert aside.views["audit"].nbytes() == on_loop.views["audit"].nbytes()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.part_install", description=__doc__)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--groups", type=int, default=20_000)
    args = parser.parse_args(argv)
    asyncio.run(run(args.events, args.groups))


if __name__ == "__main__":
    main()
