"""Every target of the reference workload (``shop``), measured in one run, peers included.

    python -m benchmarks.targets [--quick] [--only NAME ...] [--peers-python PATH] [--out DIR]

Each measurement starts what it needs (a real ``tallyd serve`` on 127.0.0.1, Tansu for Kafka, the
peers as subprocesses of their own Python), is bounded in events and seconds, and stops by itself.
The result is printed as the Markdown table of benchmarks/README.md and written as JSON.

Measurements (names for ``--only``):

* ``http``: HTTP ingest capacity: 2 clients posting 50,000-event NDJSON bodies back to back,
  fsync + apply before each 200; then a check that the views counted exactly what was accepted.
  ``--clients N`` posts with N clients instead: the target is stated for 2; more show what the
  server does when its requests overlap more. (``flights`` stays at 2: its bodies are in time
  order, and more clients would apply some more than its views' grace apart.)
* ``flights``: the real-shaped workload (``benchmarks/flights.py``): 6 passes over the 336,776
  flights, 2 clients posting 50,000-event bodies; then the views' integer sum of miles and count
  checked against the records, and orjson's parse rate of the same bodies, in this process.
* ``shapes``: every input shape (``benchmarks/shapes.py``): decode and apply in process, and
  HTTP end to end, the same orders written each way.
* ``kafka``: Kafka end to end: N records on 4 partitions, from the first assignment until every
  partition's position reaches its end, into the 4 reference views and into the 1 view the peers
  compute.
* ``kafka_real``: the real-shaped records through Kafka, each checked at the end: the flights
  (``flights``' workload, 2 passes, keyed by carrier) into its six views, and 500,000 Debezium
  changes (``shapes``' change stream: inserts, updates, deletes, keyed by user).
* ``peers``: Pathway, Quix Streams and Bytewax on the same records from the same broker, computing
  revenue by country per minute; their totals are checked against a plain-Python reference.
* ``query``: one hour of data; point / top-N / 1-hour-series queries from ``wrk`` (C, 2 threads,
  32 connections, closed loop: the issue's "concurrency 32" target), then the same questions put
  to DuckDB over the raw events, in process.
* ``burst``: the same queries from ``wrk`` while 2 clients post a 1,000,000-event burst,
  snapshots every 2 s; then right after it.
* ``mixed``: open loop: 5,000 queries/s while ingesting 100,000 events/s; plus freshness probes
  (acknowledgement → first answer that includes it).
* ``memory``: bytes per (group, bucket) of a count/sum/avg/min/max view: tracemalloc in process,
  and RSS after a restore of 1,000,000 pairs over that of an empty server (and of 250,000 pairs
  of a view with sketches: p95, approx_count_distinct, top_k).
* ``snapshot``: 1,000,000 (group, bucket) pairs; query latency while a snapshot is taken; restart
  time from the snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import tracemalloc
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from api.shop import COUNTRIES
from benchmarks import load
from benchmarks.broker import broker_unless, create_topic
from benchmarks.server import ServerProcess, post_bodies
from benchmarks.shop import CONFIG, Bodies, events

PEERS = Path(__file__).parent / "peers"
MINUTE = 60_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (``/proc/<pid>/stat``), every thread of it."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_times() -> tuple[int, int, int]:
    """(idle, steal, all) clock ticks of every core so far, from ``/proc/stat``'s first line."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], ticks[7], sum(ticks[:8])  # idle + iowait; steal; the rest too


def machine_shares(before: tuple[int, int, int], after: tuple[int, int, int]) -> dict[str, float]:
    """The machine's idle and stolen shares between two ``machine_times``: a run whose server
    waited while the cores were idle waited on something (the disk, the clients); one whose
    cores were stolen by the host was slowed by the host."""
    idle, steal, total = (a - b for a, b in zip(after, before, strict=True))
    return {"machine_idle_share": idle / total, "machine_steal_share": steal / total}


async def started(config_text: str, tmp: Path, name: str = "tallyd") -> ServerProcess:
    path = tmp / f"{name}.toml"
    path.write_text(config_text)
    server = ServerProcess(path, tmp / f"{name}-data", tmp / f"{name}.log")
    await server.start(timeout=120)
    return server


async def post_all(session: aiohttp.ClientSession, url: str, bodies: list[bytes]) -> int:
    accepted = 0
    for body in bodies:
        async with session.post(f"{url}/v1/sources/orders/events", data=body) as response:
            answer = await response.json()
            assert response.status == 200, answer
            accepted += answer["accepted"]
    return accepted


