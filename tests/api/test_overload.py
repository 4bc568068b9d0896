"""Ten times more ingest than the server takes: it sheds with 503 + Retry-After, keeps its backlog
(and so its memory) bounded, answers queries meanwhile, counts exactly what it acknowledged, and
is back to normal as soon as the burst ends."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import HOUR_T0, MINUTE_CONFIG, minute_orders, ndjson, running, until

LIMIT = 2 << 20
EVENTS = "/v1/sources/orders/events"


def body(i: int) -> bytes:  # ~400 KB, 8,000 events: the column-wise path
    return ndjson([{"ts": HOUR_T0 + j, "country": f"c{j % 7}", "amount": 1.0} for j in range(8000)])


@pytest.mark.asyncio
async def test_overload_sheds_with_retry_after_and_stays_bounded(tmp_path: Path) -> None:
    async with running(MINUTE_CONFIG, tmp_path, max_ingest_backlog_bytes=LIMIT) as (client, engine):
        payloads = [body(i) for i in range(60)]
        assert all(len(p) < LIMIT for p in payloads)

        async def send(p: bytes) -> tuple[int, Any, dict[str, str]]:
            response = await client.post("/v1/sources/orders/events", data=p)
            return response.status, await response.json(), dict(response.headers)

        async def ask() -> list[int]:
            statuses = []
            for _ in range(50):
                response = await client.get("/v1/views/per_minute?bucket=all&group_by=")
                statuses.append(response.status)
            return statuses

        results, queries = await asyncio.gather(asyncio.gather(*[send(p) for p in payloads]), ask())
        statuses = [status for status, _, _ in results]
        assert set(statuses) == {200, 503}, statuses
        shed = [r for r in results if r[0] == 503]
        assert all(headers["Retry-After"] == "1" for _, _, headers in shed)
        assert all(
            "max_ingest_backlog_bytes" in answer["error"]["message"] for _, answer, _ in shed
        )
        assert queries == [200] * 50  # queries were answered all along
        assert engine.http.peak <= LIMIT  # the backlog, and the memory it holds, stayed bounded
        assert engine.http.shed == len(shed)
        acknowledged = sum(a["accepted"] for s, a, _ in results if s == 200)
        answer = await (await client.get("/v1/views/per_minute?bucket=all&group_by=")).json()
        assert answer["rows"][0]["n"] == acknowledged  # every acknowledged event, nothing else
        # The burst is over: nothing in progress, and the next request goes through.
        assert engine.http.backlog == 0
        status, answer, _ = await send(payloads[0])
        assert status == 200


@pytest.mark.asyncio
async def test_a_body_declared_too_large_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    """While a request is in flight, one whose Content-Length would take the backlog past its
    bound gets its 503 from the headers alone: the client never sends the body, and the server
    never waits for it (reading it first would hold the memory the bound is there to save)."""
    async with running(MINUTE_CONFIG, tmp_path, max_ingest_backlog_bytes=LIMIT) as (client, engine):
        async with engine.committer.lock:  # the first request stays in flight, read and queued
            first = asyncio.create_task(client.post(EVENTS, data=minute_orders([(0, "FR", 1.0)])))

            async def in_flight() -> bool:
                return engine.http.backlog > 0

            await until(in_flight, timeout=10)
            assert client.port is not None
            head, answer = await headers_only(client.port, LIMIT)
            assert head.startswith(b"HTTP/1.1 503"), head
            assert b"\r\nRetry-After: 1\r\n" in head
            assert "max_ingest_backlog_bytes" in answer["error"]["message"]
            assert engine.http.shed == 1
        response = await asyncio.wait_for(first, 30)
        assert response.status == 200  # the first was not disturbed
        assert engine.http.backlog == 0


async def headers_only(port: int, declared: int) -> tuple[bytes, Any]:
    """Send a POST's headers declaring ``declared`` bytes, never its body; the answer's head and
    JSON body. Every wait is bounded: a server that waits for the body fails the test."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    try:
        writer.write(
            f"POST {EVENTS} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/x-ndjson\r\nContent-Length: {declared}\r\n\r\n".encode()
        )
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except TimeoutError:
            raise AssertionError("no answer before the body: the server waits to read it") from None
        length = int(next(v for k, _, v in _fields(head) if k.lower() == b"content-length"))
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        return head, orjson.loads(body)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await asyncio.wait_for(writer.wait_closed(), 10)


def _fields(head: bytes) -> list[tuple[bytes, bytes, bytes]]:
    return [line.partition(b": ") for line in head.split(b"\r\n")[1:] if line]
