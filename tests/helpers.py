"""Shared test helpers: a real in-process server on 127.0.0.1 and seeded event generators."""

from __future__ import annotations

import asyncio
import contextlib
import random
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestClient, TestServer

from api.app import make_app
from api.engine import ENGINE, Engine
from api.settings import load_settings
from views.config import parse

COUNTRIES = ["FR", "DE", "US", "JP", "BR", "IN"]
DEVICES = ["ios", "android", "web"]
STATUSES = ["paid", "paid", "paid", "refunded", "failed"]
BASE_TS = 1_790_000_000_000  # 2026-09-21, a fixed epoch so runs are reproducible


def order_events(seed: int, n: int, disorder_ms: int = 20_000) -> list[dict[str, Any]]:
    """Real-shaped orders with NULLs, absent fields, integer and float amounts and disorder."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        ts = BASE_TS + i * 150 + rng.randrange(disorder_ms)  # ~3 hours, shuffled within 20 s
        event: dict[str, Any] = {
            "id": i,
            "ts": ts,
            "country": rng.choice(COUNTRIES),
            "device": rng.choice(DEVICES),
            "user_id": f"u{rng.randrange(400)}",
            "product": f"p{min(int(rng.paretovariate(1.1)), 40)}",
            "amount": rng.choice([round(rng.uniform(0.5, 300), 2), rng.randrange(1, 50)]),
            "price": round(rng.uniform(1, 20), 2),
            "qty": rng.randrange(1, 5),
            "status": rng.choice(STATUSES),
        }
        roll = rng.random()
        if roll < 0.1:
            event["amount"] = None
        elif roll < 0.15:
            del event["amount"]
        if rng.random() < 0.3:
            event["coupon"] = rng.choice(["SPRING", "VIP"])
        elif rng.random() < 0.2:
            event["coupon"] = None
        if rng.random() < 0.2:  # epoch seconds and RFC 3339 are accepted too
            event["ts"] = ts / 1000
        events.append(event)
    return events


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(e) for e in events) + b"\n"


@contextlib.asynccontextmanager
async def running(
    config_text: str, data_dir: Path, wait: bool = True, **settings: Any
) -> AsyncIterator[tuple[TestClient[Any, Any], Engine]]:
    """Start the real app on 127.0.0.1, wait until it has restored (unless ``wait`` is false:
    tests of failed restores), yield (client, engine)."""
    config = parse(tomllib.loads(config_text), "test.toml")
    merged = {"data_dir": str(data_dir), "snapshot_every": "1h", **settings}
    app = make_app(config, load_settings(config.server, "test.toml", **merged))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    engine = app[ENGINE]
    try:
        if wait:
            await asyncio.wait_for(engine.ready.wait(), 60)
        yield client, engine
    finally:
        await client.close()


async def fetch_all(
    client: TestClient[Any, Any],
    path: str,
    pairs: list[tuple[str, str]] | None = None,
    **params: str,
) -> list[dict[str, Any]]:
    """Every row of a query, following next_cursor pages."""
    rows: list[dict[str, Any]] = []
    base = [*(pairs or []), *params.items()]
    query = base
    while True:
        response = await client.get(path, params=query)
        body = await response.json()
        assert response.status == 200, body
        rows += body["rows"]
        if body["next_cursor"] is None:
            assert body["truncated"] is False
            return rows
        query = [*base, ("cursor", body["next_cursor"])]


async def until(check: Any, timeout: float) -> None:
    """Wait for an async condition, polling it, bounded by ``timeout`` seconds."""

    async def poll() -> None:
        while not await check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


# A view per country and minute, for the series, live and chart tests.
MINUTE_CONFIG = """
[sources.orders]
time = "ts"
fields = { country = "string" }

[views.per_minute]
description = "Revenue per country and minute"
sql = '''SELECT country, tumble(ts, '1 minute') AS minute, count(*) AS n, sum(amount) AS revenue
         FROM orders GROUP BY country, minute'''
grace = "1h"
"""
HOUR_T0 = BASE_TS - BASE_TS % 3_600_000  # on the hour: minute and multi-minute buckets start here


def minute_orders(spec: list[tuple[int, str, float]]) -> bytes:
    """(minute after HOUR_T0, country, amount) -> an NDJSON body."""
    return ndjson([{"ts": HOUR_T0 + m * 60_000 + 1, "country": c, "amount": a} for m, c, a in spec])
