"""``benchmarks.wal_replay``: a crashed server replays every body it acknowledged."""

from __future__ import annotations

import pytest

from benchmarks.wal_replay import measure


@pytest.mark.asyncio
async def test_the_restart_replays_every_acknowledged_body() -> None:
    got = await measure(bodies=60, events=2, connections=8)
    assert got["replayed"] == 60
    assert got["replay_seconds"] > 0
    assert got["live_bodies_per_s"] > 0
