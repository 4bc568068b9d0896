"""The commit path without HTTP: ``HttpLog`` (ingest/http.py) and the ``Committer``
(ingest/commit.py) driven directly, as ``api.engine`` wires them.

A batch submitted is on disk and applied when its future resolves; group commit shares fsyncs;
idempotency receipts are bounded, expire and ride in snapshots; the backlog refuses exactly
past its limit; a failed disk refuses every later write with the status that says why; stopping
answers whoever still waits; a restart replays exactly what the snapshot does not cover, JSON
and column-wise records alike. Expected values come from the events the test sent.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ingest import faults
from ingest.commit import Committer, Step
from ingest.decode import Decoder
from ingest.http import Body, HttpLog, HttpSource, Receipt, Rejected, Unavailable, outcomes
from ingest.idempotency import KEY_RULE
from tests.helpers import TABLE_MIN_LINES, ndjson, until
from tests.reference import iso
from views.config import parse
from views.query import Query, run
from views.registry import Batch, Registry

T0 = 1_790_000_000_000
CONFIG = {
    "sources": {"s": {"time": "ts"}},
    "views": {
        "n": {"sql": "SELECT k, count(*) AS n, sum(x) AS total FROM s GROUP BY k"},
        "late": {
            "sql": "SELECT tumble(ts, '1 minute') AS m, count(*) AS n FROM s "
            "WHERE k <> 'skip' GROUP BY m",
            "grace": "30s",
        },
    },
}


def fresh(data_dir: Path, max_backlog: int = 1 << 20) -> tuple[Committer, HttpLog]:
    config = parse(CONFIG)
    committer = Committer(Registry(config.sources, config.views), data_dir, frozenset())
    return committer, HttpLog(committer, data_dir, 1 << 20, max_backlog)


@pytest_asyncio.fixture
async def started(tmp_path: Path) -> AsyncIterator[tuple[Committer, HttpLog]]:
    committer, log = fresh(tmp_path)
    assert committer.recover(log).replayed == 0
    log.start()
    yield committer, log
    await log.stop()


def events(n: int, k: str = "a", start: int = 0) -> list[dict[str, Any]]:
    return [{"ts": T0 + start + i, "k": k, "x": i} for i in range(n)]


def rows(registry: Registry, view: str = "n") -> list[tuple[Any, ...]]:
    return sorted(run(registry.views[view], Query(limit=1000)).rows, key=repr)


@pytest.mark.asyncio
async def test_a_batch_is_logged_then_applied_in_order(
    started: tuple[Committer, HttpLog],
) -> None:
    committer, log = started
    batches = [Batch("s", events(3, k), 0) for k in "abcab"]
    answers = await asyncio.gather(*(log.submit(b, None, None) for b in batches))
    assert [seq for seq, _ in answers] == [1, 2, 3, 4, 5]
    assert [b.position for b in batches] == [1, 2, 3, 4, 5]
    assert log.position == 5
    assert log.wal.commits < 5  # queued together, one fsync for the group
    assert rows(committer.registry) == [("a", 6, 6), ("b", 6, 6), ("c", 3, 3)]
    assert committer.registry.sources["s"].positions == {"": 5}
    _, applied = answers[0]
    assert applied.views["n"].applied == 3


@pytest.mark.asyncio
async def test_a_log_not_started_or_stopped_takes_no_writes(tmp_path: Path) -> None:
    committer, log = fresh(tmp_path)
    committer.recover(log)
    with pytest.raises(Unavailable, match=r"^not ready$") as caught:
        await log.submit(Batch("s", events(1), 0), None, None)
    assert caught.value.status == 503
    log.start()
    await log.stop()
    with pytest.raises(RuntimeError, match="WAL is not open"):  # stopping closed it
        log.wal.append([b"x"])
    with pytest.raises(Unavailable, match=r"^not ready$"):  # refused, not queued for no one
        await asyncio.wait_for(log.submit(Batch("s", events(1), 0), None, None), 5)


@pytest.mark.asyncio
async def test_stopping_answers_whoever_still_waits(tmp_path: Path) -> None:
    committer, log = fresh(tmp_path)
    committer.recover(log)
    log.start()
    async with committer.step():  # the committer cannot take the queue meanwhile
        submitted = asyncio.create_task(log.submit(Batch("s", events(1), 0), None, None))
        for _ in range(100):  # a few turns of the loop, no clock
            if log.pending:
                break
            await asyncio.sleep(0)
        assert len(log.pending) == 1
        await log.stop()  # cancels the committer task, which waits for this step
    with pytest.raises(
        Unavailable, match=r"^the server is shutting down; nothing of this batch was logged$"
    ):
        await submitted
    assert log.pending == []


@pytest.mark.asyncio
async def test_a_failed_write_answers_the_rest_of_a_group_whose_first_requester_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A requester gone (its request cancelled: the client hung up) while its group is being
    written, and the write fails: every other waiter of the group is still told why."""
    committer, log = fresh(tmp_path)
    committer.recover(log)
    log.start()
    entered, release = threading.Event(), threading.Event()

    def failing(payloads: list[bytes]) -> list[int]:
        entered.set()
        release.wait(10)
        raise OSError(errno.EIO, "the disk said no")

    monkeypatch.setattr(log.wal, "append", failing)
    gone = asyncio.create_task(log.submit(Batch("s", events(1, "a"), 0), None, None))
    waiting = asyncio.create_task(log.submit(Batch("s", events(1, "b"), 0), None, None))

    async def writing() -> bool:
        return entered.is_set()

    try:
        await until(writing, 10)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
    finally:
        release.set()
    with pytest.raises(Unavailable, match="the write-ahead log failed"):
        await asyncio.wait_for(waiting, 5)
    await log.stop()


