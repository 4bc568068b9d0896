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
    [subscribers]                # optional: N live subscribers (Server-Sent Events), and the
    count = 200                  # delay from each acknowledged write to the message that
    view = "order_status"        # carries it, per subscriber (needs [ingest] over HTTP, and a
    interval = "100ms"           # view that every write changes)

Bounded: every stream stops at ``duration``; in-flight requests are capped by ``connections``.
With ``workers`` (benchmarks.workers) the scenario is shared among processes, each a share of
every rate, so that the generator is not what limits the run.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import random
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
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
# percentiles of the latency distribution a report plots (as wrk2's HdrHistogram output)
DISTRIBUTION = (0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100)


@dataclass
class Stream:
    """What one kind of request did: counts, statuses, latencies from intended send times."""

    name: str
    asked_rate: float
    unit: str = "requests"
    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, MAX_LATENCY_US, 3))
    statuses: Counter[str] = field(default_factory=Counter)
    timeline: list[tuple[float, float]] = field(default_factory=list)
    per_second: list[int] = field(default_factory=list)  # items completed in each second
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
        second = max(0, int(at - started))
        if second >= len(self.per_second):
            self.per_second.extend([0] * (second + 1 - len(self.per_second)))
        self.per_second[second] += items
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
            # the latency distribution (percentile -> ms), for the report's plot
            "distribution": [
                [p, round(h.get_value_at_percentile(p) / 1000, 3)] for p in DISTRIBUTION
            ]
            if h.get_total_count()
            else [],
            "statuses": dict(self.statuses),
        }

    def dump(self) -> dict[str, Any]:
        """Everything a worker process sends back, to be merged (``merged``)."""
        return {
            "name": self.name,
            "asked_rate": self.asked_rate,
            "unit": self.unit,
            "histogram": self.histogram.encode(),
            "statuses": dict(self.statuses),
            "timeline": self.timeline,
            "per_second": self.per_second,
            "sent": self.sent,
            "items": self.items,
        }

    @classmethod
    def merged(cls, dumps: list[dict[str, Any]]) -> Stream:
        """One stream of the same name from each worker's ``dump``: histograms added, counts
        summed, per-second counts summed second by second, timelines interleaved by time."""
        stream = cls(dumps[0]["name"], sum(d["asked_rate"] for d in dumps), dumps[0]["unit"])
        for d in dumps:
            stream.histogram.decode_and_add(d["histogram"])
            stream.statuses.update(d["statuses"])
            stream.sent += d["sent"]
            stream.items += d["items"]
            stream.timeline.extend((t, ms) for t, ms in d["timeline"])
            for second, n in enumerate(d["per_second"]):
                if second >= len(stream.per_second):
                    stream.per_second.append(0)
                stream.per_second[second] += n
        stream.timeline.sort()
        while len(stream.timeline) >= 2 * TIMELINE_POINTS:
            stream.timeline = stream.timeline[::2]
        return stream


