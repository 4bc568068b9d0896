"""``tallyd repair`` (ingest/repair.py) on data directories the server refuses to start on: it
keeps the newest usable snapshot and the log records that continue it, moves the rest aside
(never deletes), and the server then restores exactly the events of what was kept.

Each directory is a crash image of a real in-process server (its files copied while it runs),
then damaged the way it happens: two writers on one log, a lost segment, a flipped bit."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest import repair
from ingest.datadir import LOCK_FILE
from ingest.wal import Damage, Frame, Wal, frames
from tests.helpers import BASE_TS, running

CONFIG = """
[sources.orders]
time = "ts"

[views.per_batch]
sql = "SELECT batch, count(*) AS n, sum(id) AS ids FROM orders GROUP BY batch"
"""
Counts = dict[int, tuple[int, int]]  # batch -> (events, sum of their ids)


def batch(number: int, size: int = 20) -> list[dict[str, Any]]:
    first = number * 1000
    return [{"id": i, "batch": number, "ts": BASE_TS + i} for i in range(first, first + size)]


def reference(*batches: list[dict[str, Any]]) -> Counts:
    return {b[0]["batch"]: (len(b), sum(e["id"] for e in b)) for b in batches}


def record(events: list[dict[str, Any]]) -> bytes:
    """A WAL record as the HTTP log writes one (times already epoch ms, as decoded)."""
    return orjson.dumps({"source": "orders", "events": events, "rejected": []})


async def post(client: Any, events: list[dict[str, Any]]) -> str:
    body = b"\n".join(orjson.dumps(e) for e in events)
    response = await client.post("/v1/sources/orders/events", data=body)
    assert response.status == 200, await response.text()
    return str((await response.json())["position"])


Events = list[dict[str, Any]]


async def crash_image(
    tmp_path: Path, batches: list[Events], snapshots: tuple[int, ...] = (), **settings: Any
) -> Path:
    """What a crash leaves after ``batches`` were posted, a snapshot taken after each numbered in
    ``snapshots``: a copy of the running server's directory."""
    live, image = tmp_path / "live", tmp_path / "image"
    async with running(CONFIG, live, **settings) as (client, _):
        for n, events in enumerate(batches, 1):
            await post(client, events)
            if n in snapshots:
                await client.post("/v1/admin/snapshot")
        shutil.copytree(live, image)
    return image


async def counted(data_dir: Path) -> Counts:
    async with running(CONFIG, data_dir) as (client, _):
        rows = (await (await client.get("/v1/views/per_batch?limit=1000")).json())["rows"]
    return {r["batch"]: (r["n"], r["ids"]) for r in rows}


async def refusal(data_dir: Path) -> str:
    async with running(CONFIG, data_dir, wait=False) as (_, engine):
        await asyncio.wait_for(engine.fatal.wait(), 30)
        return engine.fatal_reason or ""


def files(data_dir: Path) -> dict[str, bytes]:
    """Every file's bytes, but the lock's (which names whoever locked the directory last)."""
    found = {str(p.relative_to(data_dir)): p for p in data_dir.rglob("*") if p.is_file()}
    return {name: path.read_bytes() for name, path in found.items() if name != LOCK_FILE}


def repaired(data_dir: Path) -> tuple[repair.Plan, Path]:
    """Plan (checking it changes nothing), carry out; the plan and where the dropped went."""
    before = files(data_dir)
    plan = repair.plan(data_dir)
    assert files(data_dir) == before
    quarantine = repair.quarantine_for(data_dir, time.time())
    repair.carry_out(plan, quarantine)
    return plan, quarantine


def record_frames(path: Path) -> list[Frame]:
    found = list(frames(path.read_bytes()))
    assert not any(isinstance(f, Damage) for f in found)
    return [f for f in found if isinstance(f, Frame)]


