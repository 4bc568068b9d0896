"""The crash suite's oracle: kill tallyd at random moments under HTTP and Kafka load, then prove
that every acknowledged event is counted exactly once.

    python -m benchmarks.crash --kills 1000 [--bootstrap HOST:PORT] [--seed N]

Every generated event carries a unique id. HTTP clients log which batches were acknowledged (a
200); Kafka records count as acknowledged once the broker acked them. After the last kill the
server restarts, catches up, and exact audit views (count, sum and distinct count of ids, per HTTP
batch and over the Kafka records) are compared with the logs:

    acknowledged ⊆ counted ⊆ sent, each counted batch whole, no id twice.

Every fourth cycle (``--kafka-every``) waits until the Kafka source has joined the group and is
consuming before its kill; the others kill within 0.6 s of the start, often before the group
has assigned anything. The verdict is printed as figures: sent / acknowledged / counted / lost /
duplicated, and how many kills landed mid-consumption. Bounded: a fixed number of kill cycles,
each stopping by itself. Without ``--bootstrap`` a Tansu broker is
started (it needs the test extras); ``--no-kafka`` runs HTTP only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.broker import broker_unless, create_topic
from benchmarks.server import ServerProcess

BASE_TS = 1_790_000_000_000

CONFIG = """
[server]
snapshot_every = "{snapshot_every}"

[sources.events]
time = "ts"

[views.audit]
sql = '''SELECT batch, count(*) AS n, sum(id) AS ids, count_distinct(id) AS distinct_ids
         FROM events GROUP BY batch'''
max_groups = 10000000
"""

KAFKA_CONFIG = """
[sources.stream]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{topic}"
group = "{group}"
time = "ts"
session_timeout = "3s"

[views.stream_audit]
sql = "SELECT count(*) AS n, sum(id) AS ids, count_distinct(id) AS distinct_ids FROM stream"

