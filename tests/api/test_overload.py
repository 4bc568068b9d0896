"""Ten times more ingest than the server takes: it sheds with 503 + Retry-After, keeps its backlog
(and so its memory) bounded, answers queries meanwhile, counts exactly what it acknowledged, and
is back to normal as soon as the burst ends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import HOUR_T0, MINUTE_CONFIG, ndjson, running

LIMIT = 2 << 20


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
