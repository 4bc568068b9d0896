from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.server import ServerProcess


@pytest.fixture(autouse=True)
def no_server_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way leaves no tallyd process behind for later tests to trip on.
    Servers of wider-scoped fixtures (started before this runs) are theirs to stop."""
    before = frozenset(ServerProcess.started)
    yield
    ServerProcess.stop_all(keep=before)
