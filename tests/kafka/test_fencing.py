"""Issue 11, acceptance 3: a member that stalled past its session timeout (SIGSTOP) and then
resumes (SIGCONT) cannot write a stale part file over the one of the partition's newer owner.

Deterministic: the stalled member A writes part files only when it gives partitions up (its
snapshot interval is an hour), and that is exactly what it does on resuming — the group has moved
on, so it is told its partitions are revoked. By then the newer owner B has written files at the
partitions' ends; A's would be at the positions it had when it stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from benchmarks.server import ServerProcess
from tests.helpers import BASE_TS
from tests.kafka.broker import create_topic, produce
from tests.kafka.cluster import kafka_config
from views import snapshot

PARTITIONS = 2


VIEWS = '[views.totals]\nsql = "SELECT count(*) AS n FROM events"\n'


async def positions(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/sources") as r:
        parts = (await r.json())["sources"][0]["status"]["partitions"]
    return {p: s["position"] or 0 for p, s in parts.items()}


def files(shared: Path, topic: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for p in range(PARTITIONS):
        path = shared / f"{topic}-{p}.tsnap"
        out[f"{topic}:{p}"] = (
            snapshot.decode(path.read_bytes())["position"] if path.exists() else None
        )
    return out


async def until(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)  # polling a condition, bounded by the deadline
    raise TimeoutError("condition not reached")


@pytest.mark.asyncio
async def test_a_member_that_stalled_past_its_session_cannot_overwrite_the_newer_owner(
    kafka: str, tmp_path: Path
) -> None:
    topic = await create_topic(kafka, PARTITIONS)
    shared, group = tmp_path / "shared", f"g{uuid.uuid4().hex[:8]}"
    first = await produce(
        kafka, topic, [(i % PARTITIONS, {"id": i, "ts": BASE_TS + i}) for i in range(1, 1001)]
    )
    (tmp_path / "a.toml").write_text(
        kafka_config(kafka, topic, shared, VIEWS, group=group, cluster=False, snapshot_every="1h")
    )
    (tmp_path / "b.toml").write_text(
        kafka_config(
            kafka, topic, shared, VIEWS, group=group, cluster=False, snapshot_every="300ms"
        )
    )
    a = ServerProcess(tmp_path / "a.toml", tmp_path / "a", tmp_path / "a.log")
    b = ServerProcess(tmp_path / "b.toml", tmp_path / "b", tmp_path / "b.log")
    await a.start()
    end_first = {f"{topic}:{p}": n for p, n in first.items()}

    async def a_caught_up() -> bool:
        return await positions(a.url) == end_first

    await until(a_caught_up, 60)
    assert files(shared, topic) == {p: None for p in end_first}  # A has written nothing yet
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)  # A stalls, holding two partitions it has not saved
    try:
        second = await produce(
            kafka,
            topic,
            [(i % PARTITIONS, {"id": i, "ts": BASE_TS + i}) for i in range(1001, 2001)],
        )
        end = {f"{topic}:{p}": first[p] + second[p] for p in first}
        await b.start()

        async def b_saved_the_ends() -> bool:  # A's session timed out; B took over and saved
            return files(shared, topic) == end

        await until(b_saved_the_ends, 90)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)

    async def a_gave_up() -> bool:  # A found it had been left out, and gave its partitions up
        log = (tmp_path / "a.log").read_text()
        return "event=revoked" in log or "event=fenced" in log

    await until(a_gave_up, 60)
    assert files(shared, topic) == end  # B's files stand: A's stale ones were refused
    assert "event=fenced" in (tmp_path / "a.log").read_text()
    async with aiohttp.ClientSession() as session, session.get(f"{b.url}/v1/views/totals") as r:
        assert (await r.json())["rows"][0]["n"] == 2000
    a.terminate()
    b.terminate()