async def total_orders(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/v1/views/top_products") as response:
        return int((await response.json())["rows"][0]["orders"])


# -- HTTP ingest ---------------------------------------------------------------------------------


async def wal_commits(session: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    """(group commits, seconds they spent writing and fsyncing) so far, from ``/v1/status``."""
    async with session.get(f"{url}/v1/status") as response:
        ingest = (await response.json())["ingest"]
    return int(ingest["wal_commits"]), float(ingest["wal_commit_seconds"])


def wal_figures(
    before: tuple[int, float], after: tuple[int, float], elapsed: float
) -> dict[str, Any]:
    """How long a group commit took on this disk, and the share of the run one was under way
    (commits run one at a time, so at most 1)."""
    commits, seconds = after[0] - before[0], after[1] - before[1]
    return {
        "wal_commits": commits,
        "wal_commit_ms_mean": 1000 * seconds / commits if commits else math.nan,
        "wal_commit_share": seconds / elapsed,
    }


async def posted(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    url: str,
    next_body: Callable[[], bytes | None],
    clients: int = 2,
) -> tuple[int, float, list[float], dict[str, Any]]:
    """``post_bodies`` to ``url``, and what the server spent on them: its CPU an event and
    cores, the WAL's commits (``wal_figures``), the machine's idle and stolen shares."""
    assert server.proc is not None
    wal = await wal_commits(session, server.url)
    cpu, machine = cpu_seconds(server.proc.pid), machine_times()
    accepted, elapsed, latencies = await post_bodies(session, url, next_body, clients)
    cpu = cpu_seconds(server.proc.pid) - cpu
    shares = machine_shares(machine, machine_times())
    disk = wal_figures(wal, await wal_commits(session, server.url), elapsed)
    figures = {
        "server_cpu_us_per_event": 1e6 * cpu / accepted,
        "server_cores": cpu / elapsed,
        **disk,
        **shares,
    }
    return accepted, elapsed, latencies, figures


async def http_ingest(
    tmp: Path, seconds: float, batch: int = 50_000, clients: int = 2
) -> dict[str, Any]:
    server = await started(CONFIG.read_text(), tmp, "http")
    pool = Bodies(batch, count=4)
    try:
        async with aiohttp.ClientSession() as session:
            stop_at = time.perf_counter() + seconds

            def next_body() -> bytes | None:
                if time.perf_counter() >= stop_at:
                    return None
                return pool.next(int(time.time() * 1000))

            url = f"{server.url}/v1/sources/orders/events"
            accepted, elapsed, latencies, figures = await posted(
                session, server, url, next_body, clients
            )
            counted = await total_orders(session, server.url)
        assert server.proc is not None
        rss = rss_mb(server.proc.pid)
    finally:
        server.terminate()
    return {
        "events_per_s": accepted / elapsed,
        "accepted": accepted,
        "counted": counted,
        "batch": batch,
        "clients": clients,
        "mean_request_ms": 1000 * sum(latencies) / len(latencies),
        **figures,
        "rss_mb": rss,
    }


# -- the real-shaped workload --------------------------------------------------------------------


def flights_passes(passes: int) -> list[bytes]:
    """The flights ``passes`` times, each pass a year later than the one before (so no pass is
    late for the next), in 50,000-event bodies."""
    from benchmarks import flights

    return [_shifted(body, p) for p in range(passes) for body in flights.bodies()]


def _shifted(text: bytes, years: int) -> bytes:
    """The flights' times ``years`` later (the last evening's flights are in 2014 in UTC)."""
    text = text.replace(b'"2014-', f'"{2014 + years}-'.encode())
    return text.replace(b'"2013-', f'"{2013 + years}-'.encode())


def orjson_rate(bodies: list[bytes]) -> float:
    """Events per second orjson parses the same bodies at, one line at a time, one core."""
    began = time.perf_counter()
    n = 0
    for body in bodies:
        for line in body.splitlines():
            orjson.loads(line)
            n += 1
    return n / (time.perf_counter() - began)


def flights_daily(passes: int) -> tuple[int, int]:
    """(flights, miles) the ``daily`` view holds after the passes, computed here from the
    records: the days that end after the last watermark minus the view's 400 days of
    retention."""
    from benchmarks import flights

    day = 86_400_000
    rows = []
    for e in flights.events():
        for p in range(passes):
            text = _shifted(f'"{e["time_hour"]}"'.encode(), p).decode().strip('"')
            ms = int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
            rows.append((ms, int(e["distance"])))
    watermark = max(ms for ms, _ in rows)
    kept = [miles for ms, miles in rows if ms - ms % day + day > watermark - 400 * day]
    return len(kept), sum(kept)


def flights_checked(events: int, passes: int, views: dict[str, Any], daily: dict[str, Any]) -> None:
    """What a run of the flights must end with, however they came: every flight of every pass
    taken, none late in any view, and the ``daily`` view's flights and integer miles those of
    the records (``flights_daily``)."""
    from benchmarks import flights

    assert events == passes * len(flights.records()), events
    assert all(v["late"] == 0 for v in views.values()), views
    kept, miles = flights_daily(passes)
    assert (daily["flights"], daily["miles"]) == (kept, miles), daily  # an integer sum: exact


async def flights_ingest(tmp: Path, passes: int) -> dict[str, Any]:
    from benchmarks import flights

    bodies = flights_passes(passes)
    parse_rate = orjson_rate(bodies[: len(bodies) // passes])
    server = await started(flights.CONFIG.read_text(), tmp, "flights")
    queue = list(reversed(bodies))
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/v1/sources/flights/events"
            next_body = lambda: queue.pop() if queue else None  # noqa: E731
            accepted, elapsed, _, figures = await posted(session, server, url, next_body)
            async with session.get(f"{server.url}/v1/views/daily?bucket=all&group_by=") as r:
                daily = (await r.json())["rows"][0]
            async with session.get(f"{server.url}/v1/status") as r:
                status = await r.json()
        assert server.proc is not None
        rss = rss_mb(server.proc.pid)
    finally:
        server.terminate()
    views = status["views"]
    flights_checked(accepted, passes, views, daily)
    rate = accepted / elapsed
    return {
        "events_per_s": rate,
        "accepted": accepted,
        "orjson_per_s": parse_rate,
        "vs_orjson": rate / parse_rate,
        "tail_hours_pairs": views["tail_hours"]["pairs"],
        **figures,
        "rss_mb": rss,
    }


# -- Kafka and the peers -------------------------------------------------------------------------


def kafka_config(bootstrap: str, topic: str, views: str) -> str:
    raw = tomllib.loads(CONFIG.read_text())
    text = f"""
[server]
snapshot_every = "30s"

[sources.orders]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{topic}"
group = "bench{uuid.uuid4().hex[:6]}"
time = "ts"
fields = {{ user_id = "string", country = "string", device = "string", product = "string" }}
"""
    for name, body in raw["views"].items():
        if views == "all" or name == views:
            text += f"\n[views.{name}]\nsql = '''{body['sql']}'''\n"
    return text


async def produce_lines(
    bootstrap: str, records: list[tuple[int, bytes, bytes]], config: dict[str, str] | None = None
) -> tuple[str, dict[str, int]]:
    """(partition, key, value) records on a new 4-partition topic; -> (topic, records per
    partition as ``topic:p``, as /v1/sources reports positions)."""
    from aiokafka import AIOKafkaProducer

    topic = await create_topic(bootstrap, 4, config=config)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    counts: dict[int, int] = {}
    try:
        futures = []
        for partition, key, value in records:
            futures.append(await producer.send(topic, value, key=key, partition=partition))
            counts[partition] = counts.get(partition, 0) + 1
        for future in futures:
            await future
    finally:
        await producer.stop()
    return topic, {f"{topic}:{p}": c for p, c in counts.items()}


async def produce_shop(bootstrap: str, n: int) -> tuple[str, dict[str, int], dict[str, Any]]:
    """N shop orders on a new 4-partition topic, keyed (and partitioned) by country, so every
    engine — Quix windows by key — sees one country's orders in one partition, in order."""
    start = int(time.time() * 1000) - n
    reference: dict[tuple[str, int], list[float]] = defaultdict(list)
    records = []
    for e in events(seed=5, n=n, start=start):
        reference[(e["country"], e["ts"] - e["ts"] % MINUTE)].append(e["amount"])
        partition = COUNTRIES.index(e["country"]) % 4
        records.append((partition, e["country"].encode(), orjson.dumps(e)))
    # Quix Streams reads the topic's retention.ms and fails without it: state it explicitly.
    topic, end = await produce_lines(bootstrap, records, config={"retention.ms": "-1"})
    ref = {
        "events": n,
        "groups": len(reference),
        "total": math.fsum(a for amounts in reference.values() for a in amounts),
    }
    return topic, end, ref


async def kafka_consumed(
    tmp: Path, config_text: str, name: str, end: dict[str, int], ask: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A server consuming a topic, from its first record to every partition's end; -> (timing,
    the server's CPU and RSS, the first row of the view query ``ask``, /v1/status)."""
    began = time.perf_counter()
    server = await started(config_text, tmp, name)
    first = None
    cpu = 0.0  # the server's CPU seconds: at the first record, then from it to the last
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                async with session.get(f"{server.url}/v1/sources") as r:
                    parts = (await r.json())["sources"][0]["status"]["partitions"]
                positions = {p: s["position"] or 0 for p, s in parts.items()}
                if first is None and any(positions.values()):
                    first = time.perf_counter()
                    assert server.proc is not None
                    cpu = cpu_seconds(server.proc.pid)
                if positions == end:
                    break
                await asyncio.sleep(0.02)  # polling progress, bounded by the deadline
            else:
                raise TimeoutError(f"not consumed in 600 s: {positions} of {end}")
            done = time.perf_counter()
            assert server.proc is not None
            cpu = cpu_seconds(server.proc.pid) - cpu
            async with session.get(f"{server.url}{ask}") as r:
                row = (await r.json())["rows"][0]
            async with session.get(f"{server.url}/v1/status") as r:
                status = await r.json()
        assert server.proc is not None
        rss = rss_mb(server.proc.pid)
    finally:
        server.terminate()
    assert first is not None
    records = sum(end.values())
    timing = {
        "events_per_s": records / (done - first),
        "records": records,
        "seconds": done - first,
        "wall_seconds": done - began,
        "cpu_seconds": cpu,
        "rss_mb": rss,
    }
    return timing, row, status


async def kafka_ingest(
    tmp: Path, bootstrap: str, topic: str, end: dict[str, int], views: str, n: int
) -> dict[str, Any]:
    ask = "/v1/views/revenue?bucket=all&group_by=&limit=1"
    config = kafka_config(bootstrap, topic, views)
    timing, row, _ = await kafka_consumed(tmp, config, f"kafka-{views}", end, ask)
    assert timing["records"] == n, timing
    return {**timing, "events": row["orders"], "total": row["revenue"]}


def kafka_source(text: str, source: str, bootstrap: str, topic: str) -> str:
    """A workload's configuration with its source ``source`` read from a Kafka topic."""
    header = f"[sources.{source}]\n"
    assert header in text, header
    kafka = f'from = "kafka"\nbootstrap = "{bootstrap}"\ntopic = "{topic}"\n'
    return text.replace(header, f'{header}{kafka}group = "b{uuid.uuid4().hex[:6]}"\n')


async def kafka_flights(tmp: Path, bootstrap: str, passes: int) -> dict[str, Any]:
    """The real-shaped workload through Kafka: the flights ``passes`` times (each pass a year
    later), keyed by carrier on 4 partitions (each in time order), into the six views; then the
    ``daily`` view's integer miles checked against the records, as ``flights`` checks them."""
    topic, end = await produce_flights(bootstrap, passes)
    timing, daily = await consume_flights(tmp, bootstrap, topic, end, passes, "kafka-flights")
    return {**timing, "flights": daily["flights"], "miles": daily["miles"]}


async def produce_flights(bootstrap: str, passes: int) -> tuple[str, dict[str, int]]:
    """The flights ``passes`` times on a new topic, keyed by carrier (``produce_lines``)."""
    records = []
    for body in flights_passes(passes):
        for line in body.splitlines():
            carrier = orjson.loads(line)["carrier"].encode()
            records.append((zlib.crc32(carrier) % 4, carrier, line))
    return await produce_lines(bootstrap, records)


async def consume_flights(
    tmp: Path, bootstrap: str, topic: str, end: dict[str, int], passes: int, name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A server named ``name`` (its data directory) consuming ``produce_flights``' topic into
    the six views, checked as ``flights`` checks them; -> (timing, the ``daily`` view's row)."""
    from benchmarks import flights

    config = kafka_source(flights.CONFIG.read_text(), "flights", bootstrap, topic)
    ask = "/v1/views/daily?bucket=all&group_by="
    timing, daily, status = await kafka_consumed(tmp, config, name, end, ask)
    flights_checked(timing["records"], passes, status["views"], daily)
    return timing, daily


async def kafka_debezium(tmp: Path, bootstrap: str, changes: int) -> dict[str, Any]:
    """The Debezium change stream of ``benchmarks/shapes.py`` (inserts, updates and deletes of
    the shop's orders) through Kafka, keyed by user, so a row's changes stay in order in one of
    4 partitions; then count(*) checked: +1 per after row, -1 per before row."""
    from benchmarks import shapes

    shape = next(s for s in shapes.SHAPES if s.name == "debezium")
    bodies = shapes.bodies(shape, int(time.time() * 1000), count=max(1, changes // 50_000))
    records = []
    for line in (line for body in bodies for line in body):
        change = orjson.loads(line)
        user = (change["after"] or change["before"])["user_id"].encode()
        records.append((zlib.crc32(user) % 4, user, line))
    topic, end = await produce_lines(bootstrap, records)
    where = {"bootstrap": bootstrap, "topic": topic, "group": f"b{uuid.uuid4().hex[:6]}"}
    config = dataclasses.replace(shape, source={**shape.source, **where}).toml()
    ask = "/v1/views/v?bucket=all&group_by="
    timing, row, status = await kafka_consumed(tmp, config, "kafka-debezium", end, ask)
    expected = sum(shapes.weight(line) for _, _, line in records)
    assert row["n"] == expected, (row, expected)
    assert status["views"]["v"]["late"] == 0, status["views"]
    return {**timing, "counted": row["n"]}


def run_peer(python: str, script: str, args: list[str], timeout: float) -> dict[str, Any]:
    began = time.perf_counter()
    try:
        proc = subprocess.run(
            [python, str(PEERS / script), *args],
            env={**os.environ, "PYTHONPATH": str(PEERS.parent.parent)},
            capture_output=True,
            timeout=timeout,
            text=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    result["wall_seconds"] = time.perf_counter() - began
    if "seconds" in result:
        result["events_per_s"] = result["events"] / result["seconds"]
    return result


# -- queries -------------------------------------------------------------------------------------

WRK_SCRIPT = """
local paths = {%s}
math.randomseed(7)
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""


def query_paths(now: int, rng: random.Random, count: int = 300) -> dict[str, list[str]]:
    """Concrete query URLs of the three kinds the target names."""
    hour_end = now - now % MINUTE
    out: dict[str, list[str]] = {"point": [], "top": [], "series": []}
    for _ in range(count):
        country = rng.choice(COUNTRIES[:10])
        minute = hour_end - MINUTE * rng.randrange(1, 60)
        out["point"].append(
            f"/v1/views/revenue?country={country}&from={minute}&to={minute + MINUTE}"
        )
        out["series"].append(
            f"/v1/views/revenue?country={country}&from={hour_end - 60 * MINUTE}&to={hour_end}"
            "&limit=100"
        )
        out["top"].append("/v1/views/top_products")
    return out


def wrk(url: str, paths: list[str], seconds: int, tmp: Path) -> dict[str, Any]:
    script = tmp / "mix.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"{p}"' for p in paths))
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    figures: dict[str, Any] = {"raw": out}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            figures["requests_per_s"] = float(parts[1])
        elif parts and parts[0] in ("50%", "90%", "99%"):
            figures[f"p{parts[0][:-1]}_ms"] = _ms(parts[1])
        elif "Non-2xx" in line:
            figures["non_2xx"] = int(parts[-1])
    figures.setdefault("non_2xx", 0)
    return figures


def _ms(text: str) -> float:
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


async def fill_hour(session: aiohttp.ClientSession, url: str, n: int, now: int) -> int:
    """N orders spread over the last hour, posted in 50,000-event bodies."""
    step = 3_600_000 / n
    stream = events(seed=9, n=n, start=now - 3_600_000, step_ms=step)
    bodies = []
    chunk: list[bytes] = []
    for e in stream:
        chunk.append(orjson.dumps(e))
        if len(chunk) == 50_000:
            bodies.append(b"\n".join(chunk) + b"\n")
            chunk = []
    if chunk:
        bodies.append(b"\n".join(chunk) + b"\n")
    return await post_all(session, url, bodies)


async def tallyd_sequential(
    session: aiohttp.ClientSession, url: str, paths: dict[str, list[str]]
) -> dict[str, Any]:
    """tallyd's per-kind latency, one request at a time over HTTP (for the DuckDB comparison)."""
    out: dict[str, Any] = {}
    for kind, urls in paths.items():
        times = []
        for path in urls:
            t = time.perf_counter()
            async with session.get(url + path) as response:
                await response.read()
                assert response.status == 200
            times.append(time.perf_counter() - t)
        times.sort()
        out[kind] = {
            "p50_ms": 1000 * times[len(times) // 2],
            "p99_ms": 1000 * times[int(len(times) * 0.99)],
        }
    return out


BARE_AIOHTTP = """
import sys
from aiohttp import web
async def answer(request):
    return web.json_response({"view": "v", "rows": [{"country": "FR", "orders": 3}]})
app = web.Application()
app.router.add_get("/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


async def aiohttp_ceiling(tmp: Path, seconds: int) -> dict[str, Any]:
    """What aiohttp itself serves here: a handler returning a constant small JSON answer."""
    from benchmarks.server import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_AIOHTTP, str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # bounded wait for the port
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
        return wrk(url, ["/v1/views/v"], seconds, tmp)
    finally:
        proc.terminate()
        proc.wait(10)


async def queries(tmp: Path, n: int, seconds: int, peers_python: str | None) -> dict[str, Any]:
    server = await started(CONFIG.read_text(), tmp, "query")
    now = int(time.time() * 1000)
    rng = random.Random(11)
    try:
        async with aiohttp.ClientSession() as session:
            await fill_hour(session, server.url, n, now)
            paths = query_paths(now, rng)
            mix = paths["point"] + paths["top"] + paths["series"]
            result: dict[str, Any] = {"events": n}
            result["wrk_mix"] = wrk(server.url, mix, seconds, tmp)
            for kind, urls in paths.items():
                result[f"wrk_{kind}"] = wrk(server.url, urls, max(3, seconds // 2), tmp)
            result["sequential"] = await tallyd_sequential(session, server.url, paths)
    finally:
        server.terminate()
    result["aiohttp_ceiling"] = await aiohttp_ceiling(tmp, max(3, seconds // 2))
    if peers_python is not None:
        result["duckdb"] = run_peer(peers_python, "duckdb_shop.py", [str(n), str(now)], 600)
    return result


# -- queries during a burst ----------------------------------------------------------------------


async def burst(tmp: Path, events: int, seconds: int) -> dict[str, Any]:
    """Queries at concurrency 32 (wrk) while 2 clients post up to ``events`` events (stopping
    when wrk does), snapshots every 2 s; then the same queries right after."""
    text = CONFIG.read_text().replace('snapshot_every = "30s"', 'snapshot_every = "2s"')
    assert 'snapshot_every = "2s"' in text
    server = await started(text, tmp, "burst")
    now = int(time.time() * 1000)
    try:
        async with aiohttp.ClientSession() as session:
            await fill_hour(session, server.url, 200_000, now)
            paths = query_paths(now, random.Random(5))
            mix = paths["point"] + paths["top"] + paths["series"]
            pool = Bodies(50_000, count=4)
            posted = 0
            done = asyncio.Event()

            async def client() -> None:
                nonlocal posted
                while posted < events and not done.is_set():
                    posted += 50_000
                    body = pool.next(int(time.time() * 1000))
                    async with session.post(
                        f"{server.url}/v1/sources/orders/events", data=body
                    ) as response:
                        assert response.status == 200, await response.text()

            async def queries() -> dict[str, Any]:
                try:
                    return await asyncio.to_thread(wrk, server.url, mix, seconds, tmp)
                finally:
                    done.set()

            began = time.perf_counter()
            during, *_ = await asyncio.gather(queries(), client(), client())
            elapsed = time.perf_counter() - began
            after = await asyncio.to_thread(wrk, server.url, mix, max(3, seconds // 2), tmp)
            async with session.get(f"{server.url}/v1/status") as r:
                snapshots = (await r.json())["snapshot"]
    finally:
        server.terminate()
    during.pop("raw", None)
    after.pop("raw", None)
    return {
        "events_posted": posted,
        "ingest_per_s": posted / elapsed,
        "during": during,
        "after": after,
        "last_snapshot": snapshots,
    }


# -- mixed and freshness -------------------------------------------------------------------------


async def mixed(tmp: Path, seconds: float, query_rate: int, ingest_rate: int) -> dict[str, Any]:
    server = await started(CONFIG.read_text(), tmp, "mixed")
    now = int(time.time() * 1000)
    try:
        async with aiohttp.ClientSession() as session:
            await fill_hour(session, server.url, 200_000, now)
            paths = query_paths(now, random.Random(3))
            templates = [{"weight": 1, "path": p} for p in paths["point"][:50]]
            templates += [{"weight": 1, "path": p} for p in paths["series"][:25]]
            templates += [{"weight": 1, "path": "/v1/views/top_products"}]
        scenario = load.Scenario(
            "shop-mixed",
            seconds,
            64,
            {
                "query": {"rate": query_rate, "templates": templates},
                "ingest": {"rate": ingest_rate, "batch": 10_000, "workload": "shop"},
                "freshness": {"rate": 5, "view": "revenue", "workload": "shop"},
            },
        )
        result = await load.run(scenario, server.url)
        assert server.proc is not None
        result["server_rss_mb"] = rss_mb(server.proc.pid)
    finally:
        server.terminate()
    result.pop("timelines", None)
    return result


# -- memory and snapshots ------------------------------------------------------------------------

FLAT_SQL = """SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, sum(x) AS s, avg(x) AS a,
    min(x) AS lo, max(x) AS hi FROM s GROUP BY k, m"""


def flat_bodies(keys: int, minutes: int, per_body: int = 50_000) -> list[bytes]:
    """One event per (key, minute): keys x minutes (group, bucket) pairs."""
    rng = random.Random(4)
    lines = [
        orjson.dumps({"ts": 1_790_000_000_000 + m * MINUTE, "k": f"k{k}", "x": rng.random()})
        for m in range(minutes)
        for k in range(keys)
    ]
    return [b"\n".join(lines[i : i + per_body]) + b"\n" for i in range(0, len(lines), per_body)]


def memory(pairs_keys: int = 1000, minutes: int = 200) -> dict[str, Any]:
    from ingest.decode import Decoder
    from views.config import parse
    from views.registry import Batch, Registry

    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": FLAT_SQL}}}, "memory")
    bodies = flat_bodies(pairs_keys, minutes)
    decoder = Decoder(config.sources["s"], 1 << 20)
    tables = [decoder.columns(b) for b in bodies]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    registry = Registry(config.sources, config.views)
    for i, table in enumerate(tables, start=1):
        assert table is not None
        registry.apply(Batch("s", [], i, columns=table))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    pairs = pairs_keys * minutes
    stats = registry.views["v"].stats()
    assert stats["buckets"] == minutes
    return {"pairs": pairs, "bytes_per_pair": (after - before) / pairs}


async def restored_figures(server: ServerProcess, tmp: Path, pairs: int) -> dict[str, Any]:
    """Restart ``server`` from its snapshot: start to ready, the state part of it (the
    snapshot read and loaded), and RSS over that of the same server with no state."""
    restart = ServerProcess(server.config, server.data_dir, server.log)
    began = time.perf_counter()
    await restart.start(timeout=300)
    ready = time.perf_counter() - began
    async with aiohttp.ClientSession() as session, session.get(f"{restart.url}/readyz") as r:
        recovery = (await r.json())["recovery"]
    assert restart.proc is not None
    gc_settled = rss_mb(restart.proc.pid)
    restart.terminate()
    empty = ServerProcess(server.config, tmp / f"{server.data_dir.name}-empty", server.log)
    await empty.start(timeout=60)
    assert empty.proc is not None
    baseline = rss_mb(empty.proc.pid)
    empty.terminate()
    return {
        "restart_to_ready_s": ready,
        "state_seconds": recovery["state_seconds"],
        "replay_seconds": recovery["replay_seconds"],
        "rss_restored_mb": gc_settled,
        "rss_empty_mb": baseline,
        "bytes_per_pair_rss": (gc_settled - baseline) * 1024 * 1024 / pairs,
    }


SKETCH_SQL = """SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, p95(x) AS p95,
    approx_count_distinct(k) AS keys, top_k(k, 3) AS top FROM s GROUP BY k, m"""


def flat_config(sql: str, extra: str = "") -> str:
    """One HTTP source ``s`` and one view ``v`` of ``sql`` (``extra``: more of its fields),
    snapshots only when asked or at stop."""
    return f"""
[server]
snapshot_every = "1h"

[sources.s]
time = "ts"

[views.v]
sql = '''{sql}'''
{extra}
"""


async def post_flat(session: aiohttp.ClientSession, url: str, keys: int, minutes: int) -> None:
    """``flat_bodies(keys, minutes)`` posted one after the other to source ``s``."""
    for body in flat_bodies(keys, minutes):
        async with session.post(f"{url}/v1/sources/s/events", data=body) as r:
            assert r.status == 200, await r.text()


async def memory_rss(tmp: Path, sql: str, keys: int, minutes: int, name: str) -> dict[str, Any]:
    """RSS per (group, bucket) pair after a restore: ``keys`` x ``minutes`` pairs built over
    HTTP, the server stopped (a final snapshot) and started again from it."""
    server = await started(flat_config(sql, f"max_groups = {keys + 1}"), tmp, name)
    try:
        async with aiohttp.ClientSession() as session:
            await post_flat(session, server.url, keys, minutes)
    finally:
        server.terminate()
    return {"pairs": keys * minutes, **await restored_figures(server, tmp, keys * minutes)}


async def snapshot_pause(tmp: Path, keys: int, minutes: int) -> dict[str, Any]:
    server = await started(flat_config(FLAT_SQL), tmp, "snap")
    try:
        async with aiohttp.ClientSession() as session:
            await post_flat(session, server.url, keys, minutes)
            point = f"{server.url}/v1/views/v?k=k7&limit=5"
            probe: list[tuple[float, float]] = []  # (sent, latency)
            stop = asyncio.Event()

            async def probe_loop() -> None:
                loop = asyncio.get_running_loop()
                interval = 1 / 200  # open loop, 200 queries/s
                began = loop.time()
                i = 0
                pending = set()

                async def one(intended: float) -> None:
                    async with session.get(point) as response:
                        await response.read()
                    probe.append((intended, loop.time() - intended))

                while not stop.is_set():
                    intended = began + i * interval
                    delay = intended - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    task = asyncio.create_task(one(intended))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    i += 1
                await asyncio.gather(*pending)

            task = asyncio.create_task(probe_loop())
            loop = asyncio.get_running_loop()
            windows = []
            # The first snapshot after a burst that built the whole state, then one in the
            # steady state (every snapshot_every, the state built since the last one).
            for _ in ("first", "steady"):
                await asyncio.sleep(1.0)  # a second of queries before each snapshot
                began = loop.time()
                async with session.post(f"{server.url}/v1/admin/snapshot") as r:
                    info = await r.json()
                windows.append((began, loop.time(), info))
            await asyncio.sleep(0.5)
            stop.set()
            await task
        assert server.proc is not None
        rss = rss_mb(server.proc.pid)
    finally:
        server.terminate()  # a graceful stop snapshots again; the restart below reads that
    restored = await restored_figures(server, tmp, keys * minutes)
    out: dict[str, Any] = {"pairs": keys * minutes, "rss_mb": rss, **restored}
    for name, (start, end, info) in zip(("first", "steady"), windows, strict=True):
        during = sorted(lat for sent, lat in probe if start <= sent <= end)
        out[name] = {
            "snapshot_seconds": info["seconds"],
            "snapshot_mb": info["bytes"] / 1e6,
            "queries_during": len(during),
            "p99_during_ms": 1000 * during[int(len(during) * 0.99)] if during else None,
            "max_during_ms": 1000 * during[-1] if during else None,
        }
    return out


# -- the run -------------------------------------------------------------------------------------


async def run_all(args: argparse.Namespace, out: dict[str, Any]) -> None:
    quick = args.quick
    wanted = set(
        args.only
        or [
            "http",
            "flights",
            "shapes",
            "kafka",
            "kafka_real",
            "peers",
            "query",
            "burst",
            "mixed",
            "memory",
            "snapshot",
        ]
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "http" in wanted:
            out["http"] = await http_ingest(tmp, 3 if quick else 15, clients=args.clients)
            print("http", out["http"], flush=True)
        if "flights" in wanted:
            out["flights"] = await flights_ingest(tmp, 1 if quick else 6)
            print("flights", out["flights"], flush=True)
        if "shapes" in wanted:
            from benchmarks import shapes  # it posts with post_bodies, from here

            out["shapes"] = await shapes.run(3 if quick else 8, True)
            print(shapes.table(out["shapes"]), flush=True)
        if wanted & {"kafka", "kafka_real", "peers"}:
            n = args.kafka_events or (20_000 if quick else 500_000)
            with broker_unless(args.bootstrap, tmp) as bootstrap:
                if wanted & {"kafka", "peers"}:
                    topic, end, ref = await produce_shop(bootstrap, n)
                    out["kafka_reference"] = ref
                if "kafka" in wanted:
                    for views in ("all", "revenue"):
                        out[f"kafka_{views}"] = await kafka_ingest(
                            tmp, bootstrap, topic, end, views, n
                        )
                        print(f"kafka_{views}", out[f"kafka_{views}"], flush=True)
                if "kafka_real" in wanted:
                    passes = 1 if quick else 2
                    out["kafka_flights"] = await kafka_flights(tmp, bootstrap, passes)
                    print("kafka_flights", out["kafka_flights"], flush=True)
                    changes = 50_000 if quick else 500_000
                    out["kafka_debezium"] = await kafka_debezium(tmp, bootstrap, changes)
                    print("kafka_debezium", out["kafka_debezium"], flush=True)
                if "peers" in wanted:
                    python = args.peers_python
                    timeout = 120 if quick else 900
                    state = tmp / "quix-state"
                    for name, script, extra in (
                        ("pathway", "pathway_shop.py", []),
                        ("quixstreams", "quix_shop.py", [str(state)]),
                        ("bytewax", "bytewax_shop.py", []),
                    ):
                        out[name] = run_peer(
                            python, script, [bootstrap, topic, str(n), *extra], timeout
                        )
                        print(name, out[name], flush=True)
        if "query" in wanted:
            out["query"] = await queries(
                tmp,
                100_000 if quick else 1_000_000,
                3 if quick else 10,
                args.peers_python if args.duckdb else None,
            )
            print("query", {k: v for k, v in out["query"].items() if k != "raw"}, flush=True)
        if "burst" in wanted:
            out["burst"] = await burst(tmp, 1_000_000, 3 if quick else 6)
            print("burst", out["burst"], flush=True)
        if "mixed" in wanted:
            out["mixed"] = await mixed(
                tmp, 3 if quick else 15, 500 if quick else 5000, 20_000 if quick else 100_000
            )
            print("mixed", out["mixed"], flush=True)
        if "memory" in wanted:
            keys, minutes = (100, 100) if quick else (1000, 1000)
            out["memory"] = memory(100 if quick else 1000, 20 if quick else 200)
            out["memory_rss"] = await memory_rss(tmp, FLAT_SQL, keys, minutes, "mem-flat")
            out["memory_rss_sketches"] = await memory_rss(
                tmp, SKETCH_SQL, keys, minutes // 4, "mem-sketch"
            )
            print("memory", {k: out[k] for k in ("memory", "memory_rss", "memory_rss_sketches")})
        if "snapshot" in wanted:
            keys, minutes = (100, 100) if quick else (1000, 1000)
            out["snapshot"] = await snapshot_pause(tmp, keys, minutes)
            print("snapshot", out["snapshot"], flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="tallyd bench targets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks it runs")
    parser.add_argument("--only", nargs="*", help="measure only these (see above)")
    parser.add_argument("--bootstrap", help="an existing Kafka instead of a Tansu started here")
    parser.add_argument(
        "--kafka-events",
        type=int,
        help="records produced for kafka and peers (default 500,000; 20,000 with --quick)",
    )
    parser.add_argument(
        "--peers-python",
        default=os.environ.get("TALLYD_PEERS_PYTHON", sys.executable),
        help="the Python that has pathway, quixstreams, bytewax installed",
    )
    parser.add_argument("--no-duckdb", dest="duckdb", action="store_false")
    parser.add_argument(
        "--clients", type=int, default=2, help="clients posting for http (default 2)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-reports"))
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None and (args.only is None or "query" in args.only):
        parser.error("the query measurement needs wrk (apt-get install wrk)")
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick}
    try:
        asyncio.run(run_all(args, out))
    finally:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "targets.json"
        with contextlib.suppress(OSError):
            path.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