@pytest.mark.asyncio
async def test_stopping_mid_write_answers_that_the_batch_may_be_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped while a group's write is in its worker thread: the write goes on (the log closes
    once it is done), and the waiter is told its batch may be logged, and how to retry."""
    committer, log = fresh(tmp_path)
    committer.recover(log)
    log.start()
    entered, release = threading.Event(), threading.Event()
    append = log.wal.append

    def slow(payloads: list[bytes]) -> list[int]:
        entered.set()
        release.wait(10)
        return append(payloads)

    monkeypatch.setattr(log.wal, "append", slow)
    waiter = asyncio.create_task(log.submit(Batch("s", events(1), 0), None, None))

    async def writing() -> bool:
        return entered.is_set()

    try:
        await until(writing, 10)
        await log.stop()
    finally:
        release.set()
    with pytest.raises(Unavailable, match=r"^the server is shutting down while this batch is"):
        await asyncio.wait_for(waiter, 5)


@pytest.mark.asyncio
async def test_a_failed_write_still_applies_what_was_logged_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group logged and waiting for its step when the next group's write fails: the failure
    refuses that group and every later one, and the logged group is still applied and
    acknowledged — it is on disk, and a restart would replay it anyway."""
    committer, log = fresh(tmp_path)
    committer.recover(log)
    log.start()

    async def logged() -> bool:
        return log.wal.commits == 1

    def broken(payloads: list[bytes]) -> list[int]:
        raise OSError(errno.EIO, "the disk said no")

    async with committer.step():  # the applier waits for this step
        first = asyncio.create_task(log.submit(Batch("s", events(1, "a"), 0), None, None))
        await until(logged, 10)
        monkeypatch.setattr(log.wal, "append", broken)
        with pytest.raises(Unavailable, match="the write-ahead log failed"):
            await log.submit(Batch("s", events(1, "b"), 0), None, None)
    seq, _ = await asyncio.wait_for(first, 5)
    assert seq == 1
    assert rows(committer.registry) == [("a", 1, 0)]
    await log.stop()


@pytest.mark.asyncio
async def test_stopping_answers_what_was_logged_and_not_applied(tmp_path: Path) -> None:
    """Stopped while groups wait to be applied (one taken by the applier, waiting for its step;
    one queued behind it): each waiter is told its batch is logged — a restart applies it."""
    committer, log = fresh(tmp_path)
    committer.recover(log)
    log.start()

    def logged(n: int) -> Any:
        async def check() -> bool:
            return log.wal.commits == n

        return check

    async with committer.step():  # the applier waits for this step
        first = asyncio.create_task(log.submit(Batch("s", events(1, "a"), 0), None, None))
        await until(logged(1), 10)
        second = asyncio.create_task(log.submit(Batch("s", events(1, "b"), 0), None, None))
        await until(logged(2), 10)
        await log.stop()
    for waiter in (first, second):
        with pytest.raises(
            Unavailable, match=r"^the server is shutting down; this batch is logged"
        ):
            await asyncio.wait_for(waiter, 5)
    assert rows(committer.registry) == []  # logged, not applied: the restart applies them
    again, relog = fresh(tmp_path)
    assert again.recover(relog).replayed == 2
    assert rows(again.registry) == [("a", 1, 0), ("b", 1, 0)]
    relog.wal.close()


