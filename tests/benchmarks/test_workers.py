"""The load generator in several processes, and live subscribers measured from acknowledged
writes: the delay arithmetic against hand-worked cases, the merge of workers' histograms against
one histogram of every value, and end to end against a real server — 200 subscribers each told
of every write, and a replay dealt out to two workers that the server counts exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hdrh.histogram import HdrHistogram

from api.demo import EXAMPLE
from benchmarks import load, report, workers
from benchmarks.__main__ import SCENARIOS
from benchmarks.replay import build
from tests.helpers import fetch_all, running


def fans(count: int) -> tuple[load.Fans, list[load.Fan]]:
    streams: list[load.Stream] = []
    f = load.Fans({"count": count, "view": "v"}, streams, "orders")
    f.fans = [load.Fan(answered=True) for _ in range(count)]
    return f, f.fans


def delays(f: load.Fans) -> list[int]:
    """Every recorded delay, in microseconds as the histogram holds them."""
    h = f.stream.histogram
    return [
        int(h.get_value_at_percentile(100 * (i + 1) / h.get_total_count()))
        for i in range(h.get_total_count())
    ]


def test_a_delay_runs_from_the_acknowledgement_to_the_first_message_that_carries_it() -> None:
    f, (a, b) = fans(2)
    f.acked("wal:10", 1.0)
    f.acked("wal:20", 1.5)
    f.received(a, 15, 1.25)  # carries the first write only: 0.25 s after its ack
    f.received(b, 20, 2.0)  # carries both: 1.0 s and 0.5 s
    f.received(a, 20, 2.5)  # the second: 1.0 s
    assert (f.waiting(a), f.waiting(b)) == (0, 0)
    assert (a.worst, b.worst) == (1.0, 1.0)
    # a message that arrives before its write's acknowledgement (the server told the
    # subscriber first) counts as no delay, when the acknowledgement arrives
    f.received(a, 30, 3.0)
    f.acked("wal:30", 3.2)
    assert (f.waiting(a), f.waiting(b)) == (0, 1)
    f.received(b, 31, 3.4)
    assert f.waiting(b) == 0
    h = f.stream.histogram
    want = sorted([250_000, 1_000_000, 500_000, 1_000_000, 1, 200_000])
    assert delays(f) == [h.get_highest_equivalent_value(v) for v in want]
    # a position of another kind (a Kafka source's) is not an HTTP acknowledgement
    f.acked("orders:0@3", 4.0)
    assert len(f.positions) == 3


def test_acknowledgements_out_of_position_order_are_each_timed_from_their_own() -> None:
    """Writes posted at once are acknowledged in any order: a message delivers every write at
    or below its position, however the acknowledgements arrived."""
    f, (a,) = fans(1)
    f.acked("wal:20", 1.00)
    f.acked("wal:10", 1.01)  # the earlier write, acknowledged after the later one
    f.received(a, 15, 1.10)  # carries write 10 only: 0.09 s after its acknowledgement
    assert f.waiting(a) == 1
    f.received(a, 20, 2.10)  # and now write 20: 1.1 s
    f.acked("wal:18", 2.20)  # below what the subscriber has seen: delivered, no delay
    f.acked("wal:25", 2.25)
    f.acked("wal:40", 2.30)
    f.received(a, 39, 2.40)  # delivers 25 (0.15 s), not 40
    assert f.waiting(a) == 1
    h = f.stream.histogram
    want = sorted([90_000, 1_100_000, 1, 150_000])
    assert delays(f) == [h.get_highest_equivalent_value(v) for v in want]
    assert a.worst == pytest.approx(1.1)


def test_merged_workers_equal_one_histogram_of_every_value() -> None:
    rng = random.Random(7)
    parts = [load.Stream("query", 100.0) for _ in range(3)]
    everything = HdrHistogram(1, load.MAX_LATENCY_US, 3)
    for k, stream in enumerate(parts):
        stream.sent = 500 + k * 100
        for i in range(500 + k * 100):
            latency = rng.expovariate(1 / 0.004)
            stream.record(0.0, i / 100 + latency, i / 100, "200" if i % 50 else "503", 1)
            everything.record_value(max(1, int(latency * 1_000_000)))
    merged = load.Stream.merged([s.dump() for s in parts])
    assert merged.asked_rate == 300.0
    assert merged.statuses == sum((s.statuses for s in parts), start=Counter())
    assert merged.items == sum(s.items for s in parts) == 1800
    assert merged.sent == 1800
    for p in (50, 90, 99, 99.9, 100):
        assert merged.histogram.get_value_at_percentile(p) == everything.get_value_at_percentile(p)
    # per second: the three workers' completions added second by second
    width = max(len(s.per_second) for s in parts)
    assert merged.per_second == [
        sum(s.per_second[t] if t < len(s.per_second) else 0 for s in parts) for t in range(width)
    ]
    assert [t for t, _ in merged.timeline] == sorted(t for t, _ in merged.timeline)


def test_a_share_keeps_the_whole_schedule(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_bytes(b"".join(orjson.dumps({"ts": 1000 * i, "n": i}) + b"\n" for i in range(50)))
    scenario = dataclasses.replace(
        load.Scenario.load(SCENARIOS / "subscribers.toml"),
        replay=build(path, 4, "ts", 0),
    )
    shares = [scenario.share(k, 3) for k in range(3)]
    assert sum(s.raw["subscribers"]["count"] for s in shares) == 200
    assert sum(s.raw["ingest"]["rate"] for s in shares) == scenario.raw["ingest"]["rate"]
    replays = [s.replay for s in shares if s.replay is not None]
    # every body exactly once, each due when the one-process schedule had it (25 bodies/s)
    due = sorted((d, b) for r in replays for d, b in zip(r.due or [], r.bodies, strict=True))
    assert due == [(i / 20, body) for i, body in enumerate(scenario.replay.bodies)]  # type: ignore[union-attr]
    assert sum(r.events for r in replays) == 50
    # a replay of 13 bodies and nothing else keeps at most 13 workers busy; probes alone, one
    assert scenario.parallel(8) == 8  # it has subscribers too
    replay_only = dataclasses.replace(scenario, raw={"ingest": scenario.raw["ingest"]})
    assert replay_only.parallel(20) == 13
    probes = dataclasses.replace(scenario, raw={"freshness": {"rate": 5}}, replay=None)
    assert probes.parallel(4) == 1
    assert [s.raw["ingest"]["phase"] for s in shares] == [0, 1 / 3, 2 / 3]


@pytest.mark.asyncio
async def test_workers_phases_keep_the_one_process_schedule() -> None:
    """Three workers, each at a third of the rate and its own phase, send exactly when one
    process would have: 30 requests 10 ms apart, not 10 bursts of three."""
    streams = [load.Stream("query", 100 / 3) for _ in range(3)]

    async def send(i: int) -> tuple[str, int]:
        return "200", 1

    await asyncio.gather(
        *(load.open_loop(100 / 3, 0.3, 4, s, send, phase=k / 3) for k, s in enumerate(streams))
    )
    intended = sorted(t for s in streams for t, _ in s.timeline)
    assert sum(s.sent for s in streams) == 30
    assert intended == pytest.approx([i / 100 for i in range(30)], abs=2e-4)


def _order(i: int, ts: int) -> dict[str, Any]:
    return {"ts": ts, "status": ["paid", "refunded", "shipped"][i % 3], "amount": i % 9}


@pytest.mark.asyncio
async def test_two_hundred_subscribers_are_each_told_of_every_write(tmp_path: Path) -> None:
    scenario = load.Scenario.load(SCENARIOS / "subscribers.toml")
    raw = {**scenario.raw, "ingest": {**scenario.raw["ingest"], "rate": 400, "batch": 20}}
    tiny = dataclasses.replace(scenario, duration=1.0, raw=raw)
    async with running(EXAMPLE.read_text(), tmp_path / "data") as (client, _):
        url = str(client.make_url("")).rstrip("/")
        result = await workers.run(tiny, url, 2)
        status = await (await client.get("/v1/status")).json()
    assert result["workers"] == 2
    assert len(result["generator_cpu_per_worker"]) == 2
    writes = result["streams"]["ingest"]["statuses"]["200"]
    assert writes == 20  # 20 bodies/s for 1 s, dealt out to two workers: each sent 10
    fans = result["subscribers"]
    assert (fans["asked"], fans["connected"], fans["dropped"]) == (200, 200, 0)
    assert fans["writes"] == writes
    # each worker's 100 subscribers were told of each of its own 10 writes
    delivery = result["streams"]["delivery"]
    assert delivery["statuses"] == {"delivered": 2 * 100 * 10}
    assert 0 < delivery["latency_ms"]["p50"] <= delivery["latency_ms"]["max"]
    assert fans["worst_delay_ms"]["max"] == pytest.approx(delivery["latency_ms"]["max"], rel=0.01)
    assert status["sources"]["orders"]["accepted"] >= 400
    page = report.plots(result)
    assert "delivery: throughput over time" in page


@pytest.mark.asyncio
async def test_two_workers_replay_a_file_the_server_counts_exactly(tmp_path: Path) -> None:
    events = [_order(i, 1_700_000_000_000 + 100 * i) for i in range(333)]
    path = tmp_path / "mine.ndjson.gz"
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in events)))
    scenario = dataclasses.replace(
        load.Scenario.load(SCENARIOS / "ingest.toml"),
        raw={"ingest": {"rate": 2000, "batch": 25, "source": "orders"}},
        replay=build(path, 25, "ts", int(time.time() * 1000), retime=True),
    )
    async with running(EXAMPLE.read_text(), tmp_path / "data") as (client, _):
        result = await workers.run(scenario, str(client.make_url("")).rstrip("/"), 2)
        rows = await fetch_all(client, "/v1/views/order_status")
    ingest = result["streams"]["ingest"]
    assert ingest["statuses"] == {"200": 14}  # 333 events in bodies of 25: 13 and one of 8
    assert ingest["items"] == 333
    assert {r["status"]: r["orders"] for r in rows} == {
        s: sum(1 for e in events if e["status"] == s) for s in ("paid", "refunded", "shipped")
    }


@pytest.mark.asyncio
async def test_a_worker_that_fails_stops_the_run_and_no_other_starts_it(tmp_path: Path) -> None:
    """Worker 0 fails while preparing (its one subscriber's settle is not a duration); worker 1,
    with no subscriber, is ready and waiting: the run stops with worker 0's reason, and worker 1
    never posts (the server accepts nothing)."""
    scenario = load.Scenario.load(SCENARIOS / "subscribers.toml")
    fans = {"count": 1, "view": "order_status", "settle": "x"}
    broken = dataclasses.replace(scenario, raw={**scenario.raw, "subscribers": fans})
    async with running(EXAMPLE.read_text(), tmp_path / "data") as (client, _):
        url = str(client.make_url("")).rstrip("/")
        with pytest.raises(RuntimeError, match=r"load worker 0: ValueError: .*'x'"):
            await workers.run(broken, url, 2)
        status = await (await client.get("/v1/status")).json()
    assert status["sources"]["orders"]["accepted"] == 0
