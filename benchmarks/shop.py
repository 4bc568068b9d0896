"""The reference workload, ``shop``: order events of ~120 bytes, and ready-made NDJSON bodies.

The distributions are the demo's (api/shop.py): 20 countries (skewed: a few sell most), 4 devices,
10,000 products (Pareto-distributed sales), 1,000,000 users; each order carries an amount
(2 decimals) and the checkout latency (0.1 ms).
The views are in ``benchmarks/workloads/shop.toml``: revenue by country per minute (count, sum,
avg, max), latency p50/p95/p99 by device per minute, approximate distinct users by country per
hour, top products all time.

A load generator in Python cannot build a million JSON events per second, so bodies are made
before a run from templates: all the events of one body share its timestamp (one request's worth
of orders arriving in the same millisecond), written in at send time by a byte-level join.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from api import shop

CONFIG = Path(__file__).parent / "workloads" / "shop.toml"
_TS = -1  # placeholder timestamp in templates


def event(rng: random.Random, ts: int) -> dict[str, Any]:
    """The reference workload's order: the demo's distributions (api/shop.py), fewer fields
    (no status, id or quantity) and the checkout latency. Its ~120 bytes are what the figures of
    benchmarks/README.md were measured with: keep its fields as they are."""
    return {
        "ts": ts,
        "user_id": shop.user(rng),
        "country": shop.country(rng),
        "device": shop.device(rng),
        "product": shop.product(rng),
        "amount": shop.amount(rng),
        "latency_ms": shop.checkout_latency_ms(rng),
    }


def events(seed: int, n: int, start: int, step_ms: float = 1.0) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n):
        yield event(rng, start + int(i * step_ms))


class Bodies:
    """``count`` different NDJSON bodies of ``batch`` events, each stamped at send time."""

    def __init__(self, batch: int, count: int = 8, seed: int = 1) -> None:
        rng = random.Random(seed)
        marker = orjson.dumps(_TS)
        self.templates = []
        for _ in range(count):
            text = b"\n".join(orjson.dumps(event(rng, _TS)) for _ in range(batch)) + b"\n"
            self.templates.append(text.split(b'"ts":' + marker))
        self.batch = batch
        self.i = 0

    def next(self, ts: int) -> bytes:
        parts = self.templates[self.i % len(self.templates)]
        self.i += 1
        return (b'"ts":' + str(ts).encode()).join(parts)
