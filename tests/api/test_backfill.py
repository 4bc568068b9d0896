"""Views added and changed on a running server fill from the retained HTTP log (issue 17).

A writer posts batches without pause — small bodies (the row path) and large ones (the column
path) — while ``POST /v1/admin/config`` (what ``tallyd apply`` calls) adds a view or changes one's
SQL; snapshots run every 100 ms, so without ``retain_events`` the log the backfill reads would
be gone. Once the answers say ``backfilling: false``, the view must equal a plain-Python
reference over every acknowledged event and a twin view defined from the start (same SQL, same
batches): nothing missed before the apply, nothing counted twice across the seam."""

from __future__ import annotations

import asyncio
import itertools
import random
import tomllib
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from ingest.wal import Retain
from tests.api.test_live import next_event
from tests.helpers import BASE_TS, IngestPath, ndjson, running, until
from views.config import parse

MINUTE = 60_000
BASE = """
[server]
retain_events = "1h"
wal_segment_bytes = 4096

[sources.orders]
time = "ts"
fields = { status = "string", amount = "number" }

[views.by_status]
sql = "SELECT status, count(*) AS n FROM orders GROUP BY status"
"""
# The view added (and its twin, defined from the start): a window, a WHERE over a field that
# is sometimes null or absent.
WINDOWED = (
    "SELECT status, tumble(ts, '1 minute') AS m, count(*) AS n, sum(amount) AS total "
    "FROM orders WHERE amount IS NULL OR amount > 2 GROUP BY status, m"
)
TWIN = BASE + f'\n[views.twin]\nsql = "{WINDOWED}"\ngrace = "1h"\n'
ADDED = TWIN + f'\n[views.added]\nsql = "{WINDOWED}"\ngrace = "1h"\n'
# by_status changed: a WHERE and a sum, under the same name
CHANGED = TWIN.replace(
    "SELECT status, count(*) AS n FROM orders GROUP BY status",
    "SELECT status, count(*) AS n, sum(amount) AS total FROM orders WHERE amount > 2 "
    "GROUP BY status",
)


def body(rng: random.Random, start: int, large: bool) -> tuple[bytes, list[dict[str, Any]]]:
    events = []
    for i in range(rng.randint(1, 12)):
        event: dict[str, Any] = {"ts": BASE_TS + start + i * 1_000, "status": rng.choice("abc")}
        if rng.random() < 0.85:
            event["amount"] = rng.choice([None, rng.randint(0, 9)])
        events.append(event)
    if not large:
        return ndjson(events), events
    path = IngestPath("columns")
    sent = path.events(events)
    return path.body(sent), sent


class Writer:
    """Posts ``batches`` bodies one after the other; ``acked``: the events of those answered 200."""

    def __init__(self, client: TestClient[Any, Any], seed: int, batches: int) -> None:
        self.client, self.rng, self.batches = client, random.Random(seed), batches
        self.acked: list[dict[str, Any]] = []
        self.posted = 0

    async def run(self) -> None:
        for n in range(self.batches):
            data, events = body(self.rng, n * 20_000, large=n % 15 == 7)
            r = await self.client.post("/v1/sources/orders/events", data=data)
            assert r.status == 200, await r.text()
            self.acked += events
            self.posted += 1
            await asyncio.sleep(0)