@pytest.mark.parametrize(("code", "status"), [(errno.ENOSPC, 507), (errno.EIO, 503)])
@pytest.mark.asyncio
async def test_a_failed_write_refuses_this_and_every_later_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, status: int
) -> None:
    committer, log = fresh(tmp_path)
    committer.recover(log)
    log.start()

    def broken(payloads: list[bytes]) -> list[int]:
        raise OSError(code, "the disk said no")

    monkeypatch.setattr(log.wal, "append", broken)
    with pytest.raises(Unavailable) as first:
        await log.submit(Batch("s", events(2), 0), None, None)
    full = ": the disk is full" if code == errno.ENOSPC else ""
    message = (
        f"the write-ahead log failed (the disk said no{full}); nothing of this batch was "
        "acknowledged; restart the server once the disk is fixed"
    )
    assert (str(first.value), first.value.status) == (message, status)
    with pytest.raises(Unavailable) as later:
        await log.submit(Batch("s", events(1), 0), None, None)
    assert (str(later.value), later.value.status) == (message, status)
    assert rows(committer.registry) == []
    await log.stop()


def test_the_backlog_refuses_exactly_past_its_limit(tmp_path: Path) -> None:
    _, log = fresh(tmp_path, max_backlog=100)
    log.admit(10_000)  # nothing in progress: any single body is admitted
    log.backlog = 60
    log.admit(40)  # 60 + 40 = the limit: admitted
    assert log.shed == 0
    with pytest.raises(Rejected) as caught:
        log.admit(41)
    assert caught.value.status == 503
    assert str(caught.value) == caught.value.message
    assert caught.value.headers == {"Retry-After": "1"}
    assert caught.value.message == (
        "overloaded: 60 bytes of events are being written (max_ingest_backlog_bytes is 100); "
        "retry after the Retry-After seconds"
    )
    assert log.shed == 1


@pytest.mark.asyncio
async def test_receipts_are_kept_newest_last_bounded_and_expire(
    started: tuple[Committer, HttpLog],
) -> None:
    _, log = started
    log.max_receipts = 2
    for key, at in (("k1", 100), ("k2", 200), ("k1", 300), ("k3", 400)):
        batch = Batch("s", events(2), 0, [{"line": 1}])
        await log.submit(batch, None, Receipt(key, f"digest-{key}-{at}", at))
    assert list(log.receipts) == ["k1", "k3"]  # k1 was used again after k2: k2 goes first
    assert log.receipts["k3"] == {
        "digest": "digest-k3-400",
        "at": 400,
        "source": "s",
        "accepted": 2,
        "rejected": 1,
        "position": 4,
        "views": {
            "n": {"applied": 2, "late": 0, "filtered": 0},
            "late": {"applied": 2, "late": 0, "filtered": 0},
        },
    }
    assert log.forget_receipts_before(300) == 0  # k1 arrived at 300: not before it
    assert log.forget_receipts_before(301) == 1
    assert list(log.receipts) == ["k3"]
    log.receipt_ttl_ms = 100
    position, extra = log.snapshot_extra(now_ms=500)  # k3 arrived at 400, expires at 500
    assert (position, extra) == (4, {"position": 4, "receipts": log.receipts})
    assert list(log.receipts) == ["k3"]
    log.snapshot_extra(now_ms=501)
    assert log.receipts == {}


def test_outcomes_say_per_view_what_was_applied_late_filtered_and_why() -> None:
    config = parse(CONFIG)
    registry = Registry(config.sources, config.views)
    registry.apply(Batch("s", events(1, start=120_000), 1))
    batch = [*events(3), {"ts": T0 + 200_000, "k": "skip", "x": 1}]
    applied = registry.apply(Batch("s", batch, 2))
    assert outcomes(registry, len(batch), applied) == {
        "n": {"applied": 4, "late": 0, "filtered": 0},
        "late": {
            "applied": 0,
            "late": 3,
            "filtered": 1,
            "late_before": iso(T0 + 90_000),
            "watermark": iso(T0 + 120_000),
            "grace": "30s",
        },
    }


