"""Whose limit a Kafka figure is: the Kafka client and broker alone against tallyd, on one topic.

    python -m benchmarks.kafka_ceiling [--passes 2] [--rounds 2] [--bootstrap HOST:PORT] [--out DIR]

The flights (``benchmarks/flights.py``, ``--passes`` times, keyed by carrier on 4 partitions, as
``python -m benchmarks.targets --only kafka_real`` sends them) are produced once; then, in turn,
``--rounds`` times:

* **client alone**: an ``AIOKafkaConsumer`` set up as tallyd's (``max_poll_records`` 20,000, the
  parser's records), in this process, reading the topic from its start to its end and dropping
  every record — what the client and the broker can hand over with nothing else to do;
* **tallyd**: a real ``tallyd serve`` consuming the same topic into the six views, until every
  partition's position is its end (then the ``daily`` view's miles checked against the records).

Each with records/s from the first record to the last, and the CPU (cores) the consumer — this
process, or the server — and the broker (a Tansu started here; not measured with
``--bootstrap``) used meanwhile. A broker's fetch and the client's read of it alternate (one
fetch in flight per broker), so the two figures say whether tallyd waits on its own work or on
the broker and client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from benchmarks.broker import Broker
from benchmarks.targets import consume_flights, cpu_seconds, produce_flights
from ingest.kafka_records import plain_records


async def client_alone(
    bootstrap: str, topic: str, records: int, broker: int | None
) -> dict[str, Any]:
    """Every record of ``topic`` read and dropped by a bare consumer, bounded at 600 s."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"c{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=20_000,
    )
    await consumer.start()
    plain_records(consumer)
    got = size = fetches = 0
    first = cpu = broker_cpu = 0.0
    try:
        deadline = time.monotonic() + 600
        while got < records:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {got} of {records} records in 600 s")
            fetched = await consumer.getmany(timeout_ms=500, max_records=20_000)
            if fetched and not got:
                first, cpu = time.perf_counter(), time.process_time()
                broker_cpu = cpu_seconds(broker) if broker else 0.0
            for messages in fetched.values():
                fetches += 1
                got += len(messages)
                size += sum(len(m.value) for m in messages)
        seconds = time.perf_counter() - first
        used = time.process_time() - cpu
        used_by_broker = cpu_seconds(broker) - broker_cpu if broker else None
    finally:
        await consumer.stop()
    assert got == records, (got, records)
    return {
        "events_per_s": got / seconds,
        "mb_per_s": size / seconds / 1e6,
        "records_a_part": got / fetches,
        "consumer_cores": used / seconds,
        "broker_cores": None if used_by_broker is None else used_by_broker / seconds,
    }


async def tallyd(
    tmp: Path, bootstrap: str, topic: str, end: dict[str, int], passes: int, broker: int | None
) -> dict[str, Any]:
    """A server of its own (data directory, consumer group) from the topic's start to its end."""
    before = cpu_seconds(broker) if broker else 0.0
    name = f"ceiling-{uuid.uuid4().hex[:6]}"
    timing, _ = await consume_flights(tmp, bootstrap, topic, end, passes, name)
    # The broker's CPU over the server's whole run (start, consumption, stop): an upper bound.
    spent = cpu_seconds(broker) - before if broker else None
    return {
        "events_per_s": timing["events_per_s"],
        "consumer_cores": timing["cpu_seconds"] / timing["seconds"],
        "broker_cores": None if spent is None else spent / timing["seconds"],
    }


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    broker = None if args.bootstrap else Broker(tmp / "tansu.log")
    if broker is not None:
        broker.start()
    try:
        bootstrap = args.bootstrap or (broker.bootstrap if broker else "")
        pid = broker.proc.pid if broker and broker.proc else None
        topic, end = await produce_flights(bootstrap, args.passes)
        records = sum(end.values())
        out: dict[str, Any] = {"records": records, "client": [], "tallyd": []}
        for _ in range(args.rounds):
            alone = await client_alone(bootstrap, topic, records, pid)
            print("client alone", alone, flush=True)
            out["client"].append(alone)
            served = await tallyd(tmp, bootstrap, topic, end, args.passes, pid)
            print("tallyd", served, flush=True)
            out["tallyd"].append(served)
        return out
    finally:
        if broker is not None:
            broker.stop()


def table(out: dict[str, Any]) -> str:
    def cores(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    rows = ["| round | client alone | tallyd, six views | tallyd / client |", "|---|---|---|---|"]
    for i, (alone, served) in enumerate(zip(out["client"], out["tallyd"], strict=True), start=1):
        rows.append(
            f"| {i} | {alone['events_per_s']:,.0f}/s ({alone['mb_per_s']:.0f} MB/s; client "
            f"{cores(alone['consumer_cores'])} cores, broker {cores(alone['broker_cores'])}) "
            f"| {served['events_per_s']:,.0f}/s (server {cores(served['consumer_cores'])} cores, "
            f"broker {cores(served['broker_cores'])}) "
            f"| {served['events_per_s'] / alone['events_per_s']:.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=2, help="times over the 336,776 flights")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", help="a Kafka to use instead of a Tansu started here")
    parser.add_argument("--out", type=Path, help="a directory for the JSON and the logs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.out or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        out = asyncio.run(run(args, tmp))
        (tmp / "kafka_ceiling.json").write_text(json.dumps(out, indent=1))
    print(table(out))


if __name__ == "__main__":
    main()
