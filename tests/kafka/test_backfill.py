"""A view added to a server consuming a Kafka topic fills from the topic (issue 17): a separate
read of every partition from its log start up to where the live views are, while the live
consumer keeps going and records keep arriving; each partition joins the live views in one
step. Once ``backfilling`` is false the view equals a plain-Python reference over every record
produced, and a twin view defined from the start: nothing missed before the apply, nothing
counted twice at the seam."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from tests.api.test_backfill import to_ms
from tests.helpers import BASE_TS, running, until
from tests.kafka.broker import create_topic, produce

MINUTE = 60_000
WINDOWED = (
    "SELECT status, tumble(ts, '1 minute') AS m, count(*) AS n, sum(amount) AS total "
    "FROM orders WHERE amount IS NULL OR amount > 2 GROUP BY status, m"
)


def config(bootstrap: str, topic: str, group: str, added: bool) -> str:
    text = f"""
[sources.orders]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{topic}"
group = "{group}"
time = "ts"
session_timeout = "6s"
fields = {{ status = "string", amount = "number" }}

[views.n]
sql = "SELECT count(*) AS n FROM orders"

[views.twin]
sql = "{WINDOWED}"
grace = "1h"
"""
    if added:
        text += f'\n[views.added]\nsql = "{WINDOWED}"\ngrace = "1h"\n'
    return text


def records(rng: random.Random, start: int, n: int) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for i in range(start, start + n):
        event: dict[str, Any] = {"id": i, "ts": BASE_TS + i * 700, "status": rng.choice("abc")}
        if rng.random() < 0.85:
            event["amount"] = rng.choice([None, rng.randint(0, 9)])
        out.append((rng.randrange(3), event))
    return out


def reference(events: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[int, Any]]:
    out: dict[tuple[str, int], list[Any]] = defaultdict(lambda: [0, None])
    for e in events:
        amount = e.get("amount")
        if amount is not None and amount <= 2:
            continue
        row = out[(e["status"], e["ts"] // MINUTE * MINUTE)]
        row[0] += 1
        if amount is not None:
            row[1] = (row[1] or 0) + amount
    return {key: (v[0], v[1]) for key, v in out.items()}


async def answer(client: TestClient[Any, Any], view: str) -> tuple[bool, dict[Any, Any]]:
    r = await client.get(f"/v1/views/{view}", params={"limit": "10000"})
    body = await r.json()
    assert r.status == 200, body
    rows = {(row["status"], to_ms(row["m"])): (row["n"], row["total"]) for row in body["rows"]}
    return body["freshness"]["backfilling"], rows


async def counted(client: TestClient[Any, Any]) -> int:
    r = await client.get("/v1/views/n")
    rows = (await r.json())["rows"]
    return int(rows[0]["n"]) if rows else 0


@pytest.mark.asyncio
async def test_a_view_added_fills_from_the_topic_while_records_keep_coming(
    kafka: str, tmp_path: Path
) -> None:
    rng = random.Random(7)
    topic = await create_topic(kafka, 3)
    group = f"g{uuid.uuid4().hex[:8]}"
    first = records(rng, 0, 2000)
    await produce(kafka, topic, first)
    async with running(config(kafka, topic, group, False), tmp_path) as (client, engine):
        engine.backfill_chunk_bytes = 8_000  # many steps: live records arrive between them

        async def at_least(n: int) -> bool:
            return await counted(client) >= n

        await until(lambda: at_least(2000), 60)
        more = records(rng, 2000, 1500)
        producing = asyncio.create_task(produce(kafka, topic, more))
        r = await client.post("/v1/admin/config", data=config(kafka, topic, group, True))
        plan = await r.json()
        assert r.status == 200, plan
        (added,) = plan["applied"]["changes"]
        assert "fills from the topic, from its log start" in added["effect"]

        async def filled() -> bool:
            return (await answer(client, "added"))[0] is False

        await until(filled, 90)
        await producing
        await until(lambda: at_least(3500), 60)
        expected = reference([e for _, e in first + more])
        filling, got = await answer(client, "added")
        assert filling is False
        assert got == expected
        assert (await answer(client, "twin"))[1] == expected


def test_a_backfill_step_reads_below_the_live_position_and_joins_at_it() -> None:
    """The seam, without a broker: the reader's fetch runs past where the live views are. Only
    the records below their position are applied to the view; the part joins once the reader's
    next offset is at or past it; a part handed away meanwhile is skipped."""
    from aiokafka import TopicPartition
    from aiokafka.structs import ConsumerRecord

    from ingest.changes import ChangeDecoder
    from ingest.commit import Committer
    from ingest.decode import Decoder
    from ingest.idempotency import DEFAULT_LIMITS, TopicKeys
    from ingest.kafka import KafkaSource
    from views.config import parse
    from views.query import all_rows
    from views.registry import Batch, Registry

    kafka = {"from": "kafka", "bootstrap": "x:1", "topic": "t", "group": "g", "time": "ts"}
    old = {"old": {"sql": "SELECT count(*) AS n FROM s"}}
    new = {"v": {"sql": "SELECT count(*) AS n, sum(id) AS ids FROM s"}}
    cfg = parse({"sources": {"s": kafka}, "views": {**old, **new}})
    registry = Registry(cfg.sources, parse({"sources": {"s": kafka}, "views": old}).views)
    registry.history = frozenset({"s"})
    source = KafkaSource(
        cfg.sources["s"],
        Committer(registry, Path("."), frozenset({"s"})),
        Path("."),
        Decoder(cfg.sources["s"], 1000),
    )
    for part, live in (("t:0", 6), ("t:1", 4)):  # the live views have applied 0..live-1
        rows = [{"ts": BASE_TS + i, "id": i} for i in range(live)]
        registry.apply(Batch("s", rows, live, part=part))
        source.owned.add(part)
    registry.reconfigure(cfg.views)
    filling = registry.backfills["v"]
    for part in ("t:0", "t:1"):
        filling.began[part] = filling.positions[part] = 0

    def fetch(partition: int, offsets: range) -> list[ConsumerRecord[bytes, bytes]]:
        values = [orjson.dumps({"ts": BASE_TS + i, "id": i}) for i in offsets]
        return [
            ConsumerRecord("t", partition, i, BASE_TS, 0, None, v, None, 0, len(v), [])
            for i, v in zip(offsets, values, strict=True)
        ]

    changes = ChangeDecoder(source.changes.decoder, "json", False)
    keys = TopicKeys("s", DEFAULT_LIMITS)
    t0, t1 = TopicPartition("t", 0), TopicPartition("t", 1)
    # t:0 fetched 0..3 (the reader at 4, below its live 6: not joined); t:1 fetched 0..3 (at
    # exactly its live 4: everything below it read, it joins)
    fetched = {t0: fetch(0, range(4)), t1: fetch(1, range(4))}
    assert not source._backfill_step("v", filling, fetched, {"t:0": 4, "t:1": 4}, changes, keys)
    assert filling.joined == {"t:1"}
    assert filling.positions == {"t:0": 4, "t:1": 4}
    # t:0's next fetch runs past 6: 4, 5 applied, 6.. left to the live path; then live
    assert source._backfill_step(
        "v", filling, {t0: fetch(0, range(4, 9))}, {"t:0": 9}, changes, keys
    )
    assert "v" not in registry.backfills
    registry.apply(Batch("s", [{"ts": BASE_TS + i, "id": i} for i in range(6, 9)], 9, part="t:0"))
    ((n, ids),) = all_rows(registry.views["v"]).values()
    assert n == 9 + 4  # t:0: 0..8 once each; t:1: 0..3
    assert ids == sum(range(9)) + sum(range(4))


@pytest.mark.asyncio
async def test_a_kafka_backfill_goes_on_from_its_part_files_after_a_restart(
    kafka: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each partition's backfill progress is saved in its part file with the live views' state
    (one file, one position each): stopped mid-backfill, the restarted server goes on from there
    — it does not read the partitions from their start again — and ends exact."""
    rng = random.Random(9)
    topic = await create_topic(kafka, 3)
    group = f"g{uuid.uuid4().hex[:8]}"
    sent = records(rng, 0, 3000)
    await produce(kafka, topic, sent)
    slow = 2_000  # backfill_chunk_bytes: hundreds of steps
    quick = ('session_timeout = "6s"', 'session_timeout = "2s"')  # the restart rejoins sooner
    first = config(kafka, topic, group, False).replace(*quick)
    async with running(first, tmp_path, backfill_chunk_bytes=slow) as (client, engine):
        await until(lambda: _counted_at_least(client, 3000), 60)
        r = await client.post("/v1/admin/config", data=config(kafka, topic, group, True))
        assert r.status == 200, await r.text()

        async def partway() -> bool:
            filling = engine.registry.backfills.get("added")
            assert filling is not None, "done before the restart: make the backfill slower"
            read = sum(filling.positions.get(p, b) - b for p, b in filling.began.items())
            return read >= 600

        await until(partway, 60)
    caplog.set_level(logging.INFO, logger="tallyd.kafka")
    added = config(kafka, topic, group, True).replace(*quick)
    async with running(added, tmp_path, backfill_chunk_bytes=slow) as (client, engine):

        async def filled() -> bool:
            return (await answer(client, "added"))[0] is False

        await until(filled, 90)
        expected = reference([e for _, e in sent])
        assert (await answer(client, "added"))[1] == expected
        assert (await answer(client, "twin"))[1] == expected
    lines = [r.getMessage() for r in caplog.records]
    resumed = [line for line in lines if "backfill_resumed" in line]
    assert resumed, "no partition went on from its part file"
    # What the restarted server read of the history: at most what the first had left. (Counted
    # from the done line, not from the resumed ones: a partition that joined between the 600th
    # record and the stop goes on from its part file too, without a resumed line.)
    (done,) = [line for line in lines if "event=backfill_done view=added" in line]
    found = re.search(r" events=(\d+)", done)
    assert found is not None, done
    assert int(found[1]) <= 3000 - 600, f"the restart read the history again: {done} {resumed}"


async def _counted_at_least(client: TestClient[Any, Any], n: int) -> bool:
    return await counted(client) >= n
