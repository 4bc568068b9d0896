"""Restart = newest valid snapshot + WAL replay, reaching exactly the state that was served.

A copy of the data directory taken while the server is idle is what a crash at that moment
leaves behind: every acknowledged batch was fsynced to the WAL, snapshot files are atomic."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from ingest import http
from ingest.http import TABLE_RECORD
from ingest.wal import Wal
from tests.helpers import (
    BASE_TS,
    TABLE_MIN_LINES,
    IngestPath,
    ndjson,
    order_events,
    record_groups,
    running,
    until,
)
from views import snapshot
from views.query import all_rows
from views.view import View

CONFIG = """
[sources.orders]
time = "ts"

[views.per_minute]
sql = '''SELECT country, tumble(ts, '1 minute') AS minute, count(*) AS n, sum(amount) AS revenue,
         approx_count_distinct(user_id) AS users, p95(amount) AS p95, top_k(product, 3) AS top
         FROM orders GROUP BY country, minute'''
grace = "1h"

[views.totals]
sql = "SELECT status, count(*) AS n, count_distinct(user_id) AS users FROM orders GROUP BY status"
"""


def _state(engine: Any) -> bytes:
    return snapshot.encode(engine.registry.to_state())


async def _post(client: Any, events: list[dict[str, Any]], size: int = 500) -> None:
    for i in range(0, len(events), size):
        response = await client.post(
            "/v1/sources/orders/events?on_error=skip", data=ndjson(events[i : i + size])
        )
        assert response.status == 200, await response.text()


def _events(seed: int, n: int) -> list[dict[str, Any]]:
    """Orders with epoch ms times throughout (epoch seconds and RFC 3339 go row by row), so
    both paths get the same events and differ only in how they are batched."""
    return [e | {"ts": BASE_TS + i * 50} for i, e in enumerate(order_events(seed=seed, n=n))]


BATCH = {"rows": 50, "columns": TABLE_MIN_LINES}  # events per body on each path


async def _post_on(client: Any, path: IngestPath, events: list[dict[str, Any]]) -> int:
    """Post ``events`` in bodies of ``path``'s size; returns how many bodies."""
    size = BATCH[path.name]
    assert len(events) % size == 0
    for i in range(0, len(events), size):
        body = path.body(events[i : i + size])
        response = await client.post("/v1/sources/orders/events", data=body)
        assert response.status == 200, await response.text()
    return len(events) // size


def _record_kinds(data_dir: Path, after: int) -> set[bytes]:
    """How the WAL records after ``after`` were logged: ``{`` JSON events, ``T`` a table's body."""
    wal = Wal(data_dir / "wal", 1 << 20)
    try:
        return {payload[:1] for _, payload in wal.open(after=after)}
    finally:
        wal.close()


RECORD = {"rows": b"{", "columns": TABLE_RECORD}


@pytest.mark.asyncio
async def test_crash_image_restores_identical_state(
    tmp_path: Path, ingest_path: IngestPath
) -> None:
    """Each path's WAL records (JSON events, or a table's raw NDJSON body) replay to the state
    that was served, byte for byte."""
    events = _events(seed=1, n=3 * TABLE_MIN_LINES)
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    async with running(CONFIG, live) as (client, engine):
        await _post_on(client, ingest_path, events[:TABLE_MIN_LINES])
        snap = await (await client.post("/v1/admin/snapshot")).json()
        assert snap["position"] == engine.http.position
        after = await _post_on(client, ingest_path, events[TABLE_MIN_LINES:])
        expected = _state(engine)
        answer = await (await client.get("/v1/views/per_minute?bucket=all")).json()
        shutil.copytree(live, crashed)  # the crash image: a snapshot + WAL records after it
    assert _record_kinds(crashed, snap["position"]) == {RECORD[ingest_path.name]}
    async with running(CONFIG, crashed) as (client, engine):
        assert engine.recovery["replayed_batches"] == after
        assert _state(engine) == expected
        again = await (await client.get("/v1/views/per_minute?bucket=all")).json()
        assert again == answer
        totals = await (await client.get("/v1/views/totals?group_by=")).json()
        assert totals["rows"][0]["n"] == len(events)


@pytest.mark.asyncio
async def test_rejected_lines_survive_a_crash(tmp_path: Path, ingest_path: IngestPath) -> None:
    ingest_path.declines = True  # a body with a bad line is never read column-wise
    events = ingest_path.events(_events(seed=2, n=20))
    events[10]["amount"] = "oops"
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    async with running(CONFIG, live) as (client, engine):
        response = await client.post(
            "/v1/sources/orders/events?on_error=skip", data=ingest_path.body(events)
        )
        assert (await response.json())["rejected"] == 1
        expected = _state(engine)
        shutil.copytree(live, crashed)
    async with running(CONFIG, crashed) as (client, engine):
        assert engine.recovery["replayed_batches"] == 1
        assert _state(engine) == expected
        rejected = await (await client.get("/v1/sources/orders/rejected")).json()
        assert rejected["rejected"] == 1
        assert rejected["events"][0]["line"] == 11
        assert rejected["events"][0]["field"] == "amount"