async def open_loop(
    rate: float,
    duration: float,
    cap: int,
    stream: Stream,
    send: Callable[[int], Awaitable[tuple[str, int]]],
    due: list[float] | None = None,
    phase: float = 0.0,
) -> None:
    """Fire ``send(i)`` at ``rate`` per second for ``duration`` seconds (or, given ``due``, the
    i-th at ``due[i]`` seconds after the start, for each); record each result against its
    intended time. At most ``cap`` requests are in flight; when the cap is reached the schedule
    keeps its times, so the waiting shows up as latency. ``phase`` (in [0, 1), of one interval)
    offsets the schedule: worker k of n sends at (i + k/n) / rate, so that n workers together
    keep one even schedule instead of n requests at once."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(cap)
    started = loop.time()
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, intended: float) -> None:
        try:
            status, items = await send(i)
        except Exception as err:  # any client's failure (aiokafka's too) is a status, not a crash
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
            offset = (i + phase) / rate
            # Compared as offsets, not as loop times (``started`` is large, and ``started +
            # offset - started`` rounds), with a nanosecond's tolerance: at 100/3 a second, the
            # 10th interval ends at 0.29999999999999993, not 0.3 — the run's end, not a send.
            if offset >= duration - 1e-9:
                break
            intended = started + offset
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


SECTIONS = ("query", "ingest", "freshness", "subscribers")
DONE = ("acked", "visible", "delivered")  # the statuses of success that are not HTTP's


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
        unknown = set(raw) - {"name", "duration", "connections", *SECTIONS}
        if unknown:
            raise ValueError(f"{path}: unknown scenario field(s) {sorted(unknown)}")
        if not any(k in raw for k in SECTIONS):
            raise ValueError(
                f"{path}: give at least one of " + ", ".join(f"[{k}]" for k in SECTIONS)
            )
        if "subscribers" in raw:
            fans = raw["subscribers"]
            if "ingest" not in raw or raw["ingest"].get("via", "http") != "http":
                raise ValueError(
                    f"{path}: [subscribers] measures the delay from acknowledged writes: "
                    "it needs an [ingest] stream over HTTP"
                )
            if not isinstance(fans.get("count"), int) or fans["count"] < 1:
                raise ValueError(f"{path}: [subscribers] count: give a whole number >= 1")
            if "view" not in fans and "path" not in fans:
                raise ValueError(f"{path}: [subscribers]: give the view (or a subscribe path)")
        return cls(
            str(raw.get("name", Path(path).stem)),
            parse_duration(str(raw.get("duration", "10s"))) / 1000,
            int(raw.get("connections", 32)),
            raw,
        )

    def share(self, k: int, n: int) -> Scenario:
        """Worker ``k``'s share of ``n``: every rate and the connections divided by ``n``, the
        subscribers dealt out, the replayed bodies dealt out keeping each body's due time (so
        together the workers keep the whole schedule), the few freshness probes all worker 0's."""
        raw = dict(self.raw)
        for section in ("query", "ingest"):  # worker k sends at (i + k/n) / its rate: together
            if section in raw:  # the workers keep the one-process schedule, request for request
                rate = float(raw[section]["rate"]) / n
                raw[section] = {**raw[section], "rate": rate, "phase": k / n}
        if "freshness" in raw and k:
            del raw["freshness"]
        if "subscribers" in raw:
            count = int(raw["subscribers"]["count"])
            raw["subscribers"] = {**raw["subscribers"], "count": count // n + (k < count % n)}
            if not raw["subscribers"]["count"]:
                del raw["subscribers"]
        replay = self.replay
        if replay is not None:
            ingest = self.raw["ingest"]
            rate = float(ingest["rate"]) / int(ingest.get("batch", 1000))  # bodies per second
            due = replay.due or [i / rate for i in range(len(replay.bodies))]
            bodies = replay.bodies[k::n]
            events = sum(body.count(b"\n") + 1 for body in bodies)
            replay = Replay(bodies, events, due[k::n])
        connections = max(1, -(-self.connections // n))
        return dataclasses.replace(self, raw=raw, connections=connections, replay=replay)

    def parallel(self, n: int) -> int:
        """How many of ``n`` workers would have something to do: one when the scenario is only
        freshness probes (worker 0's), at most one per replayed body when it is only a replay."""
        if not set(self.raw) & {"query", "ingest", "subscribers"}:
            return 1
        if self.replay is not None and "query" not in self.raw:
            return max(1, min(n, len(self.replay.bodies)))
        return max(1, n)


@dataclass
class Measured:
    """One process's run, before it becomes a report: mergeable across worker processes."""

    streams: list[Stream]
    elapsed: float
    cpu: float  # the process's CPU seconds during the run
    fans: dict[str, Any] | None = None  # the subscribers' own figures (Fans.figures)

    def dump(self) -> dict[str, Any]:
        return {
            "streams": [s.dump() for s in self.streams],
            "elapsed": self.elapsed,
            "cpu": self.cpu,
            "fans": self.fans,
        }

    @classmethod
    def merged(cls, dumps: list[dict[str, Any]]) -> tuple[Measured, list[float]]:
        """The workers' runs as one, and each worker's CPU (in cores) over its run."""
        names: dict[str, list[dict[str, Any]]] = {}
        for d in dumps:
            for s in d["streams"]:
                names.setdefault(s["name"], []).append(s)
        fans = [d["fans"] for d in dumps if d["fans"] is not None]
        measured = cls(
            [Stream.merged(parts) for parts in names.values()],
            max(d["elapsed"] for d in dumps),
            sum(d["cpu"] for d in dumps),
            Fans.merged(fans) if fans else None,
        )
        return measured, [d["cpu"] / d["elapsed"] if d["elapsed"] else 0.0 for d in dumps]


Tick = Callable[[float, dict[str, tuple[int, int, float, str]]], None]


async def measure(
    scenario: Scenario,
    url: str,
    seed: int = 1,
    tick: Tick | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> Measured:
    """Run every stream of the scenario at once against ``url``. Subscribers connect first;
    ``ready`` is awaited once everything is prepared, just before the streams start (worker
    processes start together there); ``tick`` is given each stream's counts once a second."""
    rng = random.Random(seed)
    streams: list[Stream] = []
    jobs: list[Coroutine[Any, Any, None]] = []
    fans: Fans | None = None
    producer: Any = None
    connector = aiohttp.TCPConnector(limit=scenario.connections * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            if "subscribers" in scenario.raw:
                source = str(scenario.raw["ingest"].get("source", "orders"))
                fans = Fans(scenario.raw["subscribers"], streams, source)
                await fans.open(url)
            if "query" in scenario.raw:
                jobs.append(_queries(scenario, session, url, rng, streams))
            if "ingest" in scenario.raw:
                if scenario.raw["ingest"].get("via", "http") == "kafka":
                    producer = await started_producer(scenario.raw["ingest"])
                jobs.append(_ingest(scenario, session, url, rng, streams, fans, producer))
            if "freshness" in scenario.raw:
                jobs.append(_freshness(scenario, session, url, rng, streams))
            if ready is not None:
                await ready()
            started, cpu = time.perf_counter(), time.process_time()
            if fans is not None:
                fans.started = asyncio.get_running_loop().time()
            ticker = None if tick is None else asyncio.create_task(_tick(tick, streams, started))
            try:
                await asyncio.gather(*jobs)
            finally:
                if ticker is not None:
                    ticker.cancel()
                    await asyncio.gather(ticker, return_exceptions=True)
            elapsed = time.perf_counter() - started
            busy = time.process_time() - cpu  # the run's, not the settling's below
            if fans is not None:
                await fans.settle()
        finally:
            for job in jobs:  # never started when preparing failed: no "never awaited" warning
                job.close()
            if fans is not None:
                await fans.close()
            if producer is not None:
                await producer.stop()
    return Measured(streams, elapsed, busy, None if fans is None else fans.figures())


async def run(
    scenario: Scenario,
    url: str,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the scenario in this process (see ``measure``); return the report. ``progress`` is
    given a line a second while it runs (what was done so far, per stream)."""
    tick = None if progress is None else (lambda t, counts: progress(progress_line(t, counts)))
    measured = await measure(scenario, url, seed, tick)
    busy = measured.cpu / measured.elapsed if measured.elapsed else 0.0
    return summary(scenario, url, measured, [busy])


def summary(
    scenario: Scenario, url: str, measured: Measured, workers: list[float]
) -> dict[str, Any]:
    """The report: per stream, and the generator's own CPU (``workers``: each process's busy
    share of a core). A worker near a whole core may have been the limit, not the server: then
    the report says so, and its figures are marked."""
    busiest = max(workers, default=0.0)
    report = {
        "scenario": scenario.name,
        "url": url,
        "duration_s": round(measured.elapsed, 3),
        "workers": len(workers),
        "generator_cpu": round(sum(workers), 3),  # in cores, all workers together
        "generator_cpu_per_worker": [round(w, 3) for w in workers],
        "generator_limited": (
            f"a load generator process was busy {busiest:.0%} of the run, about a whole core"
            if busiest >= GENERATOR_BUSY
            else None
        ),
        "streams": {s.name: s.report(measured.elapsed) for s in measured.streams},
        "timelines": {s.name: s.timeline for s in measured.streams},
        "throughput": {s.name: s.per_second for s in measured.streams},
    }
    if measured.fans is not None:
        report["subscribers"] = Fans.summary(measured.fans)
    return report


def progress_line(elapsed: float, counts: dict[str, tuple[int, int, float, str]]) -> str:
    """``counts``: per stream (items, responses not 2xx, asked rate, unit)."""
    parts = [
        f"{name}: {items:,} {unit} ({items / elapsed:,.0f}/s, asked {asked:,.0f}/s), {bad} not 2xx"
        for name, (items, bad, asked, unit) in counts.items()
    ]
    return f"{elapsed:5.1f}s  " + " | ".join(parts)


async def _tick(tick: Tick, streams: list[Stream], started: float) -> None:
    while True:
        await asyncio.sleep(1.0)  # a progress line a second until the streams end
        tick(
            time.perf_counter() - started,
            {
                s.name: (
                    s.items,
                    sum(n for k, n in s.statuses.items() if k[:1] != "2" and k not in DONE),
                    s.asked_rate,
                    s.unit,
                )
                for s in streams
            },
        )


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

    phase = float(spec.get("phase", 0.0))
    await open_loop(
        stream.asked_rate, scenario.duration, scenario.connections, stream, send, phase=phase
    )


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
    fans: Fans | None = None,
    producer: Any = None,
) -> Coroutine[Any, Any, None]:
    """The ingest stream's job: posts over HTTP, or records to Kafka through ``producer`` (an
    AIOKafkaProducer started before the run, so its connecting is not measured)."""
    spec = scenario.raw["ingest"]
    batch = int(spec.get("batch", 1000))
    stream = Stream("ingest", float(spec["rate"]), unit="events")
    streams.append(stream)
    target = f"{url}/v1/sources/{spec.get('source', 'orders')}/events"
    via = spec.get("via", "http")
    if via not in ("http", "kafka"):
        raise ValueError(f"[ingest] via = {via!r}: expected 'http' or 'kafka'")
    loop = asyncio.get_running_loop()

    async def post(data: bytes, count: int) -> tuple[str, int]:
        async with session.post(target, data=data) as response:
            answer = await response.read()
            if response.status != 200:
                return str(response.status), 0
        if fans is not None:  # the subscribers measure their delay from this acknowledgement
            fans.acked(orjson.loads(answer)["position"], loop.time())
        return "200", count

    replay = scenario.replay
    if replay is not None:  # the user's events, each body once, in file order
        counts = [body.count(b"\n") + 1 for body in replay.bodies]
        rate = stream.asked_rate / batch  # bodies per second, when not at the events' own pace
        due = replay.due or [i / rate for i in range(len(replay.bodies))]
        if via == "kafka":
            cap = scenario.connections
            last = due[-1] if due else 0.0
            return _produce(producer, spec, stream, cap, replay.bodies.__getitem__, rate, last, due)
        return open_loop(
            rate,
            due[-1] if due else 0.0,
            scenario.connections,
            stream,
            lambda i: post(replay.bodies[i], counts[i]),
            due,
        )
    # "shop" (the reference workload) stamps pre-built bodies: fast enough for 1M events/s.
    # Built here, before any stream starts, so building them stalls no measured request.
    pool = Bodies(batch, seed=rng.randrange(1 << 30)) if spec.get("workload") == "shop" else None

    def body(i: int) -> bytes:
        now = int(time.time() * 1000)
        if pool is not None:
            return pool.next(now)
        return b"\n".join(orjson.dumps(order(rng, now)) for _ in range(batch))

    rate = stream.asked_rate / batch
    phase = float(spec.get("phase", 0.0))
    if via == "kafka":
        cap, duration = scenario.connections, scenario.duration
        return _produce(producer, spec, stream, cap, body, rate, duration, phase=phase)
    send = lambda i: post(body(i), batch)  # noqa: E731
    return open_loop(rate, scenario.duration, scenario.connections, stream, send, phase=phase)


async def started_producer(spec: dict[str, Any]) -> Any:
    """An AIOKafkaProducer for the [ingest] stream ``via = "kafka"``, connected."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=spec["bootstrap"], linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    return producer


async def _produce(
    producer: Any,
    spec: dict[str, Any],
    stream: Stream,
    cap: int,
    body: Callable[[int], bytes],
    rate: float,
    duration: float,
    due: list[float] | None = None,
    phase: float = 0.0,
) -> None:
    """Kafka produce: each request is one body's lines as records, its latency the broker's
    ack; ``rate`` bodies a second for ``duration`` (or the ``i``-th at ``due[i]`` seconds)."""

    async def send(i: int) -> tuple[str, int]:
        records = body(i).rstrip(b"\n").split(b"\n")
        acks = [await producer.send(spec["topic"], record) for record in records]
        await asyncio.gather(*acks)
        return "acked", len(records)

    await open_loop(rate, duration, cap, stream, send, due, phase)


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
    started = loop.time()

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
                # the stream's latency is ack -> visible (with its timeline and per-second count)
                stream.record(started, loop.time(), acked, "visible", 1)
                return "visible", 1
        return "not visible in 10 s", 0

    # open_loop times the whole probe (post, then polls) in a scratch stream: not reported, but
    # its failures are the stream's
    scratch = Stream("freshness-requests", stream.asked_rate)
    await open_loop(stream.asked_rate, scenario.duration, 4, scratch, send)
    stream.sent = scratch.sent
    for status, n in scratch.statuses.items():
        if status != "visible":
            stream.statuses[status] += n


@dataclass(eq=False)
class Fan:
    """One live subscriber: the newest position its messages carried, and its worst delay."""

    seen: int = -1  # every acknowledged write at or below it has been delivered to it
    worst: float = 0.0  # seconds
    answered: bool = False  # its first message came: it is connected
    dropped: bool = False  # its stream ended before the run did


class Fans:
    """N subscribers to one live view (``[subscribers]``), and for each the delay from every
    acknowledged write to the first message whose freshness position includes it: measured from
    the acknowledgement's arrival here to the message's (a message that came first counts as no
    delay). Writes are kept in position order, whatever order their acknowledgements arrive in:
    a message delivers the writes between the subscriber's last position and its own. A write
    that reaches no message by the end counts as ``not delivered``; a subscriber whose stream
    the server ends is ``dropped``. Only positions of the ingest stream's source count."""

    def __init__(self, spec: dict[str, Any], streams: list[Stream], source: str = "") -> None:
        self.count = int(spec["count"])
        self.path = str(
            spec.get("path")
            or f"/v1/views/{spec['view']}/subscribe?interval={spec.get('interval', '100ms')}"
        )
        self.source = source  # the ingest stream's: a message about another source says nothing
        # ends as soon as every write is delivered: long enough for a loaded machine
        self.settle_s = parse_duration(str(spec.get("settle", "15s"))) / 1000
        self.stream = Stream("delivery", 0.0, unit="deliveries")
        streams.append(self.stream)
        self.positions: list[int] = []  # acknowledged writes, in position order
        self.times: list[float] = []  # ... and when each acknowledgement arrived
        self.fans: list[Fan] = []
        self.not_connected: Counter[str] = Counter()
        self.tasks: list[asyncio.Task[None]] = []
        self.started = 0.0
        self.closing = False
        self.session: aiohttp.ClientSession | None = None

    async def open(self, url: str) -> None:
        """Connect every subscriber (a few dozen at a time) and wait for its first answer."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            read_bufsize=1 << 22,  # a first answer is one line, however many rows it has
        )
        slots = asyncio.Semaphore(64)

        async def one() -> None:
            async with slots:
                assert self.session is not None
                fan = Fan()
                first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                try:  # the stream may idle for long (no sock_read), its headers may not
                    response = await asyncio.wait_for(self.session.get(url + self.path), 30)
                except (aiohttp.ClientError, OSError, TimeoutError) as err:
                    self.not_connected[type(err).__name__] += 1
                    return
                if response.status != 200:
                    self.not_connected[str(response.status)] += 1
                    response.release()
                    return
                self.fans.append(fan)
                self.tasks.append(asyncio.create_task(self._follow(fan, response, first)))
                with contextlib.suppress(TimeoutError):  # counted just below
                    await asyncio.wait_for(asyncio.shield(first), 30)
                if not fan.answered:
                    self.not_connected["no first answer in 30 s"] += 1

        await asyncio.gather(*(one() for _ in range(self.count)))

    async def _follow(
        self, fan: Fan, response: aiohttp.ClientResponse, first: asyncio.Future[None]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                message = orjson.loads(line[6:])
                if "s" in message and "data" in message:  # /v1/live wraps each message
                    message = message["data"]
                freshness = message.get("freshness") or {}
                fan.answered = True
                if not first.done():
                    first.set_result(None)
                if self.source and freshness.get("source") not in (None, self.source):
                    continue
                position = _wal(freshness.get("position"))
                if position is not None:
                    self.received(fan, position, loop.time())
        except aiohttp.ClientError:
            pass
        finally:
            fan.dropped = not self.closing
            if not first.done():
                first.set_result(None)
            response.release()

    def acked(self, position: str, at: float) -> None:
        wal = _wal(position)
        if wal is None:
            return
        i = bisect.bisect_right(self.positions, wal)
        self.positions.insert(i, wal)
        self.times.insert(i, at)
        for fan in self.fans:  # a message that carried it came before the acknowledgement
            if fan.seen >= wal:
                self._deliver(fan, at, at)

    def received(self, fan: Fan, position: int, at: float) -> None:
        if position <= fan.seen:
            return
        low = bisect.bisect_right(self.positions, fan.seen)
        high = bisect.bisect_right(self.positions, position)
        for acked in self.times[low:high]:
            self._deliver(fan, at, acked)
        fan.seen = position

    def _deliver(self, fan: Fan, at: float, acked: float) -> None:
        fan.worst = max(fan.worst, at - acked)
        self.stream.record(self.started, at, acked, "delivered", 1)

    def waiting(self, fan: Fan) -> int:
        """Acknowledged writes not yet delivered to ``fan``."""
        return len(self.positions) - bisect.bisect_right(self.positions, fan.seen)

    def behind(self) -> int:
        return sum(self.waiting(f) for f in self.fans if f.answered and not f.dropped)

    async def settle(self) -> None:
        """After the streams end: wait (at most ``settle``) for the last writes' messages."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_s
        while self.behind() and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.closing = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        undelivered = sum(self.waiting(f) for f in self.fans if f.answered)
        if undelivered:
            self.stream.statuses["not delivered"] += undelivered

    def figures(self) -> dict[str, Any]:
        return {
            "asked": self.count,
            "connected": sum(f.answered for f in self.fans),
            "not_connected": dict(self.not_connected),
            "dropped": sum(f.dropped for f in self.fans if f.answered),
            "writes": len(self.positions),
            "worst_ms": sorted(round(f.worst * 1000, 3) for f in self.fans if f.answered),
        }

    @staticmethod
    def merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
        not_connected: Counter[str] = Counter()
        for part in parts:
            not_connected.update(part["not_connected"])
        return {
            "asked": sum(p["asked"] for p in parts),
            "connected": sum(p["connected"] for p in parts),
            "not_connected": dict(not_connected),
            "dropped": sum(p["dropped"] for p in parts),
            "writes": sum(p["writes"] for p in parts),
            "worst_ms": sorted(w for p in parts for w in p["worst_ms"]),
        }

    @staticmethod
    def summary(figures: dict[str, Any]) -> dict[str, Any]:
        """The subscribers' counts, and the spread of each one's worst delay."""
        worst = figures["worst_ms"]

        def at(q: float) -> float | None:
            return worst[min(len(worst) - 1, int(q * len(worst)))] if worst else None

        return {
            **{k: v for k, v in figures.items() if k != "worst_ms"},
            "worst_delay_ms": {"p50": at(0.5), "p99": at(0.99), "max": at(1.0)},
        }


def _wal(position: Any) -> int | None:
    """``wal:N`` (an HTTP source's position) as N; None for another kind of position."""
    if isinstance(position, str) and position.startswith("wal:"):
        return int(position[4:])
    return None
