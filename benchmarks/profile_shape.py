"""Where one input shape's engine time goes: decode and apply rates, a cProfile of its apply and
of its decode,
and Arrow's JSON reader alone on its bodies against a flat shape's, with its threads and in one
(``benchmarks/shapes.py``'s bodies: four of 50,000 events).

    python -m benchmarks.profile_shape debezium [--top 25] [--bodies 40]

In process, one core, nothing else running; best of three for the rates. ``--bodies N`` (more
than the four) also times each body's apply as the state grows: the first quarter's rate against
the last's says whether a batch's cost grows with what the view holds.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import pstats
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pyarrow as pa

from benchmarks import shapes
from ingest.changes import ChangeDecoder
from ingest.decode import Decoder
from views.config import parse
from views.registry import Batch, Registry


def best(run: Callable[[], Any], passes: int = 3) -> tuple[float, float]:
    """The fastest pass's (wall seconds, CPU seconds of the whole process, every thread)."""
    fastest = (float("inf"), float("inf"))
    for _ in range(passes):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        fastest = min(fastest, (time.perf_counter() - wall, time.process_time() - cpu))
    return fastest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=[s.name for s in shapes.SHAPES])
    parser.add_argument("--top", type=int, default=25, help="profile lines shown")
    parser.add_argument("--bodies", type=int, default=4, help="of 50,000 events each")
    args = parser.parse_args(argv)
    shape = next(s for s in shapes.SHAPES if s.name == args.shape)
    now = int(time.time() * 1000)
    lines = shapes.bodies(shape, now, count=args.bodies)
    events = sum(len(body) for body in lines)
    config = parse(shape.config(), shape.name)
    spec = config.sources["s"]
    decoder = Decoder(spec, 1 << 20)
    changes = ChangeDecoder(decoder, spec.format, False)

    payloads = [b"\n".join(b) + b"\n" for b in lines]  # a body arrives whole: not timed

    def decode() -> list[Any]:
        if shape.http:
            return [(decoder.columns(p), None) for p in payloads]
        return [changes.columns(list[bytes | None](b)) for b in lines]

    read = decode()

    def apply() -> None:
        registry = Registry(config.sources, config.views)
        for position, (columns, weights) in enumerate(read, start=1):
            registry.apply(Batch("s", [], position, columns=columns, weights=weights))

    print(f"{shape.name}: {events:,} events, {len(lines[0][0])} bytes the first")
    decoding, applying = best(decode)[0], best(apply)[0]
    print(f"decode {events / decoding:,.0f} events/s, apply {events / applying:,.0f}/s")
    if len(read) >= 8:
        growing(config, read, [len(body) for body in lines])
    profile = cProfile.Profile()
    profile.runcall(apply)
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)
    print("the decode, by own time:")
    profile = cProfile.Profile()
    profile.runcall(decode)
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)

    # Arrow's reader alone: these bodies against the flat epoch-ms shape's, same orders
    row = pa.struct(list(decoder.reader._schema()))
    flat_shape = next(s for s in shapes.SHAPES if s.name == "epoch_ms")
    flat = b"\n".join(shapes.bodies(flat_shape, now, count=1)[0])
    flat_spec = parse(flat_shape.config(), flat_shape.name).sources["s"]
    flat_schema = Decoder(flat_spec, 1 << 20).reader._schema()  # its own: epoch ms, not text
    body = b"\n".join(lines[0])
    nested = pa.schema([("op", pa.string()), ("before", row), ("after", row)])
    for name, data, schema in (
        (shape.name, body, nested if not shape.http else pa.schema(list(row))),
        ("epoch_ms (flat)", flat, flat_schema),
    ):
        lines_in = data.count(b"\n") + (not data.endswith(b"\n"))
        print(f"Arrow read_json, {name}: {len(data) / 50_000:.0f} B a line")
        # what ingest.columnar chooses between: Arrow's threads (a body alone) or one thread
        for threads in (True, False):
            reading = partial(decoder.reader.read_json, data, partial(pa.schema, schema), threads)
            table = reading()  # a failed read answers None at once: never time that
            assert table is not None, f"{name}: Arrow could not read it"
            assert table.num_rows == lines_in, f"{name}: {table.num_rows} rows of {lines_in}"
            wall, cpu = best(reading, 5)
            print(
                f"  threads={threads}: {lines_in / wall:,.0f} lines/s, "
                f"{wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms CPU a body"
            )
        compare_polars(data, lines_in, schema)


def growing(config: Any, read: list[Any], sizes: list[int]) -> None:
    """Each body's apply timed as the state grows: the first quarter's rate and the last's."""
    registry = Registry(config.sources, config.views)
    seconds = []
    for position, (columns, weights) in enumerate(read, start=1):
        began = time.perf_counter()
        registry.apply(Batch("s", [], position, columns=columns, weights=weights))
        seconds.append(time.perf_counter() - began)
    q = len(read) // 4
    first, last = sum(sizes[:q]) / sum(seconds[:q]), sum(sizes[-q:]) / sum(seconds[-q:])
    print(f"apply as the state grows: the first {q} bodies {first:,.0f}/s, the last {last:,.0f}/s")


def compare_polars(data: bytes, lines_in: int, schema: pa.Schema) -> None:
    """The same body through polars' NDJSON reader, same schema, when polars is installed (it is
    not a dependency: the comparison is what decided against it)."""
    try:
        polars: Any = importlib.import_module("polars")
    except ImportError:
        print("  polars: not installed (`pip install polars` to compare its reader)")
        return
    wanted = polars.from_arrow(schema.empty_table()).schema
    wall, cpu = best(lambda: polars.read_ndjson(io.BytesIO(data), schema=wanted), 5)
    print(
        f"  polars {polars.__version__} read_ndjson: {lines_in / wall:,.0f} lines/s, "
        f"{wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms CPU a body"
    )


if __name__ == "__main__":
    main()