@pytest.mark.asyncio
async def test_a_restart_replays_what_the_snapshot_does_not_cover(tmp_path: Path) -> None:
    committer, log = fresh(tmp_path)
    committer.recover(log)
    log.start()
    now = int(time.time() * 1000)  # receipts older than a day are not snapshotted
    await log.submit(Batch("s", events(3, "a"), 0), None, Receipt("key", "d", now))
    info = await committer.snapshot(log)
    assert (info["position"], info["file"]) == (1, f"snapshot-{1:020d}.tsnap")
    assert committer.last_snapshot == info
    assert committer.last_snapshot_at is not None
    body = ndjson(events(TABLE_MIN_LINES, "b"))
    decoder = Decoder(committer.registry.sources["s"].spec, 1 << 20)
    table = decoder.columns(body)
    assert table is not None
    await log.submit(Batch("s", [], 0, columns=table), body, Receipt("big", "d2", now))
    await log.submit(Batch("s", events(2, "c"), 0, [{"line": 9}]), None, None)
    expected = rows(committer.registry)
    await log.stop()

    again, relog = fresh(tmp_path)
    recovery = again.recover(relog)
    assert (recovery.snapshot, recovery.replayed, recovery.torn_bytes) == (info["file"], 2, 0)
    assert recovery.problems == []
    assert rows(again.registry) == expected
    assert relog.position == 3
    assert list(relog.receipts) == ["key", "big"]
    assert again.registry.sources["s"].rejected == 1
    relog.wal.close()


@pytest.mark.asyncio
async def test_a_snapshot_trims_the_log_it_covers(tmp_path: Path) -> None:
    committer, log = fresh(tmp_path)
    committer.recover(log)
    log.start()
    trimmed = []
    for i in range(4):
        await log.submit(Batch("s", events(1, start=i), 0), None, None)
        trimmed.append((await committer.snapshot(log))["wal_segments_trimmed"])
    segments = log.wal.segments()
    assert sum(trimmed) + len(segments) == 5  # the first segment and one per snapshot
    # What is left holds records the oldest kept snapshot does not cover.
    kept = committer.snapshots.oldest_kept_position()
    assert kept > 0
    for _, (next_first, _) in itertools.pairwise(segments):
        assert next_first - 1 > kept
    await log.stop()


def test_a_step_is_the_registry_s_writes(tmp_path: Path) -> None:
    committer, _ = fresh(tmp_path)
    step = Step(committer.registry)
    step.apply(Batch("s", events(2, "a"), 1, part="p"))
    state = step.part_state("s", "p")
    step.drop_part("s", "p")
    assert rows(committer.registry) == []
    assert step.install_part(step.build_part("s", "p", state)) == []
    assert rows(committer.registry) == [("a", 2, 1)]
    assert list(committer.registry.views["n"].parts) == ["p"]


@pytest.mark.asyncio
async def test_a_receipt_keeps_what_the_batch_did_late_events_and_why(
    started: tuple[Committer, HttpLog],
) -> None:
    """A retry is answered from the receipt: it must say what the first answer said."""
    _, log = started
    await log.submit(Batch("s", events(1, start=120_000), 0), None, None)
    now = int(time.time() * 1000)
    await log.submit(Batch("s", events(2), 0), None, Receipt("late", "d", now))
    assert log.receipts["late"]["views"]["late"] == {
        "applied": 0,
        "late": 2,
        "filtered": 0,
        "late_before": iso(T0 + 90_000),
        "watermark": iso(T0 + 120_000),
        "grace": "30s",
    }


def source_of(committer: Committer, log: HttpLog) -> HttpSource:
    spec = committer.registry.sources["s"].spec
    return HttpSource(spec, committer.registry, log, Decoder(spec, 1 << 20))


def body_of(data: bytes) -> Body:
    async def read() -> bytes:
        return data

    return Body(len(data), read)


