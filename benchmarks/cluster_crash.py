"""The crash oracle over a cluster: events posted to any member of three, members SIGKILLed at
random and restarted, then proof that every acknowledged event is counted exactly once — asked of
any member, which answers for the whole topic.

    python -m benchmarks.cluster_crash --kills 50 [--retry] [--bootstrap HOST:PORT] [--seed N]

Clients post batches of events with unique ids to random members (a post to a clustered Kafka
source appends to its topic; a 200 means the broker has every record). Every cycle one random
member is SIGKILLed — often mid-post, mid-consumption or mid-hand-over — and started again on
the same data directory; posts to it fail meanwhile and go elsewhere. After the last kill every
member is running, the group settles and every partition is read to its end; then one member's
exact audit view (per batch: count and distinct count of ids) is compared with the clients' log:

    every acknowledged batch counted whole, no id twice;
    a batch whose post died with its member: counted in part or not at all (its fate is unknown
    to the client), never an id twice.

With ``--retry`` a client retries a post that died (or was refused with a 5xx) on another random
member, with the same Idempotency-Key, until it is acknowledged: the first attempt may have
appended part of the batch or all of it, so the topic holds duplicates, which the partitions'
owners must drop (``ingest.idempotency``). Then every batch must be acknowledged and counted
exactly once. Batches are not kept to one partition (no ``partition_by``): each is spread in
blocks over the partitions, so a retry's records meet several owners.

Bounded: a fixed number of kill cycles, each a few seconds, then a bounded wait to settle.
Without ``--bootstrap`` a Tansu broker is started (the test extras).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.broker import broker_unless, create_topic
from benchmarks.crash import Ledger
from benchmarks.server import ServerProcess

SECRET_ENV = "TALLYD_CRASH_CLUSTER_SECRET"  # noqa: S105 - a variable's name
PARTITIONS = 6
MEMBERS = 3
AUDIT = "SELECT batch, count(*) AS n, count_distinct(id) AS ids FROM events GROUP BY batch"


def config(bootstrap: str, topic: str, shared: Path, retry: bool) -> str:
    partition_by = "" if retry else 'partition_by = "batch"'
    return f"""
[server]
snapshot_every = "300ms"

[cluster]
secret_env = "{SECRET_ENV}"

[sources.events]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{topic}"
group = "crash{uuid.uuid4().hex[:8]}"
time = "ts"
state_dir = "{shared}"
session_timeout = "6s"
{partition_by}

[views.audit]
sql = "{AUDIT}"
"""


@dataclass
class Outcome:
    kills: int
    sent_batches: int
    acknowledged: int
    counted_events: int
    lost: int = 0  # acknowledged events not counted
    duplicated: int = 0  # ids counted more than once
    unknown_counted: int = 0  # batches whose post died, counted (whole or in part)
    strangers: int = 0  # batches counted that no client sent
    retries: int = 0  # posts sent again with the same Idempotency-Key (--retry)
    dropped: int = 0  # records of retries the partitions' owners left out as counted before
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.strangers or self.problems)

    def __str__(self) -> str:
        return (
            f"kills={self.kills} batches sent={self.sent_batches} "
            f"acknowledged={self.acknowledged} counted events={self.counted_events} "
            f"lost={self.lost} duplicated={self.duplicated} "
            f"(posts that died with their member, then counted: {self.unknown_counted}; "
            f"retried posts: {self.retries}, their records dropped as counted: {self.dropped})"
        )


async def poster(
    urls: list[str], ledger: Ledger, rng: random.Random, stop: asyncio.Event, out: Outcome | None
) -> None:
    """Post batches to random members until stopped; a post that dies is logged as unknown, or
    with ``out`` (``--retry``) posted again elsewhere with its Idempotency-Key until acknowledged
    (bounded: a minute per batch)."""
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            batch, events = ledger.new_batch(rng)
            body = b"\n".join(orjson.dumps(e) for e in events)
            headers = None if out is None else {"Idempotency-Key": f"batch-{batch}"}
            deadline = time.monotonic() + 60
            while True:
                url = rng.choice(urls)
                try:
                    async with session.post(
                        f"{url}/v1/sources/events/events", data=body, headers=headers
                    ) as r:
                        if r.status == 200:
                            ledger.acked.add(batch)
                            break
                        if r.status not in (409, 503):
                            raise AssertionError(f"{r.status}: {await r.text()}")
                except (TimeoutError, aiohttp.ClientError):
                    pass  # that member is down: the next post goes elsewhere
                await asyncio.sleep(0.05)  # the broker or the member is in trouble
                if out is None or time.monotonic() > deadline:
                    break
                out.retries += 1


async def settled(nodes: list[ServerProcess], timeout: float) -> dict[str, Any]:
    """The audit answer once a member answers whole and every partition is at its end."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            ends: dict[str, int] = {}
            positions: dict[str, int] = {}
            try:
                for node in nodes:
                    async with session.get(f"{node.url}/v1/sources") as r:
                        status = (await r.json())["sources"][0]["status"]
                    for part, s in status["partitions"].items():
                        positions[part] = s["position"] or 0
                        if s["end"] is not None:
                            ends[part] = s["end"]
                answer = await audit(session, nodes[0].url)
            except (aiohttp.ClientError, KeyError):
                await asyncio.sleep(0.2)  # a member still starting
                continue
            if answer is not None and len(ends) == PARTITIONS and positions == ends:
                return answer
            await asyncio.sleep(0.2)  # polling a condition, bounded by the deadline
    raise TimeoutError(f"the cluster did not settle in {timeout} s")


