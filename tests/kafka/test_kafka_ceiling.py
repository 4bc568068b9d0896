"""``benchmarks.kafka_ceiling``'s bare consumer reads every record of a topic, once."""

from __future__ import annotations

import pytest

from benchmarks.kafka_ceiling import client_alone
from benchmarks.targets import produce_lines


@pytest.mark.asyncio
async def test_the_client_alone_reads_every_record_of_the_topic(kafka: str) -> None:
    records = [(i % 4, b"k%d" % (i % 7), b'{"n": %d}' % i) for i in range(3_000)]
    _, end = await produce_lines(kafka, records)
    assert sum(end.values()) == 3_000
    got = await client_alone(kafka, next(iter(end)).rsplit(":", 1)[0], 3_000, None)
    assert got["events_per_s"] > 0
    assert got["broker_cores"] is None  # not a broker this benchmark started
    assert got["mb_per_s"] * 1e6 / got["events_per_s"] == pytest.approx(
        sum(len(v) for _, _, v in records) / 3_000
    )
