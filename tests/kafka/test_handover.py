"""A partition handed over while records are in flight: what the 1,000-kill crash run caught.

Two ways a hand-over could leave a part's file behind the records applied after it, so that a
reload skipped what lay in between: two saves of one part landing out of order, and a fetch
made before a hand-over applied after it. These tests drive ``KafkaSource`` against a real broker
through exactly those interleavings.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ingest.columnar import MIN_LINES
from ingest.commit import Committer
from ingest.decode import Decoder
from ingest.kafka import KafkaSource
from ingest.snapshots import atomic_write
from tests.helpers import BASE_TS, TABLE_MIN_LINES, Contended, IngestPath, until
from tests.kafka.broker import create_topic, produce
from views import snapshot
from views.config import parse
from views.query import all_rows
from views.registry import Batch, Registry

VIEW = "SELECT count(*) AS n, sum(id) AS ids, count_distinct(id) AS distinct_ids FROM s"


def make_source(
    state_dir: Path,
    bootstrap: str = "x:1",
    topic: str = "t",
    sql: str = VIEW,
    group: str = "g",
    grace: str | None = None,
) -> Any:
    cfg = parse(
        {
            "sources": {
                "s": {
                    "from": "kafka",
                    "bootstrap": bootstrap,
                    "topic": topic,
                    "group": group,
                    "time": "ts",
                    "start": "earliest",
                }
            },
            "views": {"v": {"sql": sql} if grace is None else {"sql": sql, "grace": grace}},
        }
    )
    registry = Registry(cfg.sources, cfg.views)
    spec = cfg.sources["s"]
    committer = Committer(registry, state_dir, frozenset({"s"}))
    return KafkaSource(spec, committer, state_dir, Decoder(spec, 1000))


def totals(source: KafkaSource) -> tuple[int, int, int]:
    n = ids = distinct = 0
    view = source.registry.views["v"]
    for name in list(view.parts):  # each part on its own: a part's figures, summed
        only = {name: view.parts[name]}
        saved, view.parts = view.parts, only
        try:
            for row in all_rows(view).values():
                n, ids, distinct = n + row[0], ids + row[1], distinct + row[2]
        finally:
            view.parts = saved
    return n, ids, distinct


def apply_ids(source: KafkaSource, part: str, ids: range) -> None:
    events = [{"ts": BASE_TS + i, "id": i} for i in ids]
    source.registry.apply(Batch("s", events, ids.stop, part=part))


@pytest.mark.asyncio
async def test_two_saves_of_one_part_land_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic save and a hand-over's save racing: the file must end at the newer position.

    The first save's file write is held until the second save has either written its own file
    (what happened before the per-part lock: the older file then landed last) or is waiting for
    the part's lock (the second cannot overtake, and the first goes on). Either is an event, so
    the interleaving is the same on every run; the 10 s bound only turns a hang into a failure."""
    source = make_source(tmp_path)
    source.owned.add("t:0")
    apply_ids(source, "t:0", range(0, 10))
    calls: list[int] = []
    first_entered, second_moved = threading.Event(), threading.Event()
    source.saving["t:0"] = Contended(second_moved)

    def write(path: Path, data: bytes) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            first_entered.set()
            if not second_moved.wait(10):
                raise AssertionError("the second save neither wrote nor waited for the lock")
            atomic_write(path, data)
        else:
            atomic_write(path, data)
            second_moved.set()

    monkeypatch.setattr("ingest.kafka.atomic_write", write)
    first = asyncio.create_task(source.save(force=True))  # encodes position 10, then writes
    assert await asyncio.to_thread(first_entered.wait, 10)
    async with source.committer.lock:
        apply_ids(source, "t:0", range(10, 20))
    await asyncio.gather(first, source.save(force=True))  # the second encodes position 20
    state = snapshot.decode((tmp_path / "t-0.tsnap").read_bytes())
    assert state["position"] == 20
    assert len(calls) == 2


