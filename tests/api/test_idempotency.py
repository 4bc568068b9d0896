"""Idempotency-Key on ingest: a retry returns the first answer and counts nothing twice, also
across a restart; a reused key with another request is 422, a concurrent duplicate 409 — for
small bodies and for bodies large enough for the column-wise path (``ingest_path``)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MINUTE_CONFIG, IngestPath, minute_events, running, until

EVENTS = "/v1/sources/orders/events"


async def post(client: Any, body: bytes, key: str | None, **params: str) -> tuple[int, Any, Any]:
    headers = {} if key is None else {"Idempotency-Key": key}
    response = await client.post(EVENTS, data=body, headers=headers, params=params)
    return response.status, await response.json(), response.headers


async def total(client: Any) -> int:
    rows = (await (await client.get("/v1/views/per_minute?bucket=all&group_by=")).json())["rows"]
    return int(rows[0]["n"]) if rows else 0


def orders(path: IngestPath, *spec: tuple[int, str, float]) -> tuple[bytes, int]:
    """A body of orders (minute, country, amount) for ``path``, and how many events it holds."""
    events = path.events(minute_events(list(spec)))
    return path.body(events), len(events)


@pytest.mark.asyncio
async def test_a_retry_returns_the_first_answer_and_counts_nothing_again(
    tmp_path: Path, ingest_path: IngestPath
) -> None:
    body, n = orders(ingest_path, (0, "FR", 1.0), (1, "DE", 2.0))
    async with running(MINUTE_CONFIG, tmp_path) as (client, engine):
        status, first, headers = await post(client, body, "order-batch-1")
        assert status == 200
        assert "Idempotent-Replayed" not in headers
        assert first["accepted"] == n
        for _ in range(3):
            status, again, headers = await post(client, body, "order-batch-1")
            assert status == 200
            assert again == first
            assert headers["Idempotent-Replayed"] == "true"
        assert await total(client) == n
        assert engine.registry.sources["orders"].accepted == n
        # Without a key, the same body is new events (the header is the client's promise).
        await post(client, body, None)
        assert await total(client) == 2 * n


@pytest.mark.asyncio
@pytest.mark.parametrize("snapshot_first", [False, True])
async def test_keys_survive_a_crash_in_the_wal_and_in_snapshots(
    tmp_path: Path, snapshot_first: bool, ingest_path: IngestPath
) -> None:
    body, n = orders(ingest_path, (0, "FR", 1.0))
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    async with running(MINUTE_CONFIG, live) as (client, _):
        _, first, _ = await post(client, body, "k-1")
        if snapshot_first:
            await client.post("/v1/admin/snapshot")
        shutil.copytree(live, crashed)  # what a kill -9 leaves
    async with running(MINUTE_CONFIG, crashed) as (client, engine):
        assert engine.recovery["replayed_batches"] == (0 if snapshot_first else 1)
        status, again, headers = await post(client, body, "k-1")
        assert (status, again, headers["Idempotent-Replayed"]) == (200, first, "true")
        assert await total(client) == n


@pytest.mark.asyncio
async def test_a_key_reused_for_another_request_is_422_and_changes_nothing(
    tmp_path: Path, ingest_path: IngestPath
) -> None:
    body, _ = orders(ingest_path, (0, "FR", 1.0))
    other, _ = orders(ingest_path, (0, "FR", 9.0))
    async with running(MINUTE_CONFIG, tmp_path) as (client, engine):
        assert (await post(client, body, "k"))[0] == 200
        version = engine.registry.version
        for again, params in (
            (other, {}),  # other events
            (body, {"on_error": "skip"}),  # other options
        ):
            status, error, _ = await post(client, again, "k", **params)
            assert status == 422
            assert error["error"]["param"] == "Idempotency-Key"
            assert error["error"]["message"] == (
                "this Idempotency-Key was already used with a different request (source, body "
                "or on_error); use a new key for new events"
            )
        assert engine.registry.version == version
        for bad_key in ("", "x" * 256, "with space", "é"):
            status, error, _ = await post(client, b'{"ts": 1}', bad_key)
            assert status == 400, bad_key
        assert engine.registry.version == version


@pytest.mark.asyncio
async def test_a_concurrent_duplicate_is_409_while_the_first_is_committing(
    tmp_path: Path, ingest_path: IngestPath
) -> None:
    body, n = orders(ingest_path, (0, "FR", 1.0))
    async with running(MINUTE_CONFIG, tmp_path) as (client, engine):
        async with engine.committer.lock:  # the committer waits: the first request is in flight
            first = asyncio.create_task(post(client, body, "dup"))

            async def in_flight() -> bool:
                return "dup" in engine.http.keys_in_flight

            await until(in_flight, timeout=10)
            status, error, headers = await post(client, body, "dup")
            assert status == 409
            assert headers["Retry-After"] == "1"
            assert error["error"]["param"] == "Idempotency-Key"
            assert error["error"]["message"] == (
                "a request with this Idempotency-Key is being processed; retry when it has answered"
            )
        status, _, _ = await asyncio.wait_for(first, 30)
        assert status == 200
        assert await total(client) == n


@pytest.mark.asyncio
async def test_keys_expire_and_are_bounded(tmp_path: Path, ingest_path: IngestPath) -> None:
    body, n = orders(ingest_path, (0, "FR", 1.0))
    async with running(MINUTE_CONFIG, tmp_path, idempotency_max_keys=2) as (client, engine):
        await post(client, body, "old")
        engine.http.receipts["old"]["at"] -= engine.settings.idempotency_ttl + 1  # aged
        status, _, headers = await post(client, body, "old")
        assert status == 200
        assert "Idempotent-Replayed" not in headers  # expired: new events
        assert await total(client) == 2 * n
        engine.http.receipts["old"]["at"] -= engine.settings.idempotency_ttl + 1
        await client.post("/v1/admin/snapshot")
        assert "old" not in engine.http.receipts  # snapshots drop expired keys
        for key in ("a", "b", "c"):
            assert (await post(client, body, key))[0] == 200
        assert list(engine.http.receipts) == ["b", "c"]  # the oldest went first
