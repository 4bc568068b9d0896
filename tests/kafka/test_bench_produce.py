"""The load suite's Kafka produce stream, end to end: what it got acknowledged, tallyd counts."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from benchmarks import load
from benchmarks.targets import kafka_config
from tests.helpers import running, until
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