@pytest.mark.asyncio
async def test_a_save_cancelled_while_its_file_is_written_holds_the_part_until_it_is_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save cancelled mid-write (a stopping server, a backfill ending): the file write runs on
    in its thread and cannot be stopped, so the part's lock must stay held until it ends. Were
    it let go at the cancellation, the next save would write beside it — the same temporary
    file (what a stress run of the backfill test hit: FileNotFoundError at the rename, and then
    a consumer left in the group) — or land first and be overwritten by the older file."""
    source = make_source(tmp_path)
    source.owned.add("t:0")
    apply_ids(source, "t:0", range(0, 10))
    first_entered, release, moved = threading.Event(), threading.Event(), threading.Event()
    source.saving["t:0"] = Contended(moved)  # the second save waits for the lock: moved
    writing: list[int] = []
    most = 0

    def write(path: Path, data: bytes) -> None:
        nonlocal most
        writing.append(1)
        most = max(most, len(writing))
        try:
            if not first_entered.is_set():
                first_entered.set()
                if not release.wait(10):
                    raise AssertionError("the test never let the first write go on")
            else:
                moved.set()  # the second save is writing
            atomic_write(path, data)
        finally:
            writing.pop()

    monkeypatch.setattr("ingest.kafka.atomic_write", write)
    first = asyncio.create_task(source.save(force=True))  # position 10, held in its write
    assert await asyncio.to_thread(first_entered.wait, 10)
    first.cancel()
    async with source.committer.lock:
        apply_ids(source, "t:0", range(10, 20))
    second = asyncio.create_task(source.save(force=True))  # position 20
    assert await asyncio.to_thread(moved.wait, 10)  # it waits for the lock, or it is writing
    release.set()
    outcomes = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)  # the cancellation, after the write
    assert outcomes[1] == 1
    assert most == 1  # never two writes of the part at once
    state = snapshot.decode((tmp_path / "t-0.tsnap").read_bytes())
    assert state["position"] == 20


@pytest.mark.asyncio
async def test_a_session_whose_parts_cannot_be_saved_on_the_way_out_still_leaves_the_group(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping, the session saves its parts' files, then stops its consumer. When the save
    fails (a full disk), the consumer must stop all the same — one left running stays in the
    group, heartbeating, holding partitions nobody reads — and the stop must end: the error on
    the way out is not a broker outage to retry with a new session."""
    topic = await create_topic(kafka, 2)
    await produce(kafka, topic, [(i % 2, {"id": i, "ts": BASE_TS + i}) for i in range(10)])
    source = make_source(tmp_path, kafka, topic, group=f"g{uuid.uuid4().hex[:8]}")
    await source.start()
    try:

        async def counted_all() -> bool:
            positions: dict[str, int] = source.registry.sources["s"].positions
            return sum(positions.values()) == 10

        await until(counted_all, 30)
    except BaseException:
        await source.stop()
        raise
    consumer = source.consumer
    assert consumer is not None

    async def full(*args: Any, **kwargs: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(source, "save", full)
    await asyncio.wait_for(source.stop(), 30)  # the cancellation is not taken for an outage
    assert consumer._closed  # left the group: no member holds the partitions
    assert source.consumer is None


@asynccontextmanager
async def assigned(source: KafkaSource, bootstrap: str, tp: TopicPartition) -> AsyncIterator[Any]:
    """A real consumer of ``tp`` (manual assignment, a group with no committed offsets, no
    automatic reset) handed to ``source``; the test decides when ``source`` acquires it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"g{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="none",
        max_poll_records=100,
    )
    await consumer.start()
    consumer.assign([tp])
    source.consumer = consumer
    try:
        yield consumer
    finally:
        source.consumer = None
        await consumer.stop()


@asynccontextmanager
async def member(source: KafkaSource, bootstrap: str, tp: TopicPartition) -> AsyncIterator[Any]:
    """``source`` owning ``tp`` through a real consumer (the hand-overs are driven by the test,
    through the same acquire/release the group listener calls)."""
    async with assigned(source, bootstrap, tp) as consumer:
        try:
            await source.acquire([tp])
            yield consumer
        finally:
            await source.release([tp])


async def fetch(source: KafkaSource, consumer: Any, n: int = 100) -> list[Any]:
    """The next ``n`` records of the one assigned part as one fetch, stamped with the part's
    epoch — as one ``getmany`` returns them, gathered from several if the broker hands them out
    in pieces (no hand-over happens in between). ``n`` decides the path: ``_apply_fetched``
    reads ``MIN_LINES`` or more clean records column-wise."""
    got: list[Any] = []
    stamps = set()
    for _ in range(100):  # bounded: the records are on the broker already
        records = await consumer.getmany(timeout_ms=200, max_records=n - len(got))
        for tp, messages, epoch in source._stamped(records):
            got += messages
            stamps.add((tp, epoch))
        if len(got) == n:
            ((tp, epoch),) = stamps
            return [(tp, got, epoch)]
    raise AssertionError(f"fetched {len(got)} records, not {n}")


async def drain(source: KafkaSource, consumer: Any, part: str, end: int, n: int = 100) -> int:
    """Consume, ``n`` records a fetch (fewer for the last, if ``end`` is nearer), until the
    part's position reaches ``end`` (or passes it: fetches are whole)."""
    positions = source.registry.sources["s"].positions
    for _ in range(200):
        if positions.get(part, 0) >= end:
            return positions[part]
        position = positions.get(part, 0)
        await source._apply_fetched(await fetch(source, consumer, min(n, end - position)))
    raise AssertionError(f"{part} stopped at {positions.get(part)}, not {end}")


# Records a fetch on each path: fewer than MIN_LINES go to the row decoder; a large fetch is read
# column-wise (ChangeDecoder.columns joins the values into one NDJSON buffer).
FETCH = {"rows": MIN_LINES // 2, "columns": TABLE_MIN_LINES + 1}


@pytest.mark.asyncio
@pytest.mark.parametrize("read", ["at_its_turn", "ahead"])
@pytest.mark.parametrize("file", ["current", "older"])
async def test_a_fetch_made_before_a_hand_over_is_dropped_after_it(
    kafka: str, tmp_path: Path, file: str, read: str, ingest_path: IngestPath
) -> None:
    """Records fetched, then the part handed over and back (reloaded from its file): the fetch
    is not applied — the consumer was pointed at the file's position and reads them again — and
    in the end every record is counted once. "older": the file is behind the records applied
    before the hand-over (what two saves landing out of order left): applying the old fetch on
    top of it would skip the records in between. On both paths: row by row (``_apply``) and
    column-wise (``_applied``) each check the fetch's epoch. "ahead": the fetch's column
    read was started before the hand-over (``_read_ahead``, as ``_consume`` does while the fetch
    before is applied) and done by the time it is applied."""
    n = FETCH[ingest_path.name]
    topic = await create_topic(kafka, 1)
    await produce(kafka, topic, [(0, {"id": i, "ts": BASE_TS + i}) for i in range(3 * n)])
    tp, part = TopicPartition(topic, 0), f"{topic}:0"
    path = tmp_path / f"{topic}-0.tsnap"
    positions = (source := make_source(tmp_path, kafka, topic)).registry.sources["s"].positions
    async with member(source, kafka, tp) as consumer:
        await source._apply_fetched(await fetch(source, consumer, n))  # offsets 0..n-1
        assert await source.save() == 1
        older = path.read_bytes()  # position n
        await source._apply_fetched(await fetch(source, consumer, n))  # offsets n..2n-1
        in_flight = await fetch(source, consumer, n)  # offsets 2n..3n-1, not applied yet
        reads = source._read_ahead(in_flight) if read == "ahead" else None
        if reads is not None:
            await asyncio.wait([r for r in reads if r is not None])  # read before the hand-over
        await source.release([tp])  # writes position 2n
        if file == "older":
            path.write_bytes(older)
        await source.acquire([tp])  # back: reloaded, the consumer seeked to the file's position
        reloaded = {"current": 2 * n, "older": n}[file]
        assert positions[part] == reloaded
        await source._apply_fetched(in_flight, reads)
        assert positions[part] == reloaded  # dropped
        assert await drain(source, consumer, part, 3 * n, n) == 3 * n
    again = make_source(tmp_path, kafka, topic)
    async with member(again, kafka, tp):
        assert totals(again) == (3 * n, sum(range(3 * n)), 3 * n)


@pytest.mark.asyncio
@pytest.mark.parametrize("first", ["applied", "dropped"])
async def test_a_fetch_spanning_another_members_turn(
    kafka: str, tmp_path: Path, first: str, ingest_path: IngestPath
) -> None:
    """Member A fetches, the part goes to member B (same state directory, as after a restart)
    which reads further, then comes back to A with B's file: A's old fetch must not count again,
    and nothing B counted is lost."""
    n = FETCH[ingest_path.name]
    topic = await create_topic(kafka, 1)
    await produce(kafka, topic, [(0, {"id": i, "ts": BASE_TS + i}) for i in range(4 * n)])
    tp, part = TopicPartition(topic, 0), f"{topic}:0"
    a, b = make_source(tmp_path, kafka, topic), make_source(tmp_path, kafka, topic)
    async with member(a, kafka, tp) as consumer:
        if first == "applied":
            await a._apply_fetched(await fetch(a, consumer, n))  # 0..n-1
        in_flight = await fetch(a, consumer, n)
        await a.release([tp])
        async with member(b, kafka, tp) as other:
            handed_back = await drain(b, other, part, 3 * n, n)
        await a.acquire([tp])  # B's file
        await a._apply_fetched(in_flight)
        assert a.registry.sources["s"].positions[part] == handed_back
        assert await drain(a, consumer, part, 4 * n, n) == 4 * n
        assert totals(a) == (4 * n, sum(range(4 * n)), 4 * n)


@pytest.mark.asyncio
async def test_a_part_saved_under_other_sql_is_a_partition_error(
    kafka: str, tmp_path: Path
) -> None:
    """A part file made for a view whose SQL has since changed: the partition is stopped with
    an error naming the view (its old state would be wrong), never silently reset."""
    topic = await create_topic(kafka, 1)
    await produce(kafka, topic, [(0, {"id": i, "ts": BASE_TS + i}) for i in range(50)])
    tp, part = TopicPartition(topic, 0), f"{topic}:0"
    source = make_source(tmp_path, kafka, topic)
    async with member(source, kafka, tp) as consumer:
        assert await drain(source, consumer, part, 50) == 50
    changed = make_source(tmp_path, kafka, topic, sql="SELECT count(*) AS n FROM s")
    async with member(changed, kafka, tp):
        assert "view(s) v changed their SQL" in changed.partition_errors[part]
        assert part not in changed.owned


@pytest.mark.asyncio
async def test_no_fetch_position_is_looked_up_while_a_part_is_being_loaded(
    kafka: str, tmp_path: Path
) -> None:
    """While a partition's file is loaded (the committer busy, say), the consumer must not go
    for the group's committed offset: there is none, and with auto_offset_reset "none" that
    failed the whole session (seen in the long crash run). Each partition gets a position and
    is paused before anything is awaited."""
    topic = await create_topic(kafka, 1)
    await produce(kafka, topic, [(0, {"id": i, "ts": BASE_TS + i}) for i in range(200)])
    tp, part = TopicPartition(topic, 0), f"{topic}:0"
    source = make_source(tmp_path, kafka, topic)
    async with assigned(source, kafka, tp) as consumer:
        async with (
            source.committer.lock
        ):  # acquire waits for it, as behind a long apply or snapshot
            loading = asyncio.create_task(source.acquire([tp]))
            assert await consumer.getmany(timeout_ms=1000) == {}  # raised before
        await loading
        assert await drain(source, consumer, part, 200) == 200
        assert totals(source) == (200, sum(range(200)), 200)


@dataclass
class _Record:
    """What ``_read_ahead`` reads of a record (aiokafka's parser's records carry these)."""

    offset: int
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@pytest.mark.asyncio
async def test_a_read_ahead_that_fails_raises_where_its_fetch_is_applied_and_nowhere_else(
    tmp_path: Path,
) -> None:
    """A read started ahead (``_read_ahead``) that raises: applying its fetch raises that error;
    a fetch never applied (its session ended first) leaves no error for asyncio to report as
    never retrieved when the task is collected."""
    source = make_source(tmp_path)
    tp = TopicPartition("t", 0)
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    def broken(values: list[bytes | None], threads: bool = True) -> Any:
        raise RuntimeError(f"cannot read {len(values)} values")

    source.changes.columns = broken
    lines = [_Record(i, b'{"ts": %d, "id": %d}' % (BASE_TS + i, i)) for i in range(TABLE_MIN_LINES)]
    fetched = [(tp, lines, None)]
    applied = source._read_ahead(fetched)
    with pytest.raises(RuntimeError, match=f"cannot read {TABLE_MIN_LINES} values"):
        await source._apply_fetched(fetched, applied)
    never = source._read_ahead([(tp, lines, None)])  # its session ends before it is applied
    await asyncio.wait([r for r in never if r is not None])
    del applied, never
    gc.collect()
    await asyncio.sleep(0)
    assert reported == []


HOURLY = "SELECT tumble(ts, '1 hour') AS h, count(*) AS n, sum(id) AS ids FROM s GROUP BY h"
HOUR = 3_600_000


def grouped(source: KafkaSource, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The positions of the batches of each ``applying_group`` the source's applies make."""
    groups: list[list[int]] = []
    real = source.registry.applying_group

    def spy(batches: list[Batch]) -> Any:
        groups.append([batch.position for batch in batches])
        return real(batches)

    monkeypatch.setattr(source.registry, "applying_group", spy)
    return groups


async def fetches(source: KafkaSource, consumer: Any, n: int, count: int) -> list[Any]:
    """``count`` fetches of ``n`` records, in turn."""
    return [one for _ in range(count) for one in await fetch(source, consumer, n)]


@dataclass
class Hourly:
    """A topic of one partition holding ``events``, and a source with the ``HOURLY`` view whose
    groups are recorded (``grouped``)."""

    tp: TopicPartition
    part: str
    source: Any
    groups: list[list[int]]


async def hourly_topic(
    kafka: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    events: list[dict[str, Any]],
    grace: str | None = None,
) -> Hourly:
    topic = await create_topic(kafka, 1)
    await produce(kafka, topic, [(0, event) for event in events])
    source = make_source(tmp_path, kafka, topic, sql=HOURLY, grace=grace)
    return Hourly(TopicPartition(topic, 0), f"{topic}:0", source, grouped(source, monkeypatch))


def counted(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "ts": BASE_TS + i} for i in range(n)]


def hourly(source: KafkaSource) -> tuple[int, int, int]:
    """(events counted, their ids' sum, late events) of the ``HOURLY`` view."""
    view = source.registry.views["v"]
    rows = list(all_rows(view).values())
    return sum(r[0] for r in rows), sum(r[1] for r in rows), view.counter("late")


@pytest.mark.asyncio
async def test_a_parts_fetches_read_ahead_apply_as_one_group_each_with_its_own_lateness(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fetches of a part that were read while the loop applied (``_consume`` takes every one
    that arrived) are applied in one ``applying_group`` — and each keeps its lateness: the
    second fetch's events are an hour older than the first's, late by the watermark the first
    leaves, not by the one before the group (none: nothing would be late)."""
    n = TABLE_MIN_LINES + 1
    times = [HOUR + i for i in range(n)] + list(range(n)) + [HOUR + n + i for i in range(n)]
    events = [{"id": i, "ts": BASE_TS + t} for i, t in enumerate(times)]
    h = await hourly_topic(kafka, tmp_path, monkeypatch, events, grace="10s")
    async with member(h.source, kafka, h.tp) as consumer:
        fetched = await fetches(h.source, consumer, n, 3)
        await h.source._apply_fetched(fetched, h.source._read_ahead(fetched))
        assert h.groups == [[n, 2 * n, 3 * n]]
        assert hourly(h.source) == (2 * n, sum(range(n)) + sum(range(2 * n, 3 * n)), n)
        assert h.source.registry.sources["s"].positions[h.part] == 3 * n


@pytest.mark.asyncio
async def test_a_fetch_the_row_decoder_reads_splits_the_group_and_applies_at_its_turn(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four fetches read ahead, the second holding an event with no time (its column read
    gives up: the row decoder names it): the first applied, then the second row by row (its
    bad event rejected, the rest counted), then the last two as one group — in offset order,
    every good event counted once."""
    n = TABLE_MIN_LINES + 1
    events, bad = counted(4 * n), n + 7
    del events[bad]["ts"]
    h = await hourly_topic(kafka, tmp_path, monkeypatch, events)
    async with member(h.source, kafka, h.tp) as consumer:
        fetched = await fetches(h.source, consumer, n, 4)
        await h.source._apply_fetched(fetched, h.source._read_ahead(fetched))
        assert h.groups == [[n], [3 * n, 4 * n]]
        assert hourly(h.source) == (4 * n - 1, sum(range(4 * n)) - bad, 0)
        assert h.source.registry.sources["s"].rejected == 1
        assert h.source.registry.sources["s"].positions[h.part] == 4 * n


@pytest.mark.asyncio
async def test_a_group_holds_at_most_group_records(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog of fetches is applied in groups of at most ``GROUP_RECORDS`` records (a
    query waits for one view's apply of a group at most)."""
    n = TABLE_MIN_LINES + 1
    monkeypatch.setattr("ingest.kafka.GROUP_RECORDS", 2 * n)
    h = await hourly_topic(kafka, tmp_path, monkeypatch, counted(5 * n))
    async with member(h.source, kafka, h.tp) as consumer:
        fetched = await fetches(h.source, consumer, n, 5)
        await h.source._apply_fetched(fetched, h.source._read_ahead(fetched))
        assert h.groups == [[n, 2 * n], [3 * n, 4 * n], [5 * n]]
        assert hourly(h.source) == (5 * n, sum(range(5 * n)), 0)


@pytest.mark.asyncio
async def test_a_group_spanning_a_hand_over_applies_only_what_was_fetched_after_it(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One fetch made, the part handed over and back (reloaded at its file's position), the
    same records fetched again: the two wait together, read ahead. The first is stale and
    dropped; the second counts them, once."""
    n = TABLE_MIN_LINES + 1
    h = await hourly_topic(kafka, tmp_path, monkeypatch, counted(2 * n))
    async with member(h.source, kafka, h.tp) as consumer:
        stale = await fetch(h.source, consumer, n)
        await h.source.release([h.tp])
        await h.source.acquire([h.tp])  # no file position: from the start again
        fetched = [*stale, *await fetches(h.source, consumer, n, 2)]
        assert [f[1][0].offset for f in fetched] == [0, 0, n]
        await h.source._apply_fetched(fetched, h.source._read_ahead(fetched))
        assert h.groups == [[n, 2 * n]]
        assert hourly(h.source) == (2 * n, sum(range(2 * n)), 0)
        assert h.source.registry.sources["s"].positions[h.part] == 2 * n


@pytest.mark.asyncio
async def test_fetches_that_overlap_in_one_group_count_each_record_once(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two fetches of one epoch, the second starting inside the first (the consumer pointed
    back; epochs rule this out, but were it to happen): the group is not applied as one; the
    first is applied, and of the second only the records past it, row by row."""
    n = TABLE_MIN_LINES + 1
    h = await hourly_topic(kafka, tmp_path, monkeypatch, counted(2 * n))
    async with member(h.source, kafka, h.tp) as consumer:
        first = await fetch(h.source, consumer, n)
        consumer.seek(h.tp, n // 2)
        fetched = [*first, *await fetch(h.source, consumer, n)]
        assert [f[1][0].offset for f in fetched] == [0, n // 2]
        await h.source._apply_fetched(fetched, h.source._read_ahead(fetched))
        assert h.groups == [[n]]  # the first alone; the second's new records by the row path
        assert hourly(h.source) == (n // 2 + n, sum(range(n // 2 + n)), 0)
        assert h.source.registry.sources["s"].positions[h.part] == n // 2 + n
