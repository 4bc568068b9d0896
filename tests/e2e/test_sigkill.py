"""Acceptance 3: SIGKILL the real server while clients post; restart; every acknowledged event is
counted exactly once, and every answer equals the reference over the events that were counted."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from benchmarks import crash
from benchmarks.server import ServerProcess
from tests import reference as ref
from tests.helpers import BASE_TS

CONFIG = """
[server]
snapshot_every = "300ms"

[sources.events]
time = "ts"

[views.audit]
sql = "SELECT batch, count(*) AS n, sum(id) AS ids FROM events GROUP BY batch"
max_groups = 1000000

[views.stats]
sql = '''SELECT k, tumble(ts, '1 minute') AS minute, count(*) AS n, sum(v) AS total,
         min(v) AS lo, max(v) AS hi, count_distinct(u) AS users
         FROM events GROUP BY k, minute'''
grace = "1d"
"""

CYCLES = 5
CLIENTS = 3
PROGRESS_TIMEOUT = 60.0  # seconds for a cycle's few dozen acknowledgements (ms each, normally)


class Ledger:
    def __init__(self) -> None:
        self.sent: dict[int, list[dict[str, Any]]] = {}
        self.acked: set[int] = set()
        self.acknowledged = asyncio.Event()  # set at each acknowledgement
        self.next_batch = 0
        self.next_id = 1

    def ack(self, batch: int) -> None:
        self.acked.add(batch)
        self.acknowledged.set()

    async def until_acked(self, target: int, clients: list[asyncio.Task[None]], log: Path) -> None:
        """Wait until ``target`` batches are acknowledged, woken by each acknowledgement, for
        at most ``PROGRESS_TIMEOUT`` seconds; else fail saying how far it got and why."""
        deadline = asyncio.get_running_loop().time() + PROGRESS_TIMEOUT
        while len(self.acked) < target:
            self.acknowledged.clear()
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self.acknowledged.wait(), max(left, 0))
            except TimeoutError:
                posting = sum(not c.done() for c in clients)
                raise AssertionError(
                    f"{len(self.acked)} of {target} batches acknowledged after "
                    f"{PROGRESS_TIMEOUT:.0f} s ({posting} of {len(clients)} clients still "
                    f"posting); the server's log ends:\n{log.read_text()[-2000:]}"
                ) from None


async def poster(url: str, ledger: Ledger, rng: random.Random, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            batch = ledger.next_batch
            ledger.next_batch += 1
            events = []
            for _ in range(rng.randrange(1, 300)):
                events.append(
                    {
                        "id": ledger.next_id,
                        "batch": batch,
                        "ts": BASE_TS + rng.randrange(600_000),
                        "k": rng.choice("abc"),
                        "v": rng.choice([rng.randrange(100), round(rng.random() * 50, 3)]),
                        "u": rng.randrange(50),
                    }
                )
                ledger.next_id += 1
            ledger.sent[batch] = events
            body = b"\n".join(orjson.dumps(e) for e in events)
            try:
                async with session.post(f"{url}/v1/sources/events/events", data=body) as response:
                    if response.status == 200:
                        ledger.ack(batch)
            except aiohttp.ClientError:
                return  # the server died under us: this batch is in flight, fate unknown


async def rows(url: str, view: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        return await crash.rows(session, url, view)


@pytest.mark.asyncio
async def test_sigkill_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    config = tmp_path / "tallyd.toml"
    config.write_text(CONFIG)
    server = ServerProcess(config, tmp_path / "data", tmp_path / "server.log")
    ledger = Ledger()
    rng = random.Random(99)
    for _ in range(CYCLES):
        await server.start()
        stop = asyncio.Event()
        clients = [
            asyncio.create_task(poster(server.url, ledger, random.Random(rng.random()), stop))
            for _ in range(CLIENTS)
        ]
        target = len(ledger.acked) + rng.randrange(5, 60)
        try:
            await ledger.until_acked(target, clients, server.log)  # then kill at a random point
        finally:
            server.kill()  # the clients' next post fails: each returns
            stop.set()
            await asyncio.wait_for(asyncio.gather(*clients), 60)
    await server.start()

    audit = {r["batch"]: r for r in await rows(server.url, "audit")}
    in_flight = set(ledger.sent) - ledger.acked
    lost = ledger.acked - set(audit)
    assert not lost, f"acknowledged batches missing after restart: {sorted(lost)[:10]}"
    assert set(audit) <= set(ledger.sent)
    for batch, row in audit.items():  # each counted batch counted whole, exactly once
        events = ledger.sent[batch]
        assert row["n"] == len(events), (batch, row, len(events))
        assert row["ids"] == sum(e["id"] for e in events)
    counted = [dict(e, _ts=e["ts"]) for b in audit for e in ledger.sent[b]]
    print(
        f"\nverdict: batches sent={len(ledger.sent)} acknowledged={len(ledger.acked)} "
        f"in flight at a kill={len(in_flight)} counted={len(audit)} lost=0 duplicated=0 "
        f"events counted={len(counted)}"
    )

    expected = []
    for (start, k), group in ref.group(counted, lambda e: True, ["k"], ref.tumble(60_000)).items():
        vs = [e["v"] for e in group]
        expected.append(
            {
                "k": k,
                "minute": ref.iso(start),
                "n": len(group),
                "total": ref.fsum_or_none(vs),
                "lo": min(vs),
                "hi": max(vs),
                "users": len({e["u"] for e in group}),
            }
        )
    expected.sort(key=lambda r: (r["minute"], r["k"]))
    assert await rows(server.url, "stats") == expected
    assert server.terminate() == 0  # SIGTERM: a final snapshot, so the next start replays nothing
    await server.start()
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/readyz") as r:
        assert (await r.json())["recovery"]["replayed_batches"] == 0
    assert await rows(server.url, "stats") == expected
    assert server.terminate() == 0