def flip_record(path: Path, seq: int) -> None:
    """One flipped bit in the payload of record ``seq``: its checksum fails."""
    data = bytearray(path.read_bytes())
    (at,) = [f.offset for f in record_frames(path) if f.seq == seq]
    data[at + 20] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.asyncio
async def test_two_writers_on_one_log_are_refused_then_repaired(tmp_path: Path) -> None:
    """Issue 14.2 as it happened: a second server on the same directory restored the same log
    and appended its own record 7 next to the first one's; neither could restart."""
    live, image = tmp_path / "live", tmp_path / "image"
    first = [batch(n) for n in range(1, 7)]
    mine, theirs, later = batch(7), batch(8), batch(9)
    async with running(CONFIG, live) as (client, _):
        for n, events in enumerate(first, 1):
            await post(client, events)
            if n == 3:
                await client.post("/v1/admin/snapshot")
        second = Wal(live / "wal")  # the second server's log: it restores what is there
        assert len(list(second.open(after=3))) == 3
        assert await post(client, mine) == "wal:7"
        assert second.append([record(theirs)]) == [7]  # both acknowledged wal:7
        assert await post(client, later) == "wal:8"
        second.close()
        shutil.copytree(live, image)
    reason = await refusal(image)
    assert "record 7, expected 8" in reason
    assert f"tallyd repair --config test.toml --data-dir {image}" in reason
    plan, quarantine = repaired(image)
    assert plan.snapshot is not None
    assert plan.position == 3
    assert plan.kept == [4, 5, 6, 7]
    assert plan.kept_events == 80
    (tail,) = plan.dropped
    assert tail.why == "record 7, expected 8"
    assert tail.records == [7, 8]
    assert tail.events == len(theirs) + len(later)
    (aside,) = (quarantine / "wal").iterdir()
    assert aside.name == f"{tail.path.name}.from-byte-{tail.start}"
    assert [f.seq for f in record_frames(aside)] == [7, 8]
    assert await counted(image) == reference(*first, mine)


@pytest.mark.asyncio
async def test_a_lost_segment_keeps_the_records_before_it(tmp_path: Path) -> None:
    batches = [batch(n) for n in range(1, 7)]
    image = await crash_image(tmp_path, batches, wal_segment_bytes=100)  # a segment a record
    (image / "wal" / "wal-00000000000000000004.log").unlink()
    assert "starts at record 5, expected 4" in await refusal(image)
    plan, quarantine = repaired(image)
    assert plan.snapshot is None
    assert plan.kept == [1, 2, 3]
    assert [(p.path.name, p.records) for p in plan.dropped] == [
        ("wal-00000000000000000005.log", [5]),
        ("wal-00000000000000000006.log", [6]),
    ]
    assert plan.dropped[0].why == "starts at record 5, expected 4"
    assert plan.dropped[1].why == repair.AFTER
    assert sorted(p.name for p in (quarantine / "wal").iterdir()) == [
        "wal-00000000000000000005.log",
        "wal-00000000000000000006.log",
    ]
    assert await counted(image) == reference(*batches[:3])


@pytest.mark.asyncio
async def test_a_flipped_bit_mid_log_keeps_the_records_before_it(tmp_path: Path) -> None:
    batches = [batch(n) for n in range(1, 5)]
    image = await crash_image(tmp_path, batches)
    (segment,) = (image / "wal").glob("wal-*.log")
    flip_record(segment, 2)
    assert "checksum mismatch" in await refusal(image)
    plan, _ = repaired(image)
    assert plan.kept == [1]
    (tail,) = plan.dropped
    assert tail.why == "checksum mismatch: the log is corrupt from here"
    assert tail.records == []  # nothing after a damaged frame can be read with certainty
    assert await counted(image) == reference(batches[0])


