from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka.broker import EXTERNAL, Broker


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker shared by the tests of a session."""
    if EXTERNAL:
        yield EXTERNAL
        return
    broker = Broker(Path(tmp_path_factory.mktemp("tansu")) / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker this test may freeze and stop (not available against an external Kafka)."""
    if EXTERNAL:
        pytest.skip("needs to own the broker process")
    broker = Broker(tmp_path / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()
