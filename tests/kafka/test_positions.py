"""A saved position the partition cannot have is an explicit, visible error (never a silent skip
or re-read); and the idle policy of the source watermark."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from ingest.commit import Committer
from ingest.decode import Decoder
from ingest.kafka import KafkaSource
from tests.helpers import BASE_TS, running, until
from tests.kafka.broker import create_topic, produce
from views import snapshot
from views.config import parse
from views.query import all_rows
from views.registry import Batch, Registry


def config(bootstrap: str, topic: str, group: str) -> str:
    return f"""
[sources.events]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{topic}"
group = "{group}"
time = "ts"
session_timeout = "6s"

[views.n]
sql = "SELECT count(*) AS n FROM events"
"""


@pytest.mark.asyncio
async def test_position_above_the_end_is_reported_not_skipped(kafka: str, tmp_path: Path) -> None:
    topic = await create_topic(kafka, 1)
    await produce(kafka, topic, [(0, {"id": i, "ts": BASE_TS + i}) for i in range(50)])
    text = config(kafka, topic, f"g{uuid.uuid4().hex[:8]}")
    async with running(text, tmp_path) as (client, _):
        await until(lambda: _count(client, 50), 30)
    part = tmp_path / "kafka" / "events" / f"{topic}-0.tsnap"
    state = snapshot.decode(part.read_bytes())
    state["position"] = 5000  # as if the topic had been deleted and recreated
    part.write_bytes(snapshot.encode(state))
    async with running(text, tmp_path) as (client, _):

        async def reported() -> bool:
            response = await client.get("/readyz")
            body = await response.json()
            status = body.get("error", {}).get("sources", {}).get("events", {})
            return response.status == 503 and bool(
                status.get("partitions", {}).get(f"{topic}:0", {}).get("error")
            )

        await until(reported, 30)
        body = await (await client.get("/readyz")).json()
        error = body["error"]["sources"]["events"]["partitions"][f"{topic}:0"]["error"]
        assert "saved position 5000 is above the partition's end 50" in error
        assert await _count(client, 50)  # the state it has is still served


async def _count(client: Any, n: int) -> bool:
    rows = (await (await client.get("/v1/views/n")).json())["rows"]
    return bool(rows == [{"n": n}])


def test_idle_partitions_do_not_hold_the_watermark_back() -> None:
    cfg = parse(
        {
            "sources": {
                "s": {
                    "from": "kafka",
                    "bootstrap": "x:1",
                    "topic": "t",
                    "group": "g",
                    "time": "ts",
                    "idle": "10s",
                }
            },
            "views": {"v": {"sql": "SELECT count(*) AS n FROM s"}},
        }
    )
    registry = Registry(cfg.sources, cfg.views)
    source = KafkaSource(
        cfg.sources["s"],
        Committer(registry, Path("."), frozenset({"s"})),
        Path("."),
        Decoder(cfg.sources["s"], 1000),
    )
    for part, ts in (("t:0", 5_000), ("t:1", 9_000)):
        registry.apply(Batch("s", [{"ts": ts}], 1, part=part))
        source.owned.add(part)
    source.last_seen = {"t:0": 100.0, "t:1": 100.0}
    assert source.watermark(now=105.0) == 5_000  # both active: the minimum
    source.last_seen["t:1"] = 120.0
    assert source.watermark(now=125.0) == 9_000  # t:0 idle for 25 s > 10 s: excluded
    assert source.watermark(now=200.0) == 5_000  # all idle: the minimum again


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [10, 3000])  # row-wise, and large enough for the column path
async def test_a_fetch_overlapping_counted_records_counts_only_its_tail(size: int) -> None:
    """A fetch of the current epoch that starts below the part's position (epochs rule it out;
    this is the defence behind them): exactly the records below it are dropped, the tail is
    counted, once."""
    import orjson
    from aiokafka import TopicPartition
    from aiokafka.structs import ConsumerRecord

    cfg = parse(
        {
            "sources": {
                "s": {"from": "kafka", "bootstrap": "x:1", "topic": "t", "group": "g", "time": "ts"}
            },
            "views": {"v": {"sql": "SELECT count(*) AS n, sum(id) AS ids FROM s"}},
        }
    )
    registry = Registry(cfg.sources, cfg.views)
    source = KafkaSource(
        cfg.sources["s"],
        Committer(registry, Path("."), frozenset({"s"})),
        Path("."),
        Decoder(cfg.sources["s"], 1000),
    )
    position = size // 2
    registry.apply(  # the reloaded state: offsets 0..position-1 counted
        Batch(
            "s", [{"ts": 1_790_000_000_000, "id": i} for i in range(position)], position, part="t:0"
        )
    )
    source.owned.add("t:0")
    values = [orjson.dumps({"ts": 1_790_000_000_000, "id": i}) for i in range(size)]
    messages = [
        ConsumerRecord("t", 0, i, 0, 0, None, value, None, 0, len(value), [])
        for i, value in enumerate(values)
    ]
    tp = TopicPartition("t", 0)
    epoch = source.epochs.get("t:0")  # no hand-over since: the fetch is current
    if not await source._apply_table(tp, messages, epoch):
        await source._apply(tp, messages, epoch)
    ((n, ids),) = all_rows(registry.views["v"]).values()
    assert n == size  # every offset 0..size-1 once
    assert ids == sum(range(size))
    assert registry.sources["s"].positions["t:0"] == size