@pytest.mark.asyncio
async def test_graceful_stop_snapshots_and_restart_replays_nothing(
    tmp_path: Path, ingest_path: IngestPath
) -> None:
    events = _events(seed=2, n=TABLE_MIN_LINES)
    async with running(CONFIG, tmp_path) as (client, engine):
        await _post_on(client, ingest_path, events)
        expected = _state(engine)
    async with running(CONFIG, tmp_path) as (client, engine):
        assert engine.recovery["replayed_batches"] == 0
        assert _state(engine) == expected
        wal_segments = list((tmp_path / "wal").glob("wal-*.log"))
        assert len(wal_segments) <= 2  # trimmed once the snapshots covered it


def _flip(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x40  # one flipped bit
    return bytes(damaged)


DAMAGES = {
    "flipped bit": (_flip, "checksum mismatch"),
    "truncated": (lambda d: d[: len(d) // 2], "truncated"),
    "zero-length": (lambda d: b"", "shorter than the"),
    "wrong version": (lambda d: d[:8] + struct.pack("<H", 99) + d[10:], "format version 99"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
async def test_damaged_newest_snapshot_falls_back_to_older_plus_wal(
    tmp_path: Path, damage: str, ingest_path: IngestPath
) -> None:
    size = BATCH[ingest_path.name]
    events = _events(seed=3, n=4 * size)
    async with running(CONFIG, tmp_path / "live") as (client, engine):
        for part in range(4):
            await _post_on(client, ingest_path, events[part * size : (part + 1) * size])
            await client.post("/v1/admin/snapshot")
        expected = _state(engine)
        shutil.copytree(tmp_path / "live", tmp_path / "image")
    snapshots = sorted((tmp_path / "image" / "snapshots").glob("*.tsnap"))
    assert len(snapshots) == 2
    spoil, message = DAMAGES[damage]
    snapshots[-1].write_bytes(spoil(snapshots[-1].read_bytes()))
    async with running(CONFIG, tmp_path / "image") as (_, engine):
        assert engine.recovery["snapshot"] == snapshots[0].name
        problems = engine.recovery["problems"]
        assert isinstance(problems, list)
        assert message in problems[0]
        assert snapshots[-1].name in problems[0]
        assert _state(engine) == expected  # older snapshot + WAL replay: the identical state


@pytest.mark.asyncio
async def test_a_corrupt_wal_record_refuses_to_start_saying_where(
    tmp_path: Path, ingest_path: IngestPath
) -> None:
    async with running(CONFIG, tmp_path / "live") as (client, _):
        for part in range(3):
            await _post_on(client, ingest_path, _events(seed=part, n=BATCH[ingest_path.name]))
        shutil.copytree(tmp_path / "live", tmp_path / "image")
    (segment,) = (tmp_path / "image" / "wal").glob("wal-*.log")
    segment.write_bytes(_flip(segment.read_bytes()))  # mid-log: not a torn tail
    async with running(CONFIG, tmp_path / "image", wait=False) as (client, engine):
        await asyncio.wait_for(engine.fatal.wait(), 30)
        reason = engine.fatal_reason or ""
        assert segment.name in reason
        assert "corrupt" in reason.lower() or "checksum" in reason.lower()
        assert f"'tallyd repair --config test.toml --data-dir {tmp_path / 'image'}'" in reason
        response = await client.get("/readyz")
        assert response.status == 503
        assert "tallyd repair" in (await response.json())["error"]["message"]


@pytest.mark.asyncio
async def test_unrecoverable_state_refuses_to_serve(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path / "live") as (client, _):
        for part in range(3):
            await _post(client, order_events(seed=part, n=200))
            await client.post("/v1/admin/snapshot")
        shutil.copytree(tmp_path / "live", tmp_path / "image")
    for damaged in (tmp_path / "image" / "snapshots").glob("*.tsnap"):
        damaged.write_bytes(b"")  # every snapshot gone bad, and the WAL was trimmed behind them
    async with running(CONFIG, tmp_path / "image", wait=False) as (client, engine):
        await asyncio.wait_for(engine.fatal.wait(), 30)
        response = await client.get("/readyz")
        body = await response.json()
        assert response.status == 503
        assert "records 1.." in body["error"]["message"]
        assert "missing" in body["error"]["message"]
        assert (await client.get("/v1/views/totals")).status == 503


@pytest.mark.asyncio
async def test_snapshots_of_the_format_before_the_columnar_engine_are_refused_by_name(
    tmp_path: Path,
) -> None:
    """Upgrading a data directory whose snapshots are format version 1 (tallyd before its
    columnar engine): the server does not start, and says why and what to do (README)."""
    async with running(CONFIG, tmp_path / "live") as (client, _):
        for part in range(3):
            await _post(client, order_events(seed=part, n=200))
            await client.post("/v1/admin/snapshot")
        shutil.copytree(tmp_path / "live", tmp_path / "image")
    for old in (tmp_path / "image" / "snapshots").glob("*.tsnap"):
        data = old.read_bytes()
        old.write_bytes(data[:8] + struct.pack("<H", 1) + data[10:])
    async with running(CONFIG, tmp_path / "image", wait=False) as (client, engine):
        await asyncio.wait_for(engine.fatal.wait(), 30)
        response = await client.get("/readyz")
        message = (await response.json())["error"]["message"]
        assert response.status == 503
        assert "snapshot format version 1; this tallyd reads version 2" in message
        assert "before its columnar engine" in message
        assert "README, Guarantees, on upgrading" in message


@pytest.mark.asyncio
async def test_changed_view_sql_is_refused_and_new_views_start_empty(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        await _post(client, order_events(seed=4, n=100))
    changed = CONFIG.replace(
        "FROM orders GROUP BY status", "FROM orders WHERE status = 'paid' GROUP BY status"
    )
    assert changed != CONFIG
    async with running(changed, tmp_path, wait=False) as (_, engine):
        await asyncio.wait_for(engine.fatal.wait(), 30)
        assert "totals changed their SQL" in (engine.fatal_reason or "")
    added = CONFIG + '\n[views.extra]\nsql = "SELECT count(*) AS n FROM orders"\n'
    async with running(added, tmp_path) as (client, engine):
        assert engine.recovery["notes"] == ["view extra is new: it counts events from now on"]
        body = await (await client.get("/v1/views/extra")).json()
        assert body["rows"] == []
        totals = await (await client.get("/v1/views/totals?group_by=")).json()
        assert totals["rows"][0]["n"] == 100


@pytest.mark.asyncio
async def test_a_server_that_manages_the_gc_freezes_its_heap_after_restore_and_snapshot(
    tmp_path: Path,
) -> None:
    """``tallyd serve`` keeps view state out of the cyclic GC's full collections."""
    from ingest.commit import settle_heap

    gc.unfreeze()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        gc.unfreeze()
        async with running(CONFIG, tmp_path) as (client, engine):
            engine.committer.manage_gc = True
            await _post(client, order_events(seed=4, n=500))
            assert gc.get_freeze_count() == 0
            await client.post("/v1/admin/snapshot")
            assert gc.get_freeze_count() > 0
            # View state is numpy arrays, which the cyclic collector never walks at all.
            part = engine.registry.views["totals"].parts[""]
            assert not any(gc.is_tracked(a) for a in (part.pairs.codes, part.pairs.code_of))
            assert not any(o is part.pairs for o in gc.get_objects())  # frozen
    finally:
        gc.unfreeze()


DEFAULT_REPLAY_LIMITS = (http.REPLAY_GROUP, http.REPLAY_GROUP_EVENTS)


def replay_groups(sizes: list[int], records: int, events: int) -> list[int]:
    """The groups a replay applies the bodies of ``sizes`` events in: a group is closed by the
    record that brings it to ``records`` records or ``events`` events (``HttpLog.restore``)."""
    out, group, held = [], 0, 0
    for size in sizes:
        group, held = group + 1, held + size
        if group >= records or held >= events:
            out.append(group)
            group, held = 0, 0
    return out + [group] * (group > 0)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "limits",
    [DEFAULT_REPLAY_LIMITS, (7, 10**9), (10**9, 20), (9, 20)],
    ids=["default", "records", "events", "both"],
)
async def test_a_log_of_small_bodies_replays_in_groups_to_what_was_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limits: tuple[int, int]
) -> None:
    """300 small bodies, out of time order, posted a few at a time (so the server applies them
    in groups), then a crash image: the restart replays the log in groups too, and every view
    answers as it did — every (bucket, key), every counter, the late events. A group is bounded
    in records and in events (the default bounds above this log; smaller ones here, alone and
    together: a replay holds no more than a group's records in memory)."""
    groups = record_groups(monkeypatch)
    rng = random.Random(5)
    events = order_events(seed=5, n=900, disorder_ms=90_000)
    bodies = [events[i : i + rng.choice([1, 2, 5])] for i in range(0, len(events), 3)]
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    async with running(CONFIG, live) as (client, engine):
        for i in range(0, len(bodies), 30):
            await asyncio.gather(*(_post(client, body) for body in bodies[i : i + 30]))
        served = {name: all_rows(view) for name, view in engine.registry.views.items()}
        stats = {name: view.stats() for name, view in engine.registry.views.items()}
        late = {name: view.late_events() for name, view in engine.registry.views.items()}
        shutil.copytree(live, crashed)
    groups.clear()
    monkeypatch.setattr(http, "REPLAY_GROUP", limits[0])
    monkeypatch.setattr(http, "REPLAY_GROUP_EVENTS", limits[1])
    async with running(CONFIG, crashed) as (client, engine):
        assert engine.recovery["replayed_batches"] == len(bodies)
        assert groups == replay_groups([len(b) for b in bodies], *limits)
        if limits == DEFAULT_REPLAY_LIMITS:  # fewer records and events than a group holds
            assert groups == [len(bodies)]
        for name, view in engine.registry.views.items():
            assert all_rows(view) == served[name], name
            assert view.stats() == stats[name], name
            assert view.late_events() == late[name], name
    assert stats["per_minute"]["pairs"] > 10


@pytest.mark.asyncio
async def test_a_body_logged_while_an_apply_fails_is_answered_not_left_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bodies logged while the group before them is being applied, and that apply then raises,
    wait in the applier's queue: each is answered with the same 500 (its events are logged,
    applied by a restart), not left waiting, and a restart applies every body once."""
    from ingest.commit import Step

    events = _events(seed=4, n=6)
    async with running(CONFIG, tmp_path) as (client, engine):
        wal = engine.http.wal
        logged_before = wal.next_seq

        async def fails_once_the_next_body_is_logged(step: Step, *args: Any) -> None:
            async def second_logged() -> bool:
                return bool(wal.next_seq >= logged_before + 3)

            await until(second_logged, timeout=20)  # two more bodies, logged meanwhile
            raise RuntimeError("a bug in an apply")

        with monkeypatch.context() as patched:
            patched.setattr(Step, "apply_group_yielding", fails_once_the_next_body_is_logged)
            first = asyncio.create_task(
                client.post("/v1/sources/orders/events", data=ndjson(events[:2]))
            )

            async def first_logged() -> bool:
                return bool(wal.next_seq >= logged_before + 1)

            await until(first_logged, timeout=20)
            second = asyncio.create_task(
                client.post("/v1/sources/orders/events", data=ndjson(events[2:4]))
            )

            async def second_in() -> bool:
                return bool(wal.next_seq >= logged_before + 2)

            await until(second_in, timeout=20)  # a group of its own, queued
            third = client.post("/v1/sources/orders/events", data=ndjson(events[4:]))
            # Bounded: a body left waiting fails here, named, instead of at the suite's timeout.
            answers = [await asyncio.wait_for(t, 30) for t in (third, second, first)]
        for answer in answers:
            assert answer.status == 500
            assert "in the write-ahead log" in (await answer.json())["error"]["message"]
    async with running(CONFIG, tmp_path) as (client, engine):
        assert engine.recovery["replayed_batches"] == 3
        totals = await (await client.get("/v1/views/totals?group_by=")).json()
        assert totals["rows"][0]["n"] == 6


@pytest.mark.asyncio
async def test_an_apply_that_fails_refuses_writes_loudly_and_a_restart_applies_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug raising while logged events are applied must not leave requests waiting forever:
    they get a 500 saying their events are logged, later writes are refused, /readyz says so,
    no snapshot is written (the views may hold part of the failed group); the server's log has
    the error's stack under ``event=apply_failed`` (the README sends operators there); a restart
    replays the log, those events included, once."""
    caplog.set_level(logging.ERROR, logger="tallyd.http")

    def broken(view: View, *args: Any) -> None:
        raise RuntimeError("a bug in an apply")

    events = _events(seed=3, n=4)
    with monkeypatch.context() as patched:
        patched.setattr(View, "apply", broken)
        async with running(CONFIG, tmp_path) as (client, _):
            first = await client.post("/v1/sources/orders/events", data=ndjson(events[:2]))
            assert first.status == 500
            assert "in the write-ahead log" in (await first.json())["error"]["message"]
            second = await client.post("/v1/sources/orders/events", data=ndjson(events[2:]))
            assert second.status == 500
            assert (await client.get("/readyz")).status == 503
            snap = await client.post("/v1/admin/snapshot")  # would save a half-applied group
            assert snap.status == 507
            assert "failed apply" in (await snap.json())["error"]["message"]
    logged = [r for r in caplog.records if r.name == "tallyd.http"]
    assert [r.getMessage() for r in logged] == ["event=apply_failed batches=1"]
    assert logged[0].exc_info is not None
    assert logged[0].levelno == logging.ERROR
    assert str(logged[0].exc_info[1]) == "a bug in an apply"
    async with running(CONFIG, tmp_path) as (client, engine):
        assert engine.recovery["replayed_batches"] == 1  # the first body: logged, then failed
        totals = await (await client.get("/v1/views/totals?group_by=")).json()
        assert totals["rows"][0]["n"] == 2
