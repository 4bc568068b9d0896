"""The main snapshot builds and encodes its state in a worker thread (``Committer.snapshot``):
queries, answered on the event loop, go on meanwhile; writers wait for it; and the thread moves
no pair under them (every part is compacted on the loop first)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from ingest.commit import Committer
from ingest.http import HttpLog
from tests.helpers import Contended
from views import snapshot
from views.config import Config, parse
from views.query import all_rows
from views.registry import Batch, Registry
from views.state import Pairs

T0 = 1_790_000_040_000
CONFIG = {
    "sources": {"s": {"time": "ts"}},
    "views": {
        "v": {
            "sql": "SELECT c, tumble(ts, '1 minute') AS m, count(*) AS n, sum(x) AS t FROM s "
            "GROUP BY c, m",
            "retention": "10m",  # the first minutes' pairs die: a compaction has work to do
        }
    },
}


def started(config: Config, tmp_path: Path) -> tuple[Committer, HttpLog]:
    """A committer and its HTTP log over ``config``, recovered (empty) and started."""
    committer = Committer(Registry(config.sources, config.views), tmp_path, frozenset())
    log = HttpLog(committer, tmp_path, 1 << 20, 1 << 20)
    committer.recover(log)
    log.start()
    return committer, log


@pytest.mark.asyncio
async def test_queries_are_answered_while_the_snapshot_is_built_and_writers_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse(CONFIG)
    committer, log = started(config, tmp_path)
    registry = committer.registry
    building, release = threading.Event(), threading.Event()
    built_on: list[threading.Thread] = []
    moved_on: list[threading.Thread] = []  # the threads of compactions that renumbered pairs
    to_state = registry.to_state
    compact = Pairs.compact

    def blocking_to_state(*args: Any, **kwargs: Any) -> dict[str, Any]:
        built_on.append(threading.current_thread())
        building.set()
        if not release.wait(timeout=30):  # on the loop, this would hold it: nothing answers
            raise TimeoutError("the test never released the snapshot")
        return to_state(*args, **kwargs)

    def recording_compact(self: Pairs, force: bool = False) -> Any:
        keep = compact(self, force)
        if keep is not None:
            moved_on.append(threading.current_thread())
        return keep

    try:
        for minute in range(12):
            events = [{"ts": T0 + minute * 60_000, "c": c, "x": minute} for c in "abc"]
            await log.submit(Batch("s", events, 0), None, None)
        part = registry.views["v"].parts[""]
        assert len(part.pairs.code_of) > len(part.pairs.ids)  # dead pairs, not yet compacted
        before = all_rows(registry.views["v"])
        monkeypatch.setattr(registry, "to_state", blocking_to_state)
        monkeypatch.setattr(Pairs, "compact", recording_compact)
        taking = asyncio.create_task(committer.snapshot(log))
        assert await asyncio.to_thread(building.wait, 30)
        # The state is being built: the loop is free, a query reads the views as they were.
        assert all_rows(registry.views["v"]) == before
        assert committer.lock.locked()  # the snapshot's step: every writer waits for it
        # A write sent meanwhile is acknowledged after; its events are not in the snapshot.
        late = [{"ts": T0 + 11 * 60_000, "c": "d", "x": 100}]
        writing = asyncio.create_task(log.submit(Batch("s", late, 0), None, None))
        release.set()
        info = await taking
        await writing
    finally:
        release.set()
        await log.stop()
    assert built_on
    assert all(t is not threading.main_thread() for t in built_on)
    assert moved_on
    assert all(t is threading.main_thread() for t in moved_on)
    assert all_rows(registry.views["v"]) != before  # the late write applied after
    state = snapshot.decode((tmp_path / "snapshots" / info["file"]).read_bytes())
    again = Registry(config.sources, config.views)
    again.load_state(state)
    assert all_rows(again.views["v"]) == before  # the snapshot: exactly the state it waited on


@pytest.mark.asyncio
async def test_a_snapshot_cancelled_while_its_file_is_written_holds_the_step_until_it_is_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server stopping while its periodic snapshot writes the file: the write goes on in its
    thread, and the step must stay held until it ends — else the stop's own final snapshot
    writes the same temporary file beside it (a mixed file, or a failed rename)."""
    committer, log = started(parse(CONFIG), tmp_path)
    entered, release, moved = threading.Event(), threading.Event(), threading.Event()
    committer.lock = Contended(moved)
    writing = False
    write = committer.snapshots.write

    def held_write(data: Any, position: int) -> Path:
        nonlocal writing
        writing = True
        try:
            entered.set()
            if not release.wait(timeout=30):
                raise TimeoutError("the test never let the write go on")
            return write(data, position)
        finally:
            writing = False

    monkeypatch.setattr(committer.snapshots, "write", held_write)
    seen: list[bool] = []

    async def writer() -> None:
        async with committer.step():
            moved.set()
            seen.append(writing)  # whether the snapshot's file was still being written

    try:
        await log.submit(Batch("s", [{"ts": T0, "c": "a", "x": 1}], 0), None, None)
        taking = asyncio.create_task(committer.snapshot(log))
        assert await asyncio.to_thread(entered.wait, 30)
        taking.cancel()
        waiting = asyncio.create_task(writer())
        assert await asyncio.to_thread(moved.wait, 30)  # it waits for the step, or it has it
        release.set()
        outcomes = await asyncio.gather(taking, waiting, return_exceptions=True)
    finally:
        release.set()
        await log.stop()
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert seen == [False]  # the step was taken only once the file was in place
    (written,) = (tmp_path / "snapshots").glob("*.tsnap")
    assert snapshot.decode(written.read_bytes())["views"]["v"]["parts"]
