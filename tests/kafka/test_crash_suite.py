"""The crash suite, short form: 50 SIGKILLs at random moments under HTTP and Kafka load, then the
oracle's verdict (benchmarks/crash.py). The long form: python -m benchmarks.crash --kills 1000."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.crash import run

ARTIFACTS = Path(
    os.environ.get("TALLYD_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)
KILLS = 50


@pytest.mark.long
@pytest.mark.asyncio
async def test_fifty_random_kills_lose_and_duplicate_nothing(kafka: str, tmp_path: Path) -> None:
    verdict = await run(KILLS, tmp_path, kafka, seed=11)
    print(f"\n{KILLS} kills\n{verdict}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "crash-verdict.txt").write_text(f"{KILLS} kills\n{verdict}\n")
    assert verdict.problems == []
    assert verdict.lost == verdict.duplicated == 0
    assert verdict.kafka_lost == verdict.kafka_duplicated == 0
    assert verdict.acknowledged > 0  # there was load to lose
    assert verdict.kafka_produced > 0
    assert verdict.kafka_kills >= KILLS // 8  # kills landed mid-consumption, not only between
    assert verdict.acknowledged <= verdict.counted <= verdict.sent