@pytest.mark.asyncio
async def test_damage_the_snapshot_covers_drops_only_the_older_segments(tmp_path: Path) -> None:
    batches = [batch(n) for n in range(1, 4)]
    image = await crash_image(tmp_path, batches, snapshots=(1, 2))  # the log kept from record 2
    older = image / "wal" / "wal-00000000000000000002.log"
    flip_record(older, 2)
    assert "checksum mismatch" in await refusal(image)  # every segment is checked at start
    plan, _ = repaired(image)
    assert plan.position == 2
    assert plan.kept == [3]
    (dropped,) = plan.dropped
    assert dropped.path == older
    assert dropped.start == 0
    assert await counted(image) == reference(*batches)  # nothing lost: the snapshot had it


@pytest.mark.asyncio
async def test_a_log_that_breaks_before_the_snapshot_ends_is_set_aside(tmp_path: Path) -> None:
    """A crash between a snapshot's rename and the log's rotation leaves one segment going past
    it; damage before the snapshot's position leaves nothing after it to continue from."""
    live, image = tmp_path / "live", tmp_path / "image"
    batches = [batch(n) for n in range(1, 5)]
    async with running(CONFIG, live) as (client, _):
        for events in batches:
            await post(client, events)
        shutil.copytree(live, image)
        await client.post("/v1/admin/snapshot")
        shutil.copytree(live / "snapshots", image / "snapshots")
    (segment,) = (image / "wal").glob("wal-*.log")
    flip_record(segment, 2)
    assert "checksum mismatch" in await refusal(image)
    plan, _ = repaired(image)
    assert plan.position == 4
    assert plan.kept == []
    (dropped,) = plan.dropped
    assert (dropped.path, dropped.start) == (segment, 0)
    assert dropped.why == "checksum mismatch: the log is corrupt from here"
    assert await counted(image) == reference(*batches)
    assert [seq for seq, _ in Wal(image / "wal").open(after=4)] == []


@pytest.mark.asyncio
async def test_no_usable_snapshot_and_a_trimmed_log_start_empty(tmp_path: Path) -> None:
    image = await crash_image(tmp_path, [batch(n) for n in range(1, 4)], snapshots=(1, 2, 3))
    for snapshot in (image / "snapshots").glob("*.tsnap"):
        snapshot.write_bytes(b"")
    assert "records 1..2 are missing" in await refusal(image)
    plan, quarantine = repaired(image)
    assert plan.snapshot is None
    assert plan.kept == []
    assert len(plan.dropped) == 4  # two snapshots, two segments
    report = "\n".join(plan.report(quarantine, done=True))
    assert "none usable: the state starts empty" in report
    assert "records 1..2, between the snapshot and it, are missing" in report
    assert "does not read back" in report
    assert await counted(image) == {}
    assert len(list((quarantine / "snapshots").iterdir())) == 2


@pytest.mark.asyncio
async def test_a_consistent_directory_has_nothing_to_drop(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        await post(client, batch(1))
        await client.post("/v1/admin/snapshot")
        await post(client, batch(2))
        plan = repair.plan(tmp_path)
    assert (plan.position, plan.kept, plan.kept_events, plan.dropped) == (1, [2], 20, [])
    report = plan.report(tmp_path / "quarantine-x", done=False)
    assert report[-1] == "dropped: nothing: the snapshot and the log are consistent"


def test_a_torn_tail_is_moved_aside_too(tmp_path: Path) -> None:
    wal = Wal(tmp_path / "wal")
    assert list(wal.open(after=0)) == []
    wal.append([record(batch(1)), record(batch(2))])
    wal.close()
    (segment,) = (tmp_path / "wal").glob("wal-*.log")
    segment.write_bytes(segment.read_bytes()[:-5])  # a crash in the middle of appending
    plan, quarantine = repaired(tmp_path)
    assert plan.kept == [1]
    (tail,) = plan.dropped
    assert tail.why.startswith("a torn tail")
    assert [seq for seq, _ in Wal(tmp_path / "wal").open(after=0)] == [1]
    assert len(list((quarantine / "wal").iterdir())) == 1
