"""The records ``ingest.kafka_records`` hands out are aiokafka's own records' fields, record for
record: the same topic read by a hooked consumer and by a plain one (a real broker)."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from benchmarks.broker import create_topic
from ingest.idempotency import HEADER, parse_header
from ingest.kafka_records import plain_records

pytestmark = pytest.mark.asyncio


async def _read(bootstrap: str, topic: str, total: int, plain: bool) -> list[tuple[int, Any]]:
    """(partition, record) of the topic's two partitions, in offset order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4096,  # several fetches, so results are stored while hooked
    )
    await consumer.start()
    try:
        if plain:
            assert plain_records(consumer)
        parts = [TopicPartition(topic, p) for p in range(2)]
        consumer.assign(parts)
        out: list[tuple[int, Any]] = []
        for _ in range(200):
            fetched = await consumer.getmany(timeout_ms=500, max_records=7)
            out.extend((tp.partition, m) for tp, messages in fetched.items() for m in messages)
            if len(out) >= total:
                break
        return sorted(out, key=lambda pm: (pm[0], pm[1].offset))
    finally:
        await consumer.stop()


def _fields(partition: int, record: Any) -> tuple[Any, ...]:
    return (
        partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        tuple(tuple(h) for h in record.headers),
    )


async def test_the_parsers_records_carry_the_same_fields_as_consumer_records(kafka: str) -> None:
    topic = await create_topic(kafka, 2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka, compression_type="gzip", linger_ms=5)
    await producer.start()
    sent = []
    try:
        for i in range(300):
            # A null value (a tombstone) needs a key; other records may have none.
            key = None if i % 5 == 0 and i % 11 else f"k{i % 7}".encode()
            value = None if i % 11 == 0 else b'{"ts": %d, "n": %d}' % (1_790_000_000_000 + i, i)
            headers = [(HEADER, f"{i} d{i % 3} key{i % 4}".encode())] if i % 3 == 0 else []
            delivery = await producer.send(  # waits for room in a batch, not for the broker
                topic,
                value,
                key=key,
                partition=i % 2,
                timestamp_ms=1_790_000_000_000 + 1000 * i,
                headers=headers,
            )
            sent.append(delivery)
        for future in sent:
            await future
    finally:
        await producer.stop()

    consumed = await _read(kafka, topic, 300, plain=False)
    hooked = await _read(kafka, topic, 300, plain=True)

    assert len(consumed) == len(hooked) == 300
    assert all(isinstance(m, ConsumerRecord) for _, m in consumed)
    assert not any(isinstance(m, ConsumerRecord) for _, m in hooked)  # the hook took
    assert [_fields(*pm) for pm in hooked] == [_fields(*pm) for pm in consumed]
    # What tallyd reads of a record's headers reads the same from both.
    requests = [parse_header(m.headers) for _, m in hooked]
    assert requests == [parse_header(m.headers) for _, m in consumed]
    assert sum(r is not None for r in requests) == 100


async def test_a_consumer_not_started_is_left_alone() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id=None)
    try:
        assert not plain_records(consumer)  # no fetcher yet: nothing to hook, and it says so
    finally:
        await consumer.stop()
