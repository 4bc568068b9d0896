"""Every answer gives times as RFC 3339 (issue 14, 8): late events and the status too, not epoch
numbers beside everyone else's strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.test_ingest_answer import CONFIG, T, body
from tests.helpers import running
from views.timefmt import format_time


@pytest.mark.asyncio
async def test_late_events_and_status_give_rfc3339_times(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        await client.post("/v1/sources/orders/events", data=body(T, "paid", 1))
        await client.post("/v1/sources/orders/events", data=body(T - 60_000, "paid", 1))
        late = await (await client.get("/v1/views/per_minute/late")).json()
        (event,) = late["events"]
        assert event["event_time"] == format_time(T - 60_000)
        assert event["watermark"] == format_time(T)
        assert event["late_before"] == format_time(T - 30_000)
        assert event["grace"] == "30s"
        status = await (await client.get("/v1/status")).json()
        orders = status["sources"]["orders"]
        assert (orders["watermark"], orders["watermark_ms"]) == (format_time(T), T)
        assert status["snapshot"]["at"] is None  # none taken yet
        await client.post("/v1/admin/snapshot")
        status = await (await client.get("/v1/status")).json()
        assert status["snapshot"]["at"].endswith("Z")
