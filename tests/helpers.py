"""Shared test helpers: a real in-process server on 127.0.0.1 and seeded event generators."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import make_app
from api.engine import ENGINE, Engine
from api.settings import load_settings
from ingest.columnar import MIN_LINES
from ingest.decode import Decoder
from ingest.http import OFFLOAD_BYTES
from views.config import parse
from views.registry import Batch, Registry
from views.spec import SourceSpec
from views.view import View

COUNTRIES = ["FR", "DE", "US", "JP", "BR", "IN"]
DEVICES = ["ios", "android", "web"]
STATUSES = ["paid", "paid", "paid", "refunded", "failed"]
BASE_TS = 1_790_000_000_000  # 2026-09-21, a fixed epoch so runs are reproducible
PAD = "pad"  # the unused field that pads column-wise bodies past OFFLOAD_BYTES
# Column-wise bodies are this many lines at least: genuinely large, well past MIN_LINES.
TABLE_MIN_LINES = 2_000


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


class Contended(asyncio.Lock):
    """A lock (a Kafka part's save lock, the committer's) that tells ``event`` when a caller
    finds it held and must wait: a test knows a second writer is waiting, without a sleep."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    async def acquire(self) -> Literal[True]:
        if self.locked():
            self.event.set()
        return await super().acquire()


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


def minute_events(spec: list[tuple[int, str, float]]) -> list[dict[str, Any]]:
    """(minute after HOUR_T0, country, amount) -> events."""
    return [{"ts": HOUR_T0 + m * 60_000 + 1, "country": c, "amount": a} for m, c, a in spec]


def minute_orders(spec: list[tuple[int, str, float]]) -> bytes:
    """(minute after HOUR_T0, country, amount) -> an NDJSON body."""
    return ndjson(minute_events(spec))


# -- both ingest paths ---------------------------------------------------------------------------


@dataclass
class IngestPath:
    """The way a test's batches go, for tests parametrized over both (the ``ingest_path``
    fixture): ``rows`` — small bodies, read by the row decoder, whose events become columns — or
    ``columns`` — bodies Arrow's reader takes (``Decoder.columns``: at least ``MIN_LINES``
    lines; these are ``TABLE_MIN_LINES`` lines and, over HTTP, more than ``OFFLOAD_BYTES``, so
    they are read in a worker thread too). Column-wise bodies are genuinely large (events
    repeated, lines padded with an unused field), and expected results come from the reference
    over exactly what was posted.

    What happened is recorded (``install``) and proven after the test (``check``), so a
    parametrization can never silently run one path twice."""

    name: str
    tables: list[bool] = field(default_factory=list)  # per Registry.apply: read column-wise?
    read: list[bool] = field(default_factory=list)  # per Decoder.columns: read, or declined
    decoded: int = 0  # Decoder.decode calls: the row decoder (which also names bad lines)
    folds: list[tuple[str, str]] = field(default_factory=list)  # (view, "rows" | "columns")
    declines: bool = False  # set by tests whose bodies the column reader must refuse

    @property
    def columns(self) -> bool:
        return self.name == "columns"

    def events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What to send for ``events`` on this path: themselves (rows), or copies of them, in
        the same order, repeated up to at least ``TABLE_MIN_LINES`` (columns)."""
        if not self.columns:
            assert len(events) < MIN_LINES, "too many events for the row path"
            return [dict(e) for e in events]
        times = -(-TABLE_MIN_LINES // len(events))
        return [dict(e) for _ in range(times) for e in events]

    def body(self, events: list[dict[str, Any]]) -> bytes:
        """``events`` as an NDJSON body of this path's size: as they are (rows), or each line
        padded with an unused field until the body is over ``OFFLOAD_BYTES`` (columns)."""
        plain = ndjson(events)
        if not self.columns:
            assert len(events) < MIN_LINES, "too many events for the row path"
            assert len(plain) <= OFFLOAD_BYTES, "too large a body for the row path"
            return plain
        assert len(events) >= TABLE_MIN_LINES, "too few events for the column path"
        pad = "x" * max(0, -(-(OFFLOAD_BYTES + 1 - len(plain)) // len(events)))
        body = ndjson([{**e, PAD: pad} for e in events])
        assert len(body) > OFFLOAD_BYTES
        return body

    def batch(
        self, spec: SourceSpec, events: list[dict[str, Any]], position: int, part: str = ""
    ) -> Batch:
        """``events`` as a ``Batch`` of this path (``events(...)`` sized them): the events
        (rows), or the columns ``Decoder.columns`` reads from their NDJSON (columns)."""
        if not self.columns:
            return Batch(spec.name, [dict(e) for e in events], position, part=part)
        columns = Decoder(spec, 1 << 20).columns(ndjson(events))
        assert columns is not None, "the column reader declined these events"
        return Batch(spec.name, [], position, part=part, columns=columns)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Record every batch applied (and each view's fold of it), every body offered to the
        column reader and every row decode, for the rest of the test."""
        apply, columns, decode, view_apply = (
            Registry.applying,
            Decoder.columns,
            Decoder.decode,
            View.apply,
        )
        current: list[str] = ["rows"]

        def applying(registry: Registry, batch: Batch) -> Any:
            read = batch.columns is not None
            self.tables.append(read)
            current[0] = "columns" if read else "rows"
            return apply(registry, batch)

        def reading(decoder: Decoder, body: bytes, threads: bool = True) -> Any:
            result = columns(decoder, body, threads)
            self.read.append(result is not None)
            return result

        def decoding(decoder: Decoder, body: bytes) -> Any:
            self.decoded += 1
            return decode(decoder, body)

        def folding(view: View, *args: Any, **kwargs: Any) -> None:
            self.folds.append((view.spec.name, current[0]))
            view_apply(view, *args, **kwargs)

        monkeypatch.setattr(Registry, "applying", applying)
        monkeypatch.setattr(Decoder, "columns", reading)
        monkeypatch.setattr(Decoder, "decode", decoding)
        monkeypatch.setattr(View, "apply", folding)

    def check(self) -> None:
        """The proof, after the test: every batch took this path (or, for bodies the column
        reader must refuse, each was offered to it on the column path and named by the row
        decoder)."""
        if not self.columns:
            # Every body is offered to the column reader; a small one is declined at once.
            assert not any(self.read), "a body was read column-wise in a rows test"
            assert not any(self.tables), "a table batch was applied in a rows test"
            assert self.tables or (self.declines and self.decoded), "nothing was ingested"
            return
        assert self.read, "no body was large enough for the column reader"
        if self.declines:
            assert not any(self.read), "a body the test expects refused was read column-wise"
            assert self.decoded, "the row decoder never named the bad lines"
            return
        assert all(self.read), f"the column reader declined bodies: {self.read}"
        assert self.tables, "nothing was applied"
        assert all(self.tables), f"row batches were applied in a columns test: {self.tables}"


def record_groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every group of batches ``Registry.applying_group`` is given from now on."""
    groups: list[int] = []
    applying_group = Registry.applying_group

    def recording(registry: Registry, batches: list[Batch]) -> Any:
        groups.append(len(batches))
        return applying_group(registry, batches)

    monkeypatch.setattr(Registry, "applying_group", recording)
    return groups