@pytest.mark.parametrize(("code", "status"), [(errno.ENOSPC, 507), (errno.EIO, 503)])
@pytest.mark.asyncio
async def test_a_failed_write_answers_when_to_retry_and_is_logged(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    code: int,
    status: int,
) -> None:
    """The request's refusal: the status and message of the failure, Retry-After 5 (a restart
    is needed, not an instant retry); the server's log says what the disk said."""
    committer, log = fresh(tmp_path)
    committer.recover(log)
    log.start()
    failure = OSError(code, "the disk said no")

    def broken(payloads: list[bytes]) -> list[int]:
        raise failure

    monkeypatch.setattr(log.wal, "append", broken)
    with caplog.at_level(logging.ERROR, logger="tallyd.http"), pytest.raises(Rejected) as refused:
        await source_of(committer, log).append(body_of(ndjson(events(2))), "fail", None)
    full = ": the disk is full" if code == errno.ENOSPC else ""
    message = (
        f"the write-ahead log failed (the disk said no{full}); nothing of this batch was "
        "acknowledged; restart the server once the disk is fixed"
    )
    assert (refused.value.status, refused.value.message) == (status, message)
    assert refused.value.headers == {"Retry-After": "5"}
    logged = [r.getMessage() for r in caplog.records if r.name == "tallyd.http"]
    assert logged == [f"event=wal_failed error={str(failure)!r}"]
    await log.stop()


@pytest.mark.asyncio
async def test_a_body_without_events_answers_the_position_and_no_views(
    started: tuple[Committer, HttpLog],
) -> None:
    """Nothing to log: no record, the source's position as it is (none yet: 0), and no per-view
    outcome, since no view was touched."""
    committer, log = started
    source = source_of(committer, log)
    ack = await source.append(body_of(b""), "fail", None)
    assert ack.to_json() == {"accepted": 0, "rejected": 0, "position": "wal:0"}
    await source.append(body_of(ndjson(events(2))), "fail", None)
    ack = await source.append(body_of(b"\n"), "fail", None)
    assert ack.to_json() == {"accepted": 0, "rejected": 0, "position": "wal:1"}
    assert log.position == 1


def test_outcomes_say_what_max_groups_folded_and_a_zero_grace() -> None:
    config = parse(
        {
            "sources": {"s": {"time": "ts"}},
            "views": {
                "few": {"sql": "SELECT k, count(*) AS n FROM s GROUP BY k", "max_groups": 1},
                # no grace: an event before the watermark is late
                "strict": {
                    "sql": "SELECT tumble(ts, '1 minute') AS m, count(*) AS n FROM s GROUP BY m"
                },
            },
        }
    )
    registry = Registry(config.sources, config.views)
    registry.apply(Batch("s", events(1, "a", start=120_000), 1))
    batch = [*events(2, "b"), *events(1, "a", start=130_000)]  # b is a second group: folded
    applied = registry.apply(Batch("s", batch, 2))
    assert outcomes(registry, len(batch), applied) == {
        "few": {"applied": 3, "late": 0, "filtered": 0, "overflow": 2},
        "strict": {
            "applied": 1,
            "late": 2,
            "filtered": 0,
            "late_before": iso(T0 + 120_000),
            "watermark": iso(T0 + 120_000),
            "grace": "0s",
        },
    }


def add_view(committer: Committer) -> None:
    """``v``, the SQL of view ``n`` (its twin, defined from the start), added with the log kept
    as history."""
    config = parse({**CONFIG, "views": {**CONFIG["views"], "v": CONFIG["views"]["n"]}})
    committer.registry.history = frozenset({"s"})
    committer.registry.reconfigure(config.views, config.sources)
    assert committer.registry.backfilling("v")


@pytest.mark.parametrize("records", [6, 0])
@pytest.mark.asyncio
async def test_an_http_backfill_reads_a_chunk_a_step_and_says_when_done(
    started: tuple[Committer, HttpLog],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    records: int,
) -> None:
    """A view added reads the log from its first record, one chunk (here: a record) per step,
    its progress (where it began, how far it read: what ``/v1/views`` reports) set from the
    first step — the crash suite's ``mid_backfill`` point after each step that leaves more to
    read — then joins and logs it; over an empty log it joins at once."""
    committer, log = started
    source = source_of(committer, log)
    for k in "abcdef"[:records]:
        await source.append(body_of(ndjson(events(2, k))), "fail", None)
    add_view(committer)
    filling = committer.registry.backfills["v"]
    passes: list[tuple[dict[str, int], dict[str, int]]] = []
    reached = faults.reached

    def spy(point: str) -> None:
        if point == "mid_backfill":
            passes.append((dict(filling.began), dict(filling.positions)))
        reached(point)

    monkeypatch.setattr(faults, "reached", spy)
    with caplog.at_level(logging.INFO, logger="tallyd.http"):
        await source.backfill("v", 1)
    assert passes == [({"": 0}, {"": i}) for i in range(1, records)]
    assert not committer.registry.backfilling("v")
    assert rows(committer.registry, "v") == rows(committer.registry, "n")
    logged = [r.getMessage() for r in caplog.records if r.name == "tallyd.http"]
    assert logged == [f"event=backfill_done view=v events={2 * records}"]


