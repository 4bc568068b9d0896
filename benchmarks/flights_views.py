"""The ``flights`` workload in this process: decode, then each view's apply alone and all six
together, best of ``--passes`` — where the engine's time goes, view by view, with no HTTP, WAL or
event loop in the way.

    python -m benchmarks.flights_views [--passes N] [--batch N ...]

``--batch``: events per applied batch (default 50,000, a body's; ``--batch 50000 4500 1000``
shows what smaller batches cost: a Kafka fetch's part holds ~4,500 flights, and HTTP clients
post small bodies too). Below ``ingest.columnar.MIN_LINES`` a body is read row by row: such
batches are slices of columns read in 50,000-event bodies, and only their apply is timed.
``--events N``: the first N flights only (tiny batches take long).

Run it from two trees (``git worktree add ../base REV``; ``cd ../base && python -m
benchmarks.flights_views``) in turn to compare a change with what came before.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.flights import CONFIG
from benchmarks.targets import flights_passes
from ingest.columnar import MIN_LINES
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
    parser.add_argument("--batch", type=int, nargs="+", default=[50_000], help="events a batch")
    parser.add_argument("--events", type=int, help="only the first N flights (tiny batches)")
    args = parser.parse_args(argv)
    config = load(CONFIG)
    decoder = Decoder(config.sources["flights"], 1 << 20)
    lines = [line for body in flights_passes(2) for line in body.splitlines(keepends=True)]
    lines = lines[: args.events]
    for size in args.batch:
        step = size if size >= MIN_LINES else 50_000  # smaller ones: sliced once read
        bodies = [b"".join(lines[i : i + step]) for i in range(0, len(lines), step)]
        best: dict[str, float] = {}
        for _ in range(args.passes):
            began = time.perf_counter()
            read = [decoder.columns(body) for body in bodies]
            seconds = {"decode": time.perf_counter() - began}
            batches = [columns for columns in read if columns is not None]
            assert len(batches) == len(bodies), "a flights body was not read column-wise"
            if size < MIN_LINES:  # such bodies are read row by row: the apply alone, of slices
                seconds.pop("decode")
                batches = [
                    c.take(np.arange(i, min(i + size, len(c))))
                    for c in batches
                    for i in range(0, len(c), size)
                ]
            for name, spec in config.views.items():
                seconds[name] = _apply(Registry(config.sources, {name: spec}), batches)
            seconds["all views"] = _apply(Registry(config.sources, config.views), batches)
            for key, value in seconds.items():
                best[key] = min(best.get(key, value), value)
        count = len(batches)
        print(f"{len(lines):,} events in {count:,} batches of {size:,}, best of {args.passes}")
        for key, value in best.items():
            per_body = 1000 * value / count
            print(f"  {key:18s} {len(lines) / value:>12,.0f} events/s  {per_body:6.1f} ms/batch")


if __name__ == "__main__":
    main()