# Where a Kafka verdict goes wrong: ids in runs of 10,000 (ts = BASE_TS + id ms).
[views.stream_chunks]
sql = "SELECT tumble(ts, '10 seconds') AS c, count(*) AS n, sum(id) AS ids FROM stream GROUP BY c"
retention = "3650d"
grace = "1h"
"""

CHUNK = 10_000  # ids per stream_chunks row
# snapshot_every in kill cycles (most of them snapshot: restarts stay quick), and while a
# verification catches up (nothing is killed then; see _verified)
KILL_SNAPSHOTS, VERIFY_SNAPSHOTS = "150ms", "5s"


@dataclass
class Ledger:
    """What the clients sent and what was acknowledged."""

    sent: dict[int, list[int]] = field(default_factory=dict)  # HTTP batch -> event ids
    acked: set[int] = field(default_factory=set)
    next_batch: int = 0
    next_id: int = 1
    produced: list[int] = field(default_factory=list)  # Kafka ids acked by the broker

    def new_batch(self, rng: random.Random) -> tuple[int, list[dict[str, Any]]]:
        batch = self.next_batch
        self.next_batch += 1
        events = []
        for _ in range(rng.randrange(1, 200)):
            events.append({"id": self.next_id, "batch": batch, "ts": BASE_TS + self.next_id})
            self.next_id += 1
        self.sent[batch] = [e["id"] for e in events]
        return batch, events


@dataclass
class Verdict:
    sent: int
    acknowledged: int
    counted: int
    lost: int
    duplicated: int
    in_flight_counted: int
    kafka_produced: int = 0
    kafka_counted: int = 0
    kafka_duplicated: int = 0
    kafka_lost: int = 0
    kafka_kills: int = 0  # kills that landed while the Kafka source was consuming
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"HTTP events: sent={self.sent} acknowledged={self.acknowledged} "
            f"counted={self.counted} lost={self.lost} duplicated={self.duplicated} "
            f"(in flight at a kill, then counted: {self.in_flight_counted})"
        )
        if self.kafka_produced:
            text += (
                f"\nKafka records: produced={self.kafka_produced} counted={self.kafka_counted} "
                f"lost={self.kafka_lost} duplicated={self.kafka_duplicated} "
                f"(kills while consuming: {self.kafka_kills})"
            )
        return text

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.kafka_lost or self.kafka_duplicated)


async def post_batch(
    session: aiohttp.ClientSession, url: str, ledger: Ledger, rng: random.Random
) -> bool:
    """Post one new batch, logging it; False when the server died under it (fate unknown)."""
    batch, events = ledger.new_batch(rng)
    body = b"\n".join(orjson.dumps(e) for e in events)
    try:
        async with session.post(f"{url}/v1/sources/events/events", data=body) as response:
            if response.status == 200:
                ledger.acked.add(batch)
            return True
    except (TimeoutError, aiohttp.ClientError):
        return False


async def poster(url: str, ledger: Ledger, rng: random.Random, stop: asyncio.Event) -> None:
    """Post batches until stopped or the server dies."""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set() and await post_batch(session, url, ledger, rng):
            pass


async def producer(bootstrap: str, topic: str, ledger: Ledger, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaProducer

    kafka = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await kafka.start()
    try:
        while not stop.is_set():
            ids = list(range(ledger.next_id, ledger.next_id + 100))
            ledger.next_id += 100
            acks = [
                await kafka.send(topic, orjson.dumps({"id": i, "ts": BASE_TS + i}), partition=i % 2)
                for i in ids
            ]
            await asyncio.gather(*acks)
            ledger.produced += ids
            await asyncio.sleep(0.01)  # a steady trickle, not a flood: leave CPU to the server
    finally:
        await kafka.stop()


async def rows(session: aiohttp.ClientSession, url: str, view: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "10000", **({"cursor": cursor} if cursor else {})}
        async with session.get(f"{url}/v1/views/{view}", params=params) as response:
            body = await response.json()
        out += body["rows"]
        cursor = body["next_cursor"]
        if cursor is None:
            return out


async def verdict(url: str, ledger: Ledger, kafka: bool) -> Verdict:
    """The oracle: compare the server's exact audit views with the clients' logs."""
    problems: list[str] = []
    async with aiohttp.ClientSession() as session:
        audit = {r["batch"]: r for r in await rows(session, url, "audit")}
        duplicated = 0
        for batch, row in audit.items():
            ids = ledger.sent.get(batch)
            if ids is None:
                problems.append(f"batch {batch} counted but never sent")
                continue
            if row["n"] != len(ids) or row["ids"] != sum(ids) or row["distinct_ids"] != len(ids):
                duplicated += max(0, row["n"] - len(ids))
                problems.append(f"batch {batch}: counted {row} for {len(ids)} events sent")
        lost_batches = ledger.acked - set(audit)
        problems += [f"acknowledged batch {b} not counted" for b in sorted(lost_batches)[:20]]
        result = Verdict(
            sent=sum(len(v) for v in ledger.sent.values()),
            acknowledged=sum(len(ledger.sent[b]) for b in ledger.acked),
            counted=sum(r["n"] for r in audit.values()),
            lost=sum(len(ledger.sent[b]) for b in lost_batches),
            duplicated=duplicated,
            in_flight_counted=len(set(audit) - ledger.acked),
            problems=problems,
        )
        if kafka:
            (row,) = await rows(session, url, "stream_audit")
            produced = ledger.produced
            result.kafka_produced = len(produced)
            result.kafka_counted = row["n"]
            result.kafka_duplicated = row["n"] - row["distinct_ids"]
            result.kafka_lost = len(produced) - row["distinct_ids"]
            if row["ids"] != sum(produced):
                problems.append(f"Kafka id sum {row['ids']} != produced {sum(produced)}")
                result.kafka_lost = max(result.kafka_lost, 1)
            if result.kafka_lost or result.kafka_duplicated:
                problems += await _kafka_chunks(session, url, produced)
    return result


async def _kafka_chunks(session: aiohttp.ClientSession, url: str, produced: list[int]) -> list[str]:
    """Which runs of ids went wrong, and how (odd ids are partition 1, even ones partition 0)."""
    expected: dict[int, list[int]] = {}
    for i in produced:
        expected.setdefault(i // CHUNK, []).append(i)
    counted = {}
    for row in await rows(session, url, "stream_chunks"):
        start = datetime.fromisoformat(row["c"]).timestamp() * 1000
        counted[int(start - BASE_TS) // CHUNK] = row
    out = []
    for chunk in sorted(expected.keys() | counted.keys()):
        ids = expected.get(chunk, [])
        row = counted.get(chunk, {"n": 0, "ids": 0})
        if row["n"] != len(ids) or row["ids"] != sum(ids):
            out.append(
                f"Kafka ids {chunk * CHUNK}..{(chunk + 1) * CHUNK - 1}: counted n={row['n']} "
                f"sum={row['ids']}, produced n={len(ids)} sum={sum(ids)}"
            )
    return out


async def _partitions_until(
    url: str, timeout: float, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    """Poll the Kafka source's partitions until ``done`` says so (bounded). Returns them, or
    None when the deadline passed first."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"{url}/v1/status") as r:
                parts: dict[str, Any] = (await r.json())["sources"]["stream"]["partitions"]
            if done(parts):
                return parts
            await asyncio.sleep(0.05)  # polling progress, bounded by the deadline
    return None


async def caught_up(url: str, timeout: float) -> None:
    """Until every Kafka partition's position reaches its end (bounded)."""
    last: dict[str, Any] = {}

    def done(parts: dict[str, Any]) -> bool:
        last.update(parts)
        return len(parts) == 2 and all(p["lag"] == 0 and p["end"] for p in parts.values())

    if await _partitions_until(url, timeout, done) is None:
        raise TimeoutError(f"Kafka not caught up in {timeout} s: {last}")


async def consuming(url: str, timeout: float) -> bool:
    """Until the Kafka source owns partitions and their positions move (bounded): a kill then
    lands mid-consumption. False if that did not happen in time."""
    first: list[int] = []  # the positions' total when partitions were first seen

    def done(parts: dict[str, Any]) -> bool:
        total = sum(p["position"] or 0 for p in parts.values())
        if parts and not first:
            first.append(total)
        return bool(parts) and total > first[0]

    return await _partitions_until(url, timeout, done) is not None


