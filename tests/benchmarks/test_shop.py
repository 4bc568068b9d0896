"""The shop events: one set of distributions (api/shop.py) in two shapes — the demo's orders and
requests, and the benchmarks' leaner reference orders — each carrying what its views read."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import orjson

from api import shop
from api.demo import EXAMPLE
from benchmarks.shop import CONFIG, Bodies, events

REFERENCE_FIELDS = {"ts", "user_id", "country", "device", "product", "amount", "latency_ms"}


def declared(config: Path, source: str) -> set[str]:
    raw = tomllib.loads(config.read_text())["sources"][source]
    return {raw["time"], *raw.get("fields", {})}


def test_reference_orders_keep_the_shape_and_size_the_figures_were_measured_with() -> None:
    sample = list(events(seed=1, n=5000, start=1_790_000_000_000))
    assert all(set(e) == REFERENCE_FIELDS for e in sample)
    assert declared(CONFIG, "orders") <= REFERENCE_FIELDS
    mean = sum(len(orjson.dumps(e)) for e in sample) / len(sample)
    assert 110 < mean < 130  # "~120 bytes" (benchmarks/shop.py, benchmarks/README.md)
    assert {e["country"] for e in sample} <= set(shop.COUNTRIES)
    assert sample == list(events(seed=1, n=5000, start=1_790_000_000_000))  # seeded: replayable


def test_demo_events_carry_what_the_demo_views_read() -> None:
    rng = random.Random(2)
    orders = [shop.order(rng, 1) for _ in range(200)]
    requests = [shop.request(rng, 1) for _ in range(200)]
    assert all(declared(EXAMPLE, "orders") <= set(o) for o in orders)
    assert {"amount", "status"} <= set(orders[0])
    assert all({"ts", "device", "latency_ms"} <= set(r) for r in requests)
    assert {o["status"] for o in orders} == set(shop.STATUSES)


def test_bodies_stamp_every_event_at_send_time() -> None:
    bodies = Bodies(batch=25, count=2, seed=3)
    for ts in (1_790_000_000_000, 1_790_000_000_001, 1_790_000_000_002):
        lines = bodies.next(ts).rstrip(b"\n").split(b"\n")
        assert len(lines) == 25
        assert {orjson.loads(line)["ts"] for line in lines} == {ts}
