from __future__ import annotations

import asyncio
import gc
import sys
import threading
import traceback
from collections.abc import Generator, Iterator

import pytest

from benchmarks.server import ServerProcess
from tests.helpers import IngestPath

CALL_FAILED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``long`` tests first (in their order), then the rest: under ``pytest -n 2`` the
    workers start on them and share the rest, instead of one starting a two-minute test last."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(autouse=True)
def hang_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test about to fail on pytest-timeout first prints what its event loop's tasks wait on
    (the timeout's own stack shows only the loop's select): a hang names its await."""
    timeout = float(request.config.getini("timeout") or 0)
    if timeout <= 30:
        yield
        return
    timer = threading.Timer(timeout - 20, _print_tasks, args=(request.node.nodeid,))
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


def _print_tasks(test: str) -> None:
    out = sys.__stderr__
    assert out is not None
    print(f"\n--- {test}: still running; its asyncio tasks ---", file=out)
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
    for loop in loops:
        if not loop.is_running():
            continue
        for task in list(asyncio.all_tasks(loop)):
            print(f"{task!r}", file=out)
            for frame in task.get_stack():
                print("".join(traceback.format_stack(frame, limit=1)).rstrip(), file=out)
    out.flush()


@pytest.fixture(autouse=True)
def no_server_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way leaves no tallyd process behind for later tests to trip on.
    Servers of wider-scoped fixtures (started before this runs) are theirs to stop."""
    before = frozenset(ServerProcess.started)
    yield
    ServerProcess.stop_all(keep=before)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether a test's body failed, for fixtures that check after it."""
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture(params=["rows", "columns"])
def ingest_path(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[IngestPath]:
    """Runs a test once per ingest path, and proves afterwards that this path was the one
    taken (``IngestPath.check``; not after a test that failed already: its own failure says
    more)."""
    path = IngestPath(request.param)
    path.install(monkeypatch)
    yield path
    if not request.node.stash.get(CALL_FAILED, True):
        path.check()
