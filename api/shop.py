"""The shop's events: one set of distributions, for the demo and the benchmarks alike.

20 countries (skewed: a few sell most), 4 devices, 10,000 products (Pareto-distributed sales),
1,000,000 users, order amounts log-normal around $27. The demo (``tallyd demo``, views in
examples/shop.toml) posts :func:`order` and :func:`request`; the benchmarks' reference workload
(benchmarks/shop.py) builds its leaner orders from the same draws, so a change to a distribution
changes both.

Seeded runs must keep producing the events they always did (benchmark figures and tests replay
them), so each function draws from ``rng`` in a fixed order: add a field at the end, never between.
"""

from __future__ import annotations

import random
from typing import Any

COUNTRIES = [
    "US",
    "DE",
    "FR",
    "GB",
    "JP",
    "BR",
    "IN",
    "CA",
    "AU",
    "ES",
    "IT",
    "NL",
    "SE",
    "PL",
    "MX",
    "KR",
    "CH",
    "BE",
    "AT",
    "NO",
]
DEVICES = ["ios", "android", "web", "desktop"]
STATUSES = ["paid"] * 8 + ["refunded", "failed"]
PATHS = ["/", "/search", "/product", "/cart", "/checkout"]
PRODUCTS = 10_000
USERS = 1_000_000


def user(rng: random.Random) -> str:
    return f"u{rng.randrange(USERS)}"


def country(rng: random.Random) -> str:
    return COUNTRIES[min(int(rng.expovariate(0.25)), len(COUNTRIES) - 1)]


def device(rng: random.Random) -> str:
    return rng.choice(DEVICES)


def product(rng: random.Random) -> str:
    return f"p{min(int(rng.paretovariate(1.2)), PRODUCTS)}"  # a few products sell most


def amount(rng: random.Random) -> float:
    return round(rng.lognormvariate(3.3, 0.7), 2)


def checkout_latency_ms(rng: random.Random) -> float:
    return round(rng.lognormvariate(4.0, 0.5), 1)


def order(rng: random.Random, ts: int) -> dict[str, Any]:
    """An order as the demo's views read it: with a status, a quantity and an id."""
    bought = product(rng)  # drawn first, as it always was (see the module docstring)
    return {
        "ts": ts,
        "order_id": rng.getrandbits(48),
        "user_id": user(rng),
        "country": country(rng),
        "device": device(rng),
        "product": bought,
        "amount": amount(rng),
        "qty": rng.choice((1, 1, 1, 2, 3)),
        "status": rng.choice(STATUSES),
    }


def request(rng: random.Random, ts: int) -> dict[str, Any]:
    """A page request: log-normal latency with a 2% tail of slow ones, 1% server errors."""
    return {
        "ts": ts,
        "device": device(rng),
        "path": rng.choice(PATHS),
        "latency_ms": round(rng.lognormvariate(3.0, 0.6) + (200 if rng.random() < 0.02 else 0), 1),
        "status_code": 500 if rng.random() < 0.01 else 200,
    }
