"""The load suite's Kafka produce stream, end to end: what it got acknowledged, tallyd counts."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import random
import time
import tomllib
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks import load
from benchmarks.__main__ import main as bench
from benchmarks.shop import event as shop_event
from benchmarks.targets import kafka_config
from tests.helpers import fetch_all, running, until
from tests.kafka.broker import create_topic

SCENARIO = Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios" / "shop-kafka.toml"


@pytest.mark.asyncio
async def test_shop_kafka_scenario_produces_what_tallyd_then_counts(
    kafka: str, tmp_path: Path
) -> None:
    topic = await create_topic(kafka, 2)
    scenario = load.Scenario.load(SCENARIO)
    raw: dict[str, Any] = {"ingest": {**scenario.raw["ingest"], "rate": 400, "batch": 20}}
    raw["ingest"].update(bootstrap=kafka, topic=topic)
    tiny = dataclasses.replace(scenario, duration=0.5, connections=4, raw=raw)
    result = await load.run(tiny, "http://unused")
    stream = result["streams"]["ingest"]
    assert stream["sent"] == 10
    assert stream["statuses"] == {"acked": 10}
    assert stream["items"] == 200
    config = kafka_config(kafka, topic, "all")
    assert tomllib.loads(config)["sources"]["orders"]["topic"] == topic
    async with running(config, tmp_path / "data") as (client, _):

        async def counted() -> bool:
            answer = await (await client.get("/v1/views/top_products")).json()
            return bool(answer["rows"]) and answer["rows"][0]["orders"] == 200

        await until(counted, timeout=60)


@pytest.mark.asyncio
async def test_your_own_events_replayed_to_a_topic_are_counted_exactly(
    kafka: str, tmp_path: Path
) -> None:
    """``tallyd bench run ingest --events F.gz --retime --kafka HOST:PORT --topic T``: each
    record acknowledged by the broker, every event of the file counted once, at today's times."""
    topic = await create_topic(kafka, 2)
    rng = random.Random(5)
    old = 1_600_000_000_000  # 2020: without --retime, past every window's retention
    events = [shop_event(rng, old + 40 * i) for i in range(250)]
    path = tmp_path / "orders.ndjson.gz"
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in events)))
    argv = ["run", "ingest", "--url", "http://unused", "--out", str(tmp_path / "out")]
    argv += ["--events", str(path), "--retime", "--rate", "2000", "--batch", "30"]
    argv += ["--kafka", kafka, "--topic", topic, "--workers", "1"]
    # the command line, as a user runs it (in a thread: it runs its own event loop)
    assert await asyncio.wait_for(asyncio.to_thread(bench, argv), 120) == 0
    result = orjson.loads((tmp_path / "out" / "ingest-orders.json").read_bytes())
    stream = result["streams"]["ingest"]
    assert stream["statuses"] == {"acked": 9}  # 250 events in records of 30: 8 and one of 10
    assert stream["items"] == 250
    async with running(kafka_config(kafka, topic, "all"), tmp_path / "data") as (client, _):

        async def counted() -> bool:
            answer = await (await client.get("/v1/views/top_products")).json()
            return bool(answer["rows"]) and answer["rows"][0]["orders"] == 250

        await until(counted, timeout=60)
        rows = await fetch_all(client, "/v1/views/revenue")
    by_country = Counter(str(e["country"]) for e in events)
    assert {r["country"]: 0 for r in rows} == dict.fromkeys(by_country, 0)
    counted_by_country: Counter[str] = Counter()
    for r in rows:
        counted_by_country[r["country"]] += r["orders"]
    assert counted_by_country == by_country
    newest = max(datetime.fromisoformat(r["minute"].replace("Z", "+00:00")) for r in rows)
    assert time.time() - newest.timestamp() < 3600  # retimed: this hour's minutes, not 2020's


@pytest.mark.asyncio
async def test_the_real_shaped_kafka_target_counts_a_change_stream_exactly(
    kafka: str, tmp_path: Path
) -> None:
    """``benchmarks.targets``' ``kafka_real`` (its Debezium half, 50,000 changes: the smallest it
    makes): a server consuming the topic it produced, and count(*) checked against the changes'
    weights inside the measurement — it raises if they differ."""
    from benchmarks.targets import kafka_debezium

    figures = await kafka_debezium(tmp_path, kafka, 50_000)
    assert figures["records"] == 50_000
    assert 0 < figures["counted"] < 50_000  # updates and deletes take rows off
    assert figures["events_per_s"] > 0


def test_a_workload_read_from_kafka_keeps_its_views() -> None:
    """``kafka_source``: the flights' configuration with its source read from a topic, every
    view as it was."""
    from benchmarks import flights
    from benchmarks.targets import kafka_source

    text = flights.CONFIG.read_text()
    raw = tomllib.loads(kafka_source(text, "flights", "127.0.0.1:9", "t1"))
    source = raw["sources"]["flights"]
    assert (source["from"], source["bootstrap"], source["topic"]) == ("kafka", "127.0.0.1:9", "t1")
    assert source["time"] == "time_hour"
    assert source["group"].startswith("b")
    assert raw["views"] == tomllib.loads(text)["views"]
