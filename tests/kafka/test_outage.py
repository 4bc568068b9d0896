"""Acceptance 5: the broker is down when the server starts, comes up, freezes mid-stream and
recovers. The server stays up, answers from what it has, reports the source unhealthy, and
catches up by itself to answers that match the reference."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BASE_TS, running, until
from tests.kafka.broker import Broker, create_topic, produce

TOPIC = f"outage{uuid.uuid4().hex[:6]}"


def config(bootstrap: str) -> str:
    return f"""
[sources.events]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{TOPIC}"
group = "g{uuid.uuid4().hex[:8]}"
time = "ts"
session_timeout = "6s"

[views.totals]
sql = "SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k"
"""


def batch(first: int, n: int) -> list[tuple[int, dict[str, Any]]]:
    return [
        (i % 2, {"id": i, "ts": BASE_TS + i, "k": "ab"[i % 2], "v": i})
        for i in range(first, first + n)
    ]


def expected(n: int) -> list[dict[str, Any]]:
    ids = range(1, n + 1)
    return [
        {
            "k": k,
            "n": sum(1 for i in ids if "ab"[i % 2] == k),
            "total": sum(i for i in ids if "ab"[i % 2] == k),
        }
        for k in "ab"
    ]


@pytest.mark.asyncio
async def test_broker_down_at_start_then_frozen_mid_stream(
    own_broker: Broker, tmp_path: Path
) -> None:
    async with running(config(own_broker.bootstrap), tmp_path) as (client, _):

        async def ready_status() -> int:
            return (await client.get("/readyz")).status

        async def unhealthy() -> bool:
            response = await client.get("/readyz")
            body = await response.json()
            return response.status == 503 and not body["error"]["sources"]["events"]["healthy"]

        async def totals() -> Any:
            return (await (await client.get("/v1/views/totals")).json())["rows"]

        await until(unhealthy, 30)  # down at start: reported, and queries still answered
        assert await totals() == []
        own_broker.start()
        await create_topic(own_broker.bootstrap, 2, TOPIC)
        await produce(own_broker.bootstrap, TOPIC, batch(1, 500))
        await until(lambda: _equals(totals, expected(500)), 60)
        assert await ready_status() == 200

        own_broker.freeze()  # mid-stream: the broker stops answering
        await until(unhealthy, 30)
        assert await totals() == expected(500)  # still answered from what was counted
        own_broker.thaw()
        await until(lambda: _ready(client), 60)
        await produce(own_broker.bootstrap, TOPIC, batch(501, 700))
        await until(lambda: _equals(totals, expected(1200)), 60)


async def _equals(fetch: Any, want: Any) -> bool:
    return bool(await fetch() == want)


async def _ready(client: Any) -> bool:
    return bool((await client.get("/readyz")).status == 200)
