"""Open-loop load against any tallyd URL (the method of wrk2).

Requests are scheduled at a fixed arrival rate and each latency is measured from the request's
*intended* send time, not from when it was actually sent: if the server stalls, the requests that
should have gone out meanwhile carry the stall in their latency, instead of silently not being
sent (coordinated omission). Latencies go into HdrHistograms (microseconds, 3 significant digits).

A scenario is a small TOML file (see benchmarks/scenarios/):

    name = "query-only"
    duration = "10s"
    [query]                      # optional: a weighted mix of query templates
    rate = 1000                  # requests per second
    templates = [{ weight = 3, path = "/v1/views/revenue_by_country?country={country}" }]
    params = { country = ["US", "DE", "FR"] }   # also built in: {minute} {minute_end}
                                                 # {hour_ago} {now_minute} (epoch ms)
    [ingest]                     # optional: NDJSON batches of shop orders
    rate = 20000                 # events per second
    batch = 1000                 # events per request
    source = "orders"
    workload = "shop"            # optional: the reference workload (benchmarks/shop.py)
    via = "kafka"                # optional: produce to Kafka instead of POSTing (latency = ack)
    bootstrap = "127.0.0.1:9092" # ... then these two are needed
    topic = "orders"
    [freshness]                  # optional: time from an ingest acknowledgement to the first
    rate = 5                     # query whose freshness position includes it
    view = "order_status"

Bounded: every stream stops at ``duration``; in-flight requests are capped by ``connections``.
"""

from __future__ import annotations

import asyncio
import random
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from hdrh.histogram import HdrHistogram

from api.shop import order
from benchmarks.replay import Replay
from benchmarks.shop import Bodies
from benchmarks.shop import event as shop_event
from views.durations import parse_duration

MAX_LATENCY_US = 60_000_000
GENERATOR_BUSY = 0.9  # of one core: above it, the generator may be what limited the run
TIMELINE_POINTS = 2000


@dataclass
class Stream:
    """What one kind of request did: counts, statuses, latencies from intended send times."""

    name: str
    asked_rate: float
    unit: str = "requests"
    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, MAX_LATENCY_US, 3))
    statuses: Counter[str] = field(default_factory=Counter)
    timeline: list[tuple[float, float]] = field(default_factory=list)
    sent: int = 0
    items: int = 0  # events for ingest, requests otherwise
    recorded: int = 0
    stride: int = 1  # keep every stride-th sample in the timeline; doubles when it fills

    def record(self, started: float, at: float, intended: float, status: str, items: int) -> None:
        latency_us = max(1, int((at - intended) * 1_000_000))
        self.histogram.record_value(min(latency_us, MAX_LATENCY_US))
        self.statuses[status] += 1
        self.items += items
        self.recorded += 1
        if self.recorded % self.stride == 0:
            self.timeline.append((round(intended - started, 4), latency_us / 1000))
            if len(self.timeline) >= 2 * TIMELINE_POINTS:  # bounded, evenly thinned over time
                self.timeline = self.timeline[::2]
                self.stride *= 2

    def report(self, elapsed: float) -> dict[str, Any]:
        h = self.histogram
        ms = {f"p{p}": round(h.get_value_at_percentile(p) / 1000, 3) for p in (50, 90, 99, 99.9)}
        return {
            "asked_rate": self.asked_rate,
            "achieved_rate": round(self.items / elapsed, 1) if elapsed else 0.0,
            "unit": self.unit,
            "sent": self.sent,
            "items": self.items,
            "latency_ms": {
                **ms,
                "max": round(h.get_max_value() / 1000, 3),
                "mean": round(h.get_mean_value() / 1000, 3),
            },
            "statuses": dict(self.statuses),
        }


