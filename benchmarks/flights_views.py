"""The ``flights`` workload in this process: decode, then each view's apply alone and all six
together, best of ``--passes`` — where the engine's time goes, view by view, with no HTTP, WAL or
event loop in the way.

    python -m benchmarks.flights_views [--passes N]

Run it from two trees (``git worktree add ../base REV``; ``cd ../base && python -m
benchmarks.flights_views``) in turn to compare a change with what came before.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.flights import CONFIG
from benchmarks.targets import flights_passes
from ingest.decode import Decoder
from views.batch import Columns
from views.config import load
from views.registry import Batch, Registry


def _apply(registry: Registry, batches: list[Columns]) -> float:
    began = time.perf_counter()
    for position, columns in enumerate(batches, start=1):
        registry.apply(Batch("flights", [], position, columns=columns))
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flights_views", description=__doc__)
    parser.add_argument("--passes", type=int, default=2, help="best of this many (default 2)")
    args = parser.parse_args(argv)
    config = load(CONFIG)
    decoder = Decoder(config.sources["flights"], 1 << 20)
    bodies = flights_passes(2)
    events = sum(body.count(b"\n") for body in bodies)
    best: dict[str, float] = {}
    for _ in range(args.passes):
        began = time.perf_counter()
        read = [decoder.columns(body) for body in bodies]
        seconds = {"decode": time.perf_counter() - began}
        batches = [columns for columns in read if columns is not None]
        assert len(batches) == len(bodies), "a flights body was not read column-wise"
        for name, spec in config.views.items():
            seconds[name] = _apply(Registry(config.sources, {name: spec}), batches)
        seconds["all views"] = _apply(Registry(config.sources, config.views), batches)
        for key, value in seconds.items():
            best[key] = min(best.get(key, value), value)
    print(f"{events:,} events in {len(bodies)} bodies, best of {args.passes}")
    for key, value in best.items():
        per_body = 1000 * value / len(bodies)
        print(f"  {key:18s} {events / value:>12,.0f} events/s  {per_body:6.1f} ms/body")


if __name__ == "__main__":
    main()
