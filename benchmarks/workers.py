"""The load generator in several processes, so that it is not what limits the run.

One Python process sends, parses and times requests on one core: on this suite's mixed target it
saturated before the server did. ``run`` deals the scenario out (``Scenario.share``: each worker
a share of every rate, of the subscribers and of the replayed bodies), prepares every worker
(bodies built, subscribers connected), starts them together at a barrier, and merges what they
measured: histograms added, counts summed, timelines interleaved. The report shows each worker's
CPU; a worker near a whole core marks the run as limited by the generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from benchmarks import load

READY_S = 120.0  # preparing a worker (building bodies, connecting subscribers) takes at most this


def default_workers() -> int:
    """One per core, at most four: enough to keep a generator core below saturation here."""
    return max(1, min(4, os.cpu_count() or 1))


async def run(
    scenario: load.Scenario,
    url: str,
    workers: int,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The scenario run by ``workers`` processes at once; the merged report."""
    if workers <= 1:
        return await load.run(scenario, url, seed, progress)
    ctx = multiprocessing.get_context("spawn")  # no forked event loop, sockets or threads
    barrier = ctx.Barrier(workers + 1)
    results: multiprocessing.Queue[tuple[str, int, Any]] = ctx.Queue()
    procs = [
        ctx.Process(
            target=_work,
            args=(scenario.share(k, workers), url, seed + k, k, barrier, results),
            name=f"tallyd-bench-{k}",
            daemon=True,
        )
        for k in range(workers)
    ]
    for proc in procs:
        proc.start()
    dumps: dict[int, dict[str, Any]] = {}
    ticks: dict[int, tuple[float, dict[str, Any]]] = {}
    try:
        # a worker that failed to prepare breaks the barrier: its error is on the queue (below)
        with contextlib.suppress(threading.BrokenBarrierError):
            await asyncio.to_thread(barrier.wait, READY_S)
        while len(dumps) < workers:
            try:
                kind, k, payload = await asyncio.to_thread(results.get, True, 1.0)
            except queue.Empty:
                dead = [p.name for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"load worker(s) {dead} died without a result") from None
                continue
            if kind == "error":
                raise RuntimeError(f"load worker {k}: {payload}")
            if kind == "done":
                dumps[k] = payload
            elif kind == "tick":
                ticks[k] = payload
                if progress is not None and k == 0:
                    progress(_combined(ticks))
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    measured, busy = load.Measured.merged([dumps[k] for k in range(workers)])
    return load.summary(scenario, url, measured, busy)


def _combined(ticks: dict[int, tuple[float, dict[str, Any]]]) -> str:
    """One progress line: every worker's latest counts, summed per stream."""
    elapsed = ticks[0][0]
    total: dict[str, tuple[int, int, float, str]] = {}
    for _, counts in ticks.values():
        for name, (items, bad, asked, unit) in counts.items():
            was = total.get(name, (0, 0, 0.0, unit))
            total[name] = (was[0] + items, was[1] + bad, was[2] + asked, unit)
    return load.progress_line(elapsed, total)


def _work(
    scenario: load.Scenario,
    url: str,
    seed: int,
    k: int,
    barrier: Any,
    results: multiprocessing.Queue[tuple[str, int, Any]],
) -> None:
    """One worker process: prepare, wait for the others at the barrier, run, send the result."""

    async def ready() -> None:
        await asyncio.to_thread(barrier.wait, READY_S)

    def tick(elapsed: float, counts: dict[str, tuple[int, int, float, str]]) -> None:
        results.put(("tick", k, (elapsed, counts)))

    try:
        measured = asyncio.run(load.measure(scenario, url, seed, tick, ready))
    except BaseException as err:  # told to the parent, which stops the run with it
        barrier.abort()
        results.put(("error", k, f"{type(err).__name__}: {err}"))
        return
    results.put(("done", k, measured.dump()))
