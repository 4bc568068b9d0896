"""Every limit triggers with its documented status and headers, and changes no state."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.auth import new_token
from tests.helpers import HOUR_T0, MINUTE_CONFIG, minute_orders, running

SECRET, LINE = new_token("app", ["read", "append"])
CONFIG = MINUTE_CONFIG + f"\n[auth]\ntokens = [{LINE}]\n"
AUTH = {"Authorization": f"Bearer {SECRET}"}


@pytest.mark.asyncio
async def test_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path, rate_limit=1, rate_burst=3) as (client, _):
        statuses = [(await client.get("/v1/views", headers=AUTH)).status for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = await client.get("/v1/views", headers=AUTH)
        assert limited.status == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert "rate limit" in (await limited.json())["error"]["message"]


@pytest.mark.asyncio
async def test_query_cost_caps_are_400_naming_the_parameter(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path, max_time_range="1h", max_groups_scanned=5) as (client, e):
        body = minute_orders([(m, c, 1.0) for m in range(4) for c in ("FR", "DE")])
        assert (
            await client.post("/v1/sources/orders/events", data=body, headers=AUTH)
        ).status == 200
        version = e.registry.version
        span = f"from={HOUR_T0}&to={HOUR_T0 + 2 * 3_600_000}"
        for url, param in (
            (f"/v1/views/per_minute?{span}", "to"),
            (f"/v1/views/per_minute/series?metric=n&{span}", "to"),
            ("/v1/views/per_minute", "from"),  # 8 groups to read, 5 allowed
        ):
            response = await client.get(url, headers=AUTH)
            assert response.status == 400, url
            assert (await response.json())["error"]["param"] == param
        narrow = await client.get("/v1/views/per_minute?country=FR&limit=2", headers=AUTH)
        assert narrow.status == 200  # 4 groups: within the cap
        assert e.registry.version == version


@pytest.mark.asyncio
async def test_live_streams_per_token_are_capped(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path, max_subscribers_per_token=1) as (client, _):
        first = await client.get("/v1/views/per_minute/subscribe", headers=AUTH)
        assert first.status == 200
        await first.content.readuntil(b"\n\n")
        second = await client.get("/v1/views/per_minute/subscribe", headers=AUTH)
        assert second.status == 429
        assert second.headers["Retry-After"] == "5"
        first.close()