def reference(events: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[int, float | None]]:
    out: dict[tuple[str, int], list[Any]] = defaultdict(lambda: [0, None])
    for e in events:
        amount = e.get("amount")
        if amount is not None and amount <= 2:
            continue
        row = out[(e["status"], (e["ts"] // MINUTE) * MINUTE)]
        row[0] += 1
        if amount is not None:
            row[1] = (row[1] or 0) + amount
    return {k: (v[0], v[1]) for k, v in out.items()}


async def windowed(client: TestClient[Any, Any], view: str) -> dict[tuple[str, int], Any]:
    r = await client.get(f"/v1/views/{view}", params={"limit": "10000"})
    answer = await r.json()
    assert r.status == 200, answer
    assert answer["freshness"]["backfilling"] is False
    return {(row["status"], to_ms(row["m"])): (row["n"], row["total"]) for row in answer["rows"]}


def to_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


async def backfilled(client: TestClient[Any, Any], view: str) -> None:
    async def done() -> bool:
        r = await client.get(f"/v1/views/{view}")
        fresh = (await r.json())["freshness"]
        return fresh["backfilling"] is False

    await until(done, 60)


@pytest.mark.asyncio
async def test_a_view_added_under_load_fills_from_the_kept_log(tmp_path: Path) -> None:
    async with running(TWIN, tmp_path, snapshot_every="100ms") as (client, engine):
        engine.backfill_chunk_bytes = 2_000  # many steps, live batches between them
        writer = Writer(client, 1, 160)
        writing = asyncio.create_task(writer.run())
        await until(lambda: _at_least(writer, 40), 60)

        async def covered() -> bool:  # a snapshot covers log records: trimmed, but for retain
            return int((engine.committer.last_snapshot or {}).get("position", 0)) > 20

        await until(covered, 30)
        r = await client.post("/v1/admin/config", data=ADDED)
        plan = await r.json()
        assert r.status == 200, plan
        (added,) = plan["applied"]["changes"]
        assert "fills from the events the server kept" in added["effect"]
        r = await client.get("/v1/views/added")
        first = await r.json()
        if first["freshness"]["backfilling"]:  # it may be done already: the log is small
            progress = first["freshness"]["backfill"]
            assert 0 <= progress["read"] <= progress["total"]
            listed = await (await client.get("/v1/views")).json()
            assert [v["backfill"] for v in listed["views"] if v["name"] == "added"]
        await backfilled(client, "added")
        await writing
        assert writer.posted == 160
        expected = reference(writer.acked)
        assert await windowed(client, "added") == expected
        assert await windowed(client, "twin") == expected
    # after a restart (the snapshot of the stop), the same answer
    async with running(ADDED, tmp_path) as (client, _):
        assert await windowed(client, "added") == expected


async def _at_least(writer: Writer, n: int) -> bool:
    return writer.posted >= n


@pytest.mark.asyncio
async def test_a_changed_view_switches_in_one_step_under_queries(tmp_path: Path) -> None:
    async with running(TWIN, tmp_path, snapshot_every="100ms") as (client, engine):
        engine.backfill_chunk_bytes = 2_000
        writer = Writer(client, 2, 120)
        writing = asyncio.create_task(writer.run())
        await until(lambda: _at_least(writer, 40), 60)
        live = await client.get("/v1/views/by_status/subscribe?interval=100ms")
        first = await next_event(live.content)
        assert [c["name"] for c in first["data"]["columns"]] == ["status", "n"]
        seen: list[list[str]] = []

        async def query() -> None:  # continuous queries: none may fail or mix definitions
            while not writing.done() or not seen or seen[-1] != ["status", "n", "total"]:
                r = await client.get("/v1/views/by_status")
                answer = await r.json()
                assert r.status == 200, answer
                columns = [c["name"] for c in answer["columns"]]
                rows = answer["rows"]
                assert all(set(row) == set(columns) for row in rows)
                seen.append(columns)
                await asyncio.sleep(0.005)

        querying = asyncio.create_task(query())
        r = await client.post("/v1/admin/config", data=CHANGED)
        plan = await r.json()
        assert r.status == 200, plan
        await backfilled(client, "by_status")
        await writing
        await querying
        old, new = ["status", "n"], ["status", "n", "total"]
        assert set(map(tuple, seen)) <= {tuple(old), tuple(new)}
        switched = seen.index(new)
        assert all(c == old for c in seen[:switched])
        assert all(c == new for c in seen[switched:])

        async def subscriber_switched() -> bool:
            event = await next_event(live.content)  # changes until then; then a full answer
            columns = [c["name"] for c in event["data"].get("columns", [])]
            return event["event"] == "answer" and columns == new

        await until(subscriber_switched, 30)
        r = await client.get("/v1/views/by_status", params={"limit": "100"})
        rows = {row["status"]: (row["n"], row["total"]) for row in (await r.json())["rows"]}
        kept = [e for e in writer.acked if (e.get("amount") or 0) > 2]
        expected: dict[str, Any] = {}
        for e in kept:
            n, total = expected.get(e["status"], (0, 0))
            expected[e["status"]] = (n + 1, total + e["amount"])
        assert rows == expected


@pytest.mark.asyncio
async def test_the_backfill_reads_only_what_live_views_have_applied(tmp_path: Path) -> None:
    """The seam: a record can be in the log and not applied yet (its group waits for a step
    while the one before it is applied). The reader must not take it from the log — the live
    apply hands it to the view once the view has joined — or it would be counted twice. Here such
    a record is put in the log and never applied: the backfilled view must not hold it."""
    async with running(TWIN, tmp_path) as (client, engine):
        rng = random.Random(3)
        sent: list[dict[str, Any]] = []
        for n in range(3):
            data, events = body(rng, n * 20_000, large=False)
            assert (await client.post("/v1/sources/orders/events", data=data)).status == 200
            sent += events
        pending = {"source": "orders", "events": body(rng, 100_000, large=False)[1], "rejected": []}
        await asyncio.to_thread(engine.http.wal.append, [orjson.dumps(pending)])
        assert engine.http.wal.next_seq - 1 > engine.http.position  # logged, not applied
        r = await client.post("/v1/admin/config", data=ADDED)
        assert r.status == 200, await r.text()
        await backfilled(client, "added")
        assert await windowed(client, "added") == reference(sent)


@pytest.mark.asyncio
async def test_retain_events_bounds_the_log_on_disk(tmp_path: Path) -> None:
    cap = 600_000  # two of the large (column-wise) bodies; 13 of them are written
    kept = f'retain_events = "1h"\nretain_events_bytes = {cap}'
    config = TWIN.replace('retain_events = "1h"', kept)
    async with running(config, tmp_path, snapshot_every="100ms") as (client, engine):
        writer = Writer(client, 4, 200)
        await writer.run()
        posted = engine.http.wal.next_seq - 1

        async def all_covered() -> bool:
            return int((engine.committer.last_snapshot or {}).get("position", 0)) == posted

        await until(all_covered, 30)
        # The log a restart from the older of the two kept snapshots needs stays whole; what
        # is older than that is the retained history, and it is what the cap bounds.
        covered = engine.committer.snapshots.oldest_kept_position()
        segments = engine.http.wal.segments()
        history = sum(
            path.stat().st_size
            for (_, path), (after, _) in itertools.pairwise(segments)
            if after - 1 <= covered
        )
        assert 0 < history <= cap
        assert segments[0][0] > 1  # it did trim: far more than the cap was written
        # a view added now fills from what is kept: the newest events, in whole batches
        r = await client.post("/v1/admin/config", data=ADDED.replace('retain_events = "1h"', kept))
        assert r.status == 200, await r.text()
        await backfilled(client, "added")
        got = await windowed(client, "added")
        assert 0 < sum(n for n, _ in got.values()) < len(writer.acked)


@pytest.mark.asyncio
async def test_the_log_a_backfill_has_still_to_read_is_never_trimmed(tmp_path: Path) -> None:
    async with running(TWIN, tmp_path) as (client, engine):
        writer = Writer(client, 5, 30)
        await writer.run()
        async with engine.committer.step() as step:  # a backfill that has read up to record 20
            step.reconfigure(parse(tomllib.loads(ADDED), "test.toml").views)
            engine.registry.backfills["added"].positions[""] = 20
        engine.http.retain = Retain(ms=1, max_bytes=1)  # everything is old and over the cap
        await asyncio.sleep(0.01)  # segments are aged by their modification time, in ms
        await asyncio.to_thread(engine.http.trim, 30)
        assert 1 < engine.http.wal.first() <= 21  # what it has read may go, and only that


@pytest.mark.asyncio
async def test_a_backfill_that_cannot_read_its_history_says_why(tmp_path: Path) -> None:
    async with running(TWIN, tmp_path) as (client, engine):
        writer = Writer(client, 6, 30)
        await writer.run()
        oldest = engine.http.wal.segments()[0][1]
        oldest.unlink()  # damage: the history is gone from under a backfill that starts at 0
        async with engine.committer.step() as step:
            step.reconfigure(parse(tomllib.loads(ADDED), "test.toml").views)
            engine.registry.backfills["added"].positions[""] = 0
        engine._start_backfills()  # what apply_config does after its step

        async def failed() -> bool:
            r = await client.get("/v1/views/added")
            return (await r.json())["freshness"]["backfill"]["failed"] is not None

        await until(failed, 10)
        r = await client.get("/v1/views")
        (listed,) = [v for v in (await r.json())["views"] if v["name"] == "added"]
        assert "record 1 is gone: the log begins at record" in listed["backfill"]["failed"]
        r = await client.get("/v1/views/added")
        assert (await r.json())["freshness"]["backfilling"] is True  # partial, and it says so
