"""Small bodies as a server applies them, in this process: a commit group of one-event (or
ten-event) bodies, read by the row decoder and applied at once (``Registry.apply_group``),
after the views hold a steady state — ms a group, view by view and all together (and the rate
of the 50,000-event bodies that warm them).

    python -m benchmarks.small_groups [--workload shop|flights] [--events 1 10] [--group 24]
        [--views NAME ...]

``--warm N`` events (default 200,000) go in first, in 50,000-event bodies read column-wise: a
server that has run a while, whose summaries are full (``top_k``'s per pair, at its capacity),
not an empty one. ``--group``: bodies a commit group holds (one-event bodies from 64 clients came
in groups of ~24: benchmarks/README.md). Each view is timed alone, then the workload's views
together ("all"); more views are timed alone: ``top_k(dest, 10)`` per carrier for ``flights``
(its six have no ``top_k``); for ``shop``, ``top_k(user_id, 10)`` per country (a summary of
values mostly seen once, which tie at its cut) and the exact ``count_distinct(user_id)`` per
country, all time (a few long runs of values that every group adds to: with ``--warm 2000000``,
about two million); and three views of a group per user (~1M: ``max_groups`` raised for them),
``max``, ``count_distinct`` and ``approx_count_distinct`` of the products each bought (a million
short runs). The time is the apply's only: no HTTP, WAL or event loop.
Run it from two trees in turn to compare a change with what came before.
"""

from __future__ import annotations

import argparse
import random
import time
import tomllib

import orjson

from benchmarks.flights import CONFIG as FLIGHTS
from benchmarks.shop import event
from benchmarks.targets import flights_passes
from ingest.decode import Decoder
from views.config import Config, parse
from views.registry import Batch, Registry

SHOP = FLIGHTS.parent / "shop.toml"
PER_USER = 2_000_000  # max_groups of the per-user views: every user a group of its own
EXTRA: dict[str, dict[str, dict[str, object]]] = {
    "shop": {
        "top_buyers": {
            "sql": "SELECT country, top_k(user_id, 10) AS buyers FROM orders GROUP BY country"
        },
        "distinct_buyers": {
            "sql": "SELECT country, count_distinct(user_id) AS buyers FROM orders GROUP BY country"
        },
        "user_biggest": {
            "sql": "SELECT user_id, max(amount) AS biggest FROM orders GROUP BY user_id",
            "max_groups": PER_USER,
        },
        "user_products": {
            "sql": """SELECT user_id, count_distinct(product) AS products FROM orders
                GROUP BY user_id""",
            "max_groups": PER_USER,
        },
        "user_products_approx": {
            "sql": """SELECT user_id, approx_count_distinct(product) AS products FROM orders
                GROUP BY user_id""",
            "max_groups": PER_USER,
        },
    },
    "flights": {
        "top_destinations": {
            "sql": "SELECT carrier, top_k(dest, 10) AS dests FROM flights GROUP BY carrier"
        },
    },
}


def workload(name: str, lines: int) -> tuple[Config, str, list[bytes]]:
    """(config with the extra views, source, ``lines`` NDJSON lines in time order)."""
    if name == "shop":
        rng = random.Random(7)
        start = int(time.time() * 1000) - 3_600_000
        out = [orjson.dumps(event(rng, start + i // 50)) for i in range(lines)]
        source, raw = "orders", tomllib.loads(SHOP.read_text())
    else:
        out = [line for body in flights_passes(2) for line in body.splitlines()][:lines]
        source, raw = "flights", tomllib.loads(FLIGHTS.read_text())
    raw["views"] |= EXTRA[name]
    return parse(raw, f"{name} + {', '.join(EXTRA[name])}"), source, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.small_groups", description=__doc__)
    parser.add_argument("--workload", choices=["shop", "flights"], default="shop")
    parser.add_argument("--events", type=int, nargs="+", default=[1, 10], help="events a body")
    parser.add_argument("--group", type=int, default=24, help="bodies a commit group")
    parser.add_argument("--groups", type=int, default=100, help="groups timed (default 100)")
    parser.add_argument("--warm", type=int, default=200_000, help="events applied first")
    parser.add_argument("--views", nargs="+", help="time only these (names, or all)")
    args = parser.parse_args(argv)
    most = max(args.events) * args.group * args.groups
    config, source, lines = workload(args.workload, args.warm + most)
    if len(lines) < args.warm + most:
        parser.error(f"{args.workload} has {len(lines):,} events: --warm and the groups need more")
    decoder = Decoder(config.sources[source], 1 << 20)
    warm = [b"\n".join(lines[i : i + 50_000]) for i in range(0, args.warm, 50_000)]
    read = [decoder.columns(body) for body in warm]
    assert all(c is not None for c in read), "a warming body was not read column-wise"
    own = {name: spec for name, spec in config.views.items() if name not in EXTRA[args.workload]}
    views = {**{name: {name: spec} for name, spec in config.views.items()}, "all": own}
    if args.views:
        if unknown := set(args.views) - set(views):
            parser.error(f"no view {', '.join(sorted(unknown))}: {', '.join(views)}")
        views = {name: views[name] for name in args.views}
    print(f"{args.workload}: {args.warm:,} events first, then groups of {args.group} bodies")
    for size in args.events:
        tail = lines[args.warm : args.warm + size * args.group * args.groups]
        bodies = [b"\n".join(tail[i : i + size]) for i in range(0, len(tail), size)]
        decoded = [decoder.decode(body) for body in bodies]
        assert not any(d.errors for d in decoded), "a body was refused"
        for name, chosen in views.items():
            registry = Registry(config.sources, chosen)
            began = time.perf_counter()
            for position, columns in enumerate(read, start=1):
                registry.apply(Batch(source, [], position, columns=columns))
            if size == args.events[0]:  # the large bodies' rate, once per view
                rate = args.warm / (time.perf_counter() - began)
                print(f"  50,000 a body {name:18s} {rate:>28,.0f} events/s")
            position = len(read)
            began = time.perf_counter()
            for g in range(0, len(decoded), args.group):
                group = []
                for d in decoded[g : g + args.group]:
                    position += 1
                    group.append(Batch(source, d.events, position))
                registry.apply_group(group)
            seconds = time.perf_counter() - began
            ms = 1000 * seconds / args.groups
            rate = len(tail) / seconds
            print(f"  {size:>3} a body  {name:18s} {ms:7.2f} ms a group  {rate:>10,.0f} events/s")


if __name__ == "__main__":
    main()