async def open_loop(
    rate: float,
    duration: float,
    cap: int,
    stream: Stream,
    send: Callable[[int], Awaitable[tuple[str, int]]],
    due: list[float] | None = None,
) -> None:
    """Fire ``send(i)`` at ``rate`` per second for ``duration`` seconds (or, given ``due``, the
    i-th at ``due[i]`` seconds after the start, for each); record each result against its
    intended time. At most ``cap`` requests are in flight; when the cap is reached the schedule
    keeps its times, so the waiting shows up as latency."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(cap)
    started = loop.time()
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, intended: float) -> None:
        try:
            status, items = await send(i)
        except (aiohttp.ClientError, TimeoutError) as err:
            status, items = type(err).__name__, 0
        finally:
            slots.release()
        stream.record(started, loop.time(), intended, status, items)

    i = 0
    while True:
        if due is not None:
            if i >= len(due):
                break
            intended = started + due[i]
        else:
            intended = started + i / rate
            if intended - started >= duration:
                break
        delay = intended - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        stream.sent += 1
        task = asyncio.create_task(one(i, intended))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
    await asyncio.gather(*pending)


@dataclass(frozen=True)
class Scenario:
    name: str
    duration: float
    connections: int
    raw: dict[str, Any]
    replay: Replay | None = None  # the user's own events for [ingest] (benchmarks.replay)

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        raw = tomllib.loads(Path(path).read_text())
        unknown = set(raw) - {"name", "duration", "connections", "query", "ingest", "freshness"}
        if unknown:
            raise ValueError(f"{path}: unknown scenario field(s) {sorted(unknown)}")
        if not any(k in raw for k in ("query", "ingest", "freshness")):
            raise ValueError(f"{path}: give at least one of [query], [ingest], [freshness]")
        return cls(
            str(raw.get("name", Path(path).stem)),
            parse_duration(str(raw.get("duration", "10s"))) / 1000,
            int(raw.get("connections", 32)),
            raw,
        )


async def run(
    scenario: Scenario,
    url: str,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every stream of the scenario at once against ``url``; return the report.
    ``progress`` is given a line a second while it runs (what was done so far, per stream)."""
    rng = random.Random(seed)
    streams: list[Stream] = []
    jobs: list[Awaitable[None]] = []
    connector = aiohttp.TCPConnector(limit=scenario.connections * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        if "query" in scenario.raw:
            jobs.append(_queries(scenario, session, url, rng, streams))
        if "ingest" in scenario.raw:
            jobs.append(_ingest(scenario, session, url, rng, streams))
        if "freshness" in scenario.raw:
            jobs.append(_freshness(scenario, session, url, rng, streams))
        started, cpu = time.perf_counter(), time.process_time()
        ticker = (
            None if progress is None else asyncio.create_task(_tick(progress, streams, started))
        )
        try:
            await asyncio.gather(*jobs)
        finally:
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
        elapsed = time.perf_counter() - started
        busy = (time.process_time() - cpu) / elapsed if elapsed else 0.0
    return {
        "scenario": scenario.name,
        "url": url,
        "duration_s": round(elapsed, 3),
        # The generator's own CPU (its one process: a core at most). Near a whole core, it may
        # have been the limit, not the server: then its figures say so.
        "generator_cpu": round(busy, 3),
        "generator_limited": (
            f"its process was busy {busy:.0%} of the run, about a whole core"
            if busy >= GENERATOR_BUSY
            else None
        ),
        "streams": {s.name: s.report(elapsed) for s in streams},
        "timelines": {s.name: s.timeline for s in streams},
    }


async def _tick(progress: Callable[[str], None], streams: list[Stream], started: float) -> None:
    while True:
        await asyncio.sleep(1.0)  # a progress line a second until the streams end
        elapsed = time.perf_counter() - started
        parts = [
            f"{s.name}: {s.items:,} {s.unit} ({s.items / elapsed:,.0f}/s, asked "
            f"{s.asked_rate:,.0f}/s), {sum(n for k, n in s.statuses.items() if k[:1] != '2')} "
            "not 2xx"
            for s in streams
        ]
        progress(f"{elapsed:5.1f}s  " + " | ".join(parts))


async def _queries(
    scenario: Scenario,
    session: aiohttp.ClientSession,
    url: str,
    rng: random.Random,
    streams: list[Stream],
) -> None:
    spec = scenario.raw["query"]
    templates = spec["templates"]
    weights = [float(t.get("weight", 1)) for t in templates]
    params: dict[str, list[Any]] = spec.get("params", {})
    stream = Stream("query", float(spec["rate"]))
    streams.append(stream)

    async def send(i: int) -> tuple[str, int]:
        template = rng.choices(templates, weights)[0]["path"]
        path = template.format(**_times(rng), **{k: rng.choice(v) for k, v in params.items()})
        async with session.get(url + path) as response:
            await response.read()
            return str(response.status), 1

    await open_loop(stream.asked_rate, scenario.duration, scenario.connections, stream, send)


def _times(rng: random.Random) -> dict[str, int]:
    """Built-in template parameters: epoch-ms bounds within the last full hour."""
    now_minute = int(time.time() * 1000) // 60_000 * 60_000
    minute = now_minute - 60_000 * rng.randrange(1, 61)
    return {
        "now_minute": now_minute,
        "hour_ago": now_minute - 3_600_000,
        "minute": minute,
        "minute_end": minute + 60_000,
    }


def _ingest(
    scenario: Scenario,
    session: aiohttp.ClientSession,
    url: str,
    rng: random.Random,
    streams: list[Stream],
) -> Awaitable[None]:
    spec = scenario.raw["ingest"]
    batch = int(spec.get("batch", 1000))
    stream = Stream("ingest", float(spec["rate"]), unit="events")
    streams.append(stream)
    target = f"{url}/v1/sources/{spec.get('source', 'orders')}/events"
    if scenario.replay is not None:
        return _replay(scenario, scenario.replay, session, target, stream, batch)
    # "shop" (the reference workload) stamps pre-built bodies: fast enough for 1M events/s.
    # Built here, before any stream starts, so building them stalls no measured request.
    pool = Bodies(batch, seed=rng.randrange(1 << 30)) if spec.get("workload") == "shop" else None

    def body() -> bytes:
        now = int(time.time() * 1000)
        if pool is not None:
            return pool.next(now)
        return b"\n".join(orjson.dumps(order(rng, now)) for _ in range(batch))

    async def send(i: int) -> tuple[str, int]:
        async with session.post(target, data=body()) as response:
            await response.read()
            return str(response.status), batch if response.status == 200 else 0

    rate = stream.asked_rate / batch
    if spec.get("via", "http") == "http":
        return open_loop(rate, scenario.duration, scenario.connections, stream, send)
    if spec["via"] != "kafka":
        raise ValueError(f"[ingest] via = {spec['via']!r}: expected 'http' or 'kafka'")
    return _produce(spec, scenario, stream, rate, body)


async def _replay(
    scenario: Scenario,
    replay: Replay,
    session: aiohttp.ClientSession,
    target: str,
    stream: Stream,
    batch: int,
) -> None:
    """The user's events, each body once, in file order (at the stream's rate, or when due)."""
    counts = [body.count(b"\n") + 1 for body in replay.bodies]

    async def send(i: int) -> tuple[str, int]:
        async with session.post(target, data=replay.bodies[i]) as response:
            await response.read()
            return str(response.status), counts[i] if response.status == 200 else 0

    rate = stream.asked_rate / batch  # bodies per second, when not at the events' own pace
    due = replay.due or [i / rate for i in range(len(replay.bodies))]  # each body exactly once
    await open_loop(rate, due[-1], scenario.connections, stream, send, due)


async def _produce(
    spec: dict[str, Any],
    scenario: Scenario,
    stream: Stream,
    rate: float,
    body: Callable[[], bytes],
) -> None:
    """Kafka produce: each request is one batch of records, its latency the broker's ack."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=spec["bootstrap"], linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()

    async def send(i: int) -> tuple[str, int]:
        records = body().rstrip(b"\n").split(b"\n")
        acks = [await producer.send(spec["topic"], record) for record in records]
        await asyncio.gather(*acks)
        return "acked", len(records)

    try:
        await open_loop(rate, scenario.duration, scenario.connections, stream, send)
    finally:
        await producer.stop()


async def _freshness(
    scenario: Scenario,
    session: aiohttp.ClientSession,
    url: str,
    rng: random.Random,
    streams: list[Stream],
) -> None:
    """Latency here is acknowledgement → first query answer whose position includes it."""
    spec = scenario.raw["freshness"]
    stream = Stream("freshness", float(spec.get("rate", 5)), unit="probes")
    streams.append(stream)
    source = spec.get("source", "orders")
    view = spec.get("view", "order_status")
    make = shop_event if spec.get("workload") == "shop" else order
    loop = asyncio.get_running_loop()

    async def send(i: int) -> tuple[str, int]:
        body = orjson.dumps(make(rng, int(time.time() * 1000)))
        async with session.post(f"{url}/v1/sources/{source}/events", data=body) as response:
            answer = await response.json()
            if response.status != 200:
                return str(response.status), 0
        acked = loop.time()
        wanted = int(answer["position"].split(":")[1])
        while loop.time() - acked < 10:
            async with session.get(f"{url}/v1/views/{view}?limit=1") as response:
                seen = (await response.json())["freshness"]["position"]
            if int(seen.split(":")[1]) >= wanted:
                stream.histogram.record_value(max(1, int((loop.time() - acked) * 1e6)))
                return "visible", 1
        return "not visible in 10 s", 0

    # The stream's own histogram above holds ack→visible; open_loop records request latency in
    # a scratch stream so the two are not mixed.
    scratch = Stream("freshness-requests", stream.asked_rate)
    await open_loop(stream.asked_rate, scenario.duration, 4, scratch, send)
    stream.sent, stream.statuses, stream.items = scratch.sent, scratch.statuses, scratch.items