@pytest.mark.asyncio
async def test_an_append_passes_the_crash_points_in_order(
    started: tuple[Committer, HttpLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash suite SIGKILLs the server at named points (``ingest.faults``): an append passes
    them in the order their names promise, each once."""
    committer, log = started
    passed: list[str] = []
    reached = faults.reached

    def spy(point: str) -> None:
        passed.append(point)
        reached(point)

    monkeypatch.setattr(faults, "reached", spy)
    await source_of(committer, log).append(body_of(ndjson(events(2))), "fail", None)
    assert passed == [
        "before_wal_append",
        "after_write_before_fsync",
        "after_fsync_before_apply",
        "before_response",
    ]


@pytest.mark.asyncio
async def test_a_column_wise_record_replays_row_wise_when_its_reader_declines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column-wise record logs its NDJSON body; a restart reads it column-wise again, or —
    when the column reader declines it (another pyarrow) — row by row, to the same answers,
    with its Idempotency-Key receipt."""
    committer, log = fresh(tmp_path)
    committer.recover(log)
    log.start()
    now = int(time.time() * 1000)
    body = ndjson(events(TABLE_MIN_LINES, "b"))
    table = Decoder(committer.registry.sources["s"].spec, 1 << 20).columns(body)
    assert table is not None
    await log.submit(Batch("s", [], 0, columns=table), body, Receipt("big", "d", now))
    expected = rows(committer.registry)
    await log.stop()

    monkeypatch.setattr(Decoder, "columns", lambda self, body, threads=True: None)
    again, relog = fresh(tmp_path)
    recovery = again.recover(relog)
    assert recovery.replayed == 1
    assert rows(again.registry) == expected
    assert again.registry.sources["s"].positions == {"": 1}
    assert relog.receipts["big"]["digest"] == "d"
    relog.wal.close()


@pytest.mark.asyncio
async def test_a_removed_source_s_records_are_skipped_by_backfills_and_restarts(
    tmp_path: Path,
) -> None:
    """A source removed on the running server leaves its column-wise records in the log: a
    view added after it reads past them (its position moves on, nothing applied), and a restart
    replays past them."""
    two = {**CONFIG, "sources": {"s": {"time": "ts"}, "gone": {"time": "ts"}}}
    config = parse(two)
    committer = Committer(Registry(config.sources, config.views), tmp_path, frozenset())
    log = HttpLog(committer, tmp_path, 1 << 20, 1 << 20)
    committer.recover(log)
    log.start()
    body = ndjson(events(TABLE_MIN_LINES, "g"))
    table = Decoder(config.sources["gone"], 1 << 20).columns(body)
    assert table is not None
    await log.submit(Batch("gone", [], 0, columns=table), body, None)
    await log.submit(Batch("s", events(3, "a"), 0), None, None)
    async with committer.step() as step:  # the config without "gone" (its views are on "s")
        step.reconfigure(parse(CONFIG).views, parse(CONFIG).sources)
    add_view(committer)
    await source_of(committer, log).backfill("v", 1)
    assert not committer.registry.backfilling("v")
    assert rows(committer.registry, "v") == rows(committer.registry, "n") == [("a", 3, 3)]
    await log.stop()

    again, relog = fresh(tmp_path)
    assert again.recover(relog).replayed == 2
    assert rows(again.registry) == [("a", 3, 3)]
    assert relog.position == 2
    relog.wal.close()


@pytest.mark.parametrize("key", ["", "with space", "k" * 256, "ключ"])
@pytest.mark.asyncio
async def test_an_invalid_idempotency_key_is_a_400_naming_the_header(
    started: tuple[Committer, HttpLog], key: str
) -> None:
    committer, log = started
    with pytest.raises(Rejected) as refused:
        await source_of(committer, log).append(body_of(ndjson(events(1))), "fail", key)
    assert (refused.value.status, refused.value.message) == (400, KEY_RULE)
    assert refused.value.detail == {"param": "Idempotency-Key"}
    assert log.position == 0


@pytest.mark.asyncio
async def test_a_key_is_remembered_up_to_its_ttl_inclusive(
    started: tuple[Committer, HttpLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry arriving exactly ``idempotency_ttl`` after the first request still gets its
    answer; a millisecond later the key is forgotten, and the body is new events."""
    committer, log = started
    source = source_of(committer, log)
    data = ndjson(events(2))
    clock = [T0 / 1000]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    first = await source.append(body_of(data), "fail", "k1")
    clock[0] = (T0 + log.receipt_ttl_ms) / 1000
    again = await source.append(body_of(data), "fail", "k1")
    assert (again.replayed, again.position) == (True, first.position)
    clock[0] = (T0 + log.receipt_ttl_ms + 1) / 1000
    later = await source.append(body_of(data), "fail", "k1")
    assert (later.replayed, later.position) == (False, "wal:2")


@pytest.mark.parametrize("key", [None, "k2"])
@pytest.mark.asyncio
async def test_skipped_lines_are_kept_with_when_they_arrived_and_fail_refuses_them(
    started: tuple[Committer, HttpLog], key: str | None
) -> None:
    """``on_error=skip`` applies the valid lines and keeps each invalid one with its text and
    the wall-clock time it arrived; ``fail`` — with an Idempotency-Key too — applies nothing."""
    committer, log = started
    source = source_of(committer, log)
    data = ndjson(events(2)) + b'{"k": "no time"}\n'
    with pytest.raises(Rejected) as refused:
        await source.append(body_of(data), "fail", key)
    assert refused.value.status == 400
    assert log.position == 0
    before = time.time()
    ack = await source.append(body_of(data), "skip", key)
    assert (ack.accepted, ack.rejected) == (2, 1)
    (kept,) = committer.registry.sources["s"].rejected_events
    assert kept["text"] == '{"k": "no time"}'
    arrived = datetime.fromisoformat(kept["received_at"]).timestamp()
    assert before - 1 <= arrived <= time.time() + 1


@pytest.mark.asyncio
async def test_an_empty_chunked_body_is_admitted_at_a_full_backlog(tmp_path: Path) -> None:
    """A body that declares no length is admitted on what it turns out to weigh: an empty one
    costs nothing, so a backlog at its limit does not shed it."""
    committer, log = fresh(tmp_path, max_backlog=100)
    committer.recover(log)
    log.start()
    log.backlog = 100
    chunked = body_of(b"")
    chunked.declared = None
    ack = await source_of(committer, log).append(chunked, "fail", None)
    assert ack.to_json() == {"accepted": 0, "rejected": 0, "position": "wal:0"}
    await log.stop()


@pytest.mark.asyncio
async def test_the_log_a_backfill_not_begun_reads_is_not_trimmed(tmp_path: Path) -> None:
    """A view added, its reader not started yet, reads from the oldest record kept: a snapshot's
    trim keeps every segment until the reader says how far it read."""
    config = parse(CONFIG)
    committer = Committer(Registry(config.sources, config.views), tmp_path, frozenset())
    log = HttpLog(committer, tmp_path, 1, 1 << 20)  # a segment per record
    committer.recover(log)
    log.start()
    for k in "abc":
        await log.submit(Batch("s", events(1, k), 0), None, None)
    add_view(committer)
    assert log.trim(3) == 0
    assert log.wal.first() == 1
    committer.registry.backfills["v"].positions[""] = 1  # read up to record 1
    assert log.trim(3) == 1
    assert log.wal.first() == 2
    await log.stop()


@pytest.mark.asyncio
async def test_the_backlog_figures_start_at_zero_and_peak_at_the_largest_body(
    started: tuple[Committer, HttpLog],
) -> None:
    """What ``/v1/status`` shows of the ingest backlog: nothing at the start, then the largest
    body held at once."""
    committer, log = started
    assert (log.backlog, log.peak, log.shed) == (0, 0, 0)
    data = ndjson(events(3))
    await source_of(committer, log).append(body_of(data), "fail", None)
    assert (log.backlog, log.peak, log.shed) == (0, len(data), 0)


def test_a_snapshot_from_before_receipts_restores_with_none(tmp_path: Path) -> None:
    committer, log = fresh(tmp_path)
    assert log.restore({"position": 0}, Step(committer.registry)) == (0, 0)
    assert (log.position, log.receipts) == (0, {})
    log.wal.close()
