"""/metrics parses as Prometheus text, its key series move with events; /v1/status agrees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import MINUTE_CONFIG, minute_orders, running


async def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.mark.asyncio
async def test_metrics_parse_and_move_with_events(tmp_path: Path) -> None:
    async with running(MINUTE_CONFIG, tmp_path) as (client, _):
        before = await scrape(client)
        src = (("source", "orders"),)
        view = (("view", "per_minute"),)
        assert before[("tallyd_events_accepted_total", src)] == 0
        assert before[("tallyd_view_pairs", view)] == 0
        body = minute_orders([(m, c, 1.0) for m in range(3) for c in ("FR", "DE")])
        await client.post("/v1/sources/orders/events", data=body)
        await client.get("/v1/views/per_minute")
        await client.post("/v1/admin/snapshot")
        after = await scrape(client)
        assert after[("tallyd_events_accepted_total", src)] == 6
        assert after[("tallyd_view_pairs", view)] == 6
        assert after[("tallyd_view_groups", view)] == 2
        assert after[("tallyd_view_state_bytes", view)] > 0
        assert after[("tallyd_batch_events_count", src)] == 1
        assert after[("tallyd_batch_events_sum", src)] == 6
        query = (("route", "GET /v1/views/{view}"), ("status", "2xx"))
        assert after[("tallyd_request_seconds_count", query)] == 1
        assert after[("tallyd_freshness_lag_seconds", src)] > 0  # test events are in the past
        assert after[("tallyd_snapshot_bytes", ())] > 0
        assert after[("tallyd_snapshot_age_seconds", ())] >= 0
        assert after[("tallyd_wal_bytes", ())] >= 0
        assert before[("tallyd_wal_commits_total", ())] == 0
        assert after[("tallyd_wal_commits_total", ())] == 1  # one body, one group commit
        assert after[("tallyd_wal_committed_bytes_total", ())] > len(body)  # with its header
        assert after[("tallyd_wal_commit_seconds_total", ())] > 0
        assert after[("tallyd_answer_cache_misses_total", ())] >= 1
        status = await (await client.get("/v1/status")).json()
        assert status["sources"]["orders"]["accepted"] == 6
        assert status["views"]["per_minute"]["pairs"] == 6
        assert status["snapshot"]["file"].startswith("snapshot-")