async def audit(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    """Every row of the audit view, page by page; None if any page is partial."""
    rows: list[dict[str, Any]] = []
    cursor = ""
    while True:
        async with session.get(f"{url}/v1/views/audit?limit=10000{cursor}") as r:
            page = await r.json()
        if page["freshness"]["partial"]:
            return None
        rows += page["rows"]
        if page["next_cursor"] is None:
            return {"rows": rows}
        cursor = f"&cursor={page['next_cursor']}"


def judge(ledger: Ledger, answer: dict[str, Any], out: Outcome) -> Outcome:
    counted = {row["batch"]: (row["n"], row["ids"]) for row in answer["rows"]}
    out.sent_batches, out.acknowledged = len(ledger.sent), len(ledger.acked)
    out.counted_events = sum(n for n, _ in counted.values())
    for batch, ids in ledger.sent.items():
        n, distinct = counted.get(batch, (0, 0))
        out.duplicated += n - distinct
        if batch in ledger.acked:
            if n < len(ids):
                out.lost += len(ids) - n
                out.problems.append(f"batch {batch}: acknowledged {len(ids)}, counted {n}")
            elif n > len(ids):
                out.duplicated += n - len(ids)
        elif n:
            out.unknown_counted += 1
            if n > len(ids):
                out.duplicated += n - len(ids)
    unknown = set(counted) - set(ledger.sent)
    if unknown:
        out.strangers = len(unknown)
        out.problems.append(f"batches counted that were never sent: {sorted(unknown)[:5]}")
    return out


async def run(kills: int, seed: int, bootstrap: str | None, retry: bool = False) -> Outcome:
    os.environ.setdefault(SECRET_ENV, os.urandom(16).hex())
    rng = random.Random(seed)
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        broker_unless(bootstrap, Path(tmp_name)) as kafka,
    ):
        tmp = Path(tmp_name)
        topic = await create_topic(kafka, PARTITIONS)
        path = tmp / "cluster.toml"
        path.write_text(config(kafka, topic, tmp / "shared", retry))
        nodes = [ServerProcess(path, tmp / f"n{i}", tmp / f"n{i}.log") for i in range(MEMBERS)]
        for node in nodes:
            await node.start(timeout=120)
        ledger, stop, out = Ledger(), asyncio.Event(), Outcome(kills, 0, 0, 0)
        urls = [n.url for n in nodes]
        clients = [
            asyncio.create_task(poster(urls, ledger, rng, stop, out if retry else None))
            for _ in range(2)
        ]
        try:
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.5, 3.0))  # posts and consumption meanwhile
                victim = rng.choice(nodes)
                victim.kill()
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                await victim.start(timeout=120)
        finally:
            stop.set()
            await asyncio.gather(*clients, return_exceptions=True)
        try:
            answer = await settled(nodes, 180)
            out.dropped = await dropped(nodes)
        finally:
            for node in nodes:
                node.terminate()
    if retry and len(ledger.acked) < len(ledger.sent):
        out.problems.append(f"{len(ledger.sent) - len(ledger.acked)} batches never acknowledged")
    return judge(ledger, answer, out)


async def dropped(nodes: list[ServerProcess]) -> int:
    """Records of retried posts the members dropped as counted before, since they started."""
    total = 0
    async with aiohttp.ClientSession() as session:
        for node in nodes:
            async with session.get(f"{node.url}/v1/sources") as r:
                total += (await r.json())["sources"][0]["status"]["idempotency"]["dropped"]
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster_crash", description=__doc__)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", help="an existing Kafka (default: start Tansu)")
    parser.add_argument(
        "--retry", action="store_true", help="retry failed posts with their Idempotency-Key"
    )
    args = parser.parse_args(argv)
    outcome = asyncio.run(run(args.kills, args.seed, args.bootstrap, args.retry))
    print(outcome)
    for problem in outcome.problems[:20]:
        print("  ", problem)
    raise SystemExit(0 if outcome.ok else 1)


if __name__ == "__main__":
    main()