async def run(
    kills: int,
    directory: Path,
    bootstrap: str | None,
    seed: int = 7,
    clients: int = 2,
    progress: bool = False,
    verify_every: int | None = None,
    kafka_every: int = 4,
) -> Verdict:
    """``kills`` SIGKILL cycles under load (HTTP, plus Kafka when ``bootstrap`` is given).
    ``verify_every``: also run the oracle after every that many kills (a long run then leaves
    verdicts along the way), continuing with the same data and logs. ``kafka_every``: every that
    many cycles, the kill waits until the Kafka source is consuming (joining the group takes
    seconds, longer than most cycles), then lands at a random moment of it."""
    rng = random.Random(seed)
    kafka_text = ""
    topic = None
    if bootstrap is not None:
        topic = await create_topic(bootstrap, 2)
        kafka_text = KAFKA_CONFIG.format(bootstrap=bootstrap, topic=topic, group=f"crash-{topic}")
    config = directory / "tallyd.toml"

    def configure(snapshot_every: str) -> None:
        config.write_text(CONFIG.format(snapshot_every=snapshot_every) + kafka_text)

    configure(KILL_SNAPSHOTS)
    server = ServerProcess(config, directory / "data", directory / "server.log")
    ledger = Ledger()
    kafka_kills = 0
    for cycle in range(kills):
        await server.start(timeout=60)
        stop = asyncio.Event()
        tasks = []
        if topic is not None:
            assert bootstrap is not None
            tasks.append(asyncio.create_task(producer(bootstrap, topic, ledger, stop)))
            if cycle % kafka_every == kafka_every - 1:
                # Joining the group takes seconds: wait for it (HTTP load starts after, so
                # these cycles post no more than the others), then kill mid-consumption.
                kafka_kills += await consuming(server.url, 30)
        tasks += [
            asyncio.create_task(poster(server.url, ledger, random.Random(rng.random()), stop))
            for _ in range(clients)
        ]
        await asyncio.sleep(rng.uniform(0.05, 0.6))  # a random moment of the load: then kill
        server.kill()
        stop.set()
        await asyncio.gather(*tasks)
        if progress and (cycle + 1) % 10 == 0:
            print(f"{cycle + 1} kills; {len(ledger.acked)} batches acknowledged", flush=True)
        if verify_every and (cycle + 1) % verify_every == 0 and cycle + 1 < kills:
            partial = await _verified(server, ledger, topic is not None, configure)
            partial.kafka_kills = kafka_kills
            print(f"after {cycle + 1} kills:\n{partial}", flush=True)
            if not partial.ok:
                return partial
    result = await _verified(server, ledger, topic is not None, configure)
    result.kafka_kills = kafka_kills
    return result


async def _verified(
    server: ServerProcess, ledger: Ledger, kafka: bool, configure: Callable[[str], None]
) -> Verdict:
    """Start, catch up, ask the oracle, stop (gracefully: the next cycle kills it again).

    Nothing is killed here, so snapshots are spaced out while it catches up: after 1,000 kills
    the exact audit state (every id, for count_distinct) is about 80 MB per partition file, and
    rewriting it every 150 ms left the last long run's catch-up more saving than consuming."""
    configure(VERIFY_SNAPSHOTS)
    await server.start(timeout=60)
    try:
        if kafka:
            await caught_up(server.url, 900)  # bounded, but generous (see above)
        return await verdict(server.url, ledger, kafka)
    finally:
        server.terminate()
        configure(KILL_SNAPSHOTS)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.crash",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bootstrap", help="an existing Kafka (default: a Tansu started here)")
    parser.add_argument("--no-kafka", action="store_true", help="HTTP only")
    parser.add_argument(
        "--verify-every", type=int, default=100, help="also check the oracle every N kills"
    )
    parser.add_argument(
        "--kafka-every",
        type=int,
        default=4,
        help="every N cycles, kill only once the Kafka source is consuming (default 4)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="run in this directory and keep it (server log, WAL, snapshots, part files)",
    )
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    workdir = contextlib.nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory()
    with workdir as tmp:
        if args.no_kafka:
            broker: contextlib.AbstractContextManager[str | None] = contextlib.nullcontext()
        else:
            broker = broker_unless(args.bootstrap, Path(tmp))
        with broker as bootstrap, contextlib.ExitStack() as stack:
            stack.callback(ServerProcess.stop_all)  # Ctrl-C leaves no server behind
            result = asyncio.run(
                run(
                    args.kills,
                    Path(tmp),
                    bootstrap,
                    args.seed,
                    progress=True,
                    verify_every=args.verify_every,
                    kafka_every=args.kafka_every,
                )
            )
    print(f"{args.kills} kills\n{result}")
    for problem in result.problems[:20]:
        print("  " + problem)
    raise SystemExit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
