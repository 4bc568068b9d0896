"""The load generator in several processes, so that it is not what limits the run.

One Python process sends, parses and times requests on one core: on this suite's mixed target it
saturated before the server did. ``run`` deals the scenario out (``Scenario.share``: each worker
a share of every rate, of the subscribers and of the replayed bodies), prepares every worker
(bodies built, subscribers connected), starts them together when all are, and merges what they
measured: histograms added, counts summed, timelines interleaved. The report shows each worker's
CPU; a worker near a whole core marks the run as limited by the generator.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
from collections.abc import Callable
from typing import Any

from benchmarks import load

DONE_S = 120.0  # after the scenario's duration, a worker's last requests and report take this
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
    """The scenario run by ``workers`` processes at once (no more than have something to do:
    ``Scenario.parallel``); the merged report."""
    workers = scenario.parallel(workers)
    if workers <= 1:
        return await load.run(scenario, url, seed, progress)
    ctx = multiprocessing.get_context("spawn")  # no forked event loop, sockets or threads
    go, stop = ctx.Event(), ctx.Event()  # start together; or not at all (another failed)
    results: multiprocessing.Queue[tuple[str, int, Any]] = ctx.Queue()
    procs = [
        ctx.Process(
            target=_work,
            args=(scenario.share(k, workers), url, seed + k, k, go, stop, results),
            name=f"tallyd-bench-{k}",
            daemon=True,
        )
        for k in range(workers)
    ]
    for proc in procs:
        proc.start()
    ready: set[int] = set()
    dumps: dict[int, dict[str, Any]] = {}
    ticks: dict[int, tuple[float, dict[str, Any]]] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_S
    done_by: float | None = None  # set at the start: the run's end, and DONE_S to report
    dead_since: dict[int, float] = {}
    try:
        while len(dumps) < workers:
            if done_by is not None and loop.time() > done_by:  # even one still ticking
                late = [procs[k].name for k in range(workers) if k not in dumps]
                raise RuntimeError(
                    f"load worker(s) {late} still running {DONE_S:.0f} s after the run's end"
                )
            try:
                kind, k, payload = await asyncio.to_thread(results.get, True, 0.5)
            except queue.Empty:
                ended = {k for k, p in enumerate(procs) if p.exitcode is not None} - set(dumps)
                # A worker puts its result, then exits: the result may still be in the pipe when
                # its exit shows. Only one ended for a while with no result has died.
                for k in ended:
                    dead_since.setdefault(k, loop.time())
                dead = [procs[k].name for k in ended if loop.time() - dead_since[k] > 3.0]
                if dead:
                    raise RuntimeError(f"load worker(s) {dead} ended without a result") from None
                if len(ready) < workers and loop.time() > deadline:
                    raise RuntimeError(f"load workers not ready in {READY_S:.0f} s") from None
                continue
            if kind == "error":
                raise RuntimeError(f"load worker {k}: {payload}")
            if kind == "ready":
                ready.add(k)
                if len(ready) == workers:  # every worker prepared: all start together
                    go.set()
                    done_by = loop.time() + scenario.duration + DONE_S
            elif kind == "done":
                dumps[k] = payload
            elif kind == "tick":
                ticks[k] = payload
                if progress is not None and k == 0:
                    progress(_combined(ticks))
    finally:
        if len(ready) < workers:  # the run failed before it started: none of them starts it
            stop.set()
        go.set()  # a worker still waiting is not kept waiting
        for proc in procs:
            await asyncio.to_thread(proc.join, 5)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join)
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
    go: Any,
    stop: Any,
    results: multiprocessing.Queue[tuple[str, int, Any]],
) -> None:
    """One worker process: prepare, say so, wait for the word to go, run, send the result."""

    async def ready() -> None:
        results.put(("ready", k, None))
        if not await asyncio.to_thread(go.wait, READY_S):
            raise RuntimeError(f"not told to start in {READY_S:.0f} s")
        if stop.is_set():
            raise RuntimeError("another worker failed before the start")

    def tick(elapsed: float, counts: dict[str, tuple[int, int, float, str]]) -> None:
        results.put(("tick", k, (elapsed, counts)))

    try:
        measured = asyncio.run(load.measure(scenario, url, seed, tick, ready))
    except BaseException as err:  # told to the parent, which stops the run with it
        results.put(("error", k, f"{type(err).__name__}: {err}"))
        return
    results.put(("done", k, measured.dump()))
