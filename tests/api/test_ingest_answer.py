"""The ingest answer says what the events did to each view: a 200 whose events were all late,
or all filtered out by a WHERE, must not look like one that moved every chart (issue 14, 5)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from api import demo
from tests.helpers import BASE_TS, ndjson, running
from views.timefmt import format_time

CONFIG = """
[sources.orders]
time = "ts"
fields = { status = "string" }

[views.per_minute]
sql = "SELECT tumble(ts, '1 minute') AS minute, count(*) AS n FROM orders GROUP BY minute"
grace = "30s"

[views.paid]
sql = "SELECT count(*) AS n FROM orders WHERE status = 'paid'"
"""
T = BASE_TS - BASE_TS % 60_000 + 45_000
SMALL, LARGE = 1, 3_000  # LARGE: over 256 KiB and 2,000 lines, the column-wise path


def body(ts: int, status: str, n: int) -> bytes:
    pad = "x" * 100  # so LARGE lines add up past the column-wise threshold
    return ndjson([{"ts": ts, "status": status, "pad": pad} for _ in range(n)])


@pytest.mark.asyncio
@pytest.mark.parametrize("n", [SMALL, LARGE])
async def test_the_answer_says_per_view_what_was_applied_late_and_filtered(
    tmp_path: Path, n: int
) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        first = await client.post("/v1/sources/orders/events", data=body(T, "paid", n))
        assert (await first.json())["views"] == {
            "per_minute": {"applied": n, "late": 0, "filtered": 0},
            "paid": {"applied": n, "late": 0, "filtered": 0},
        }
        # 60 s before the watermark: past the 30 s grace of per_minute; paid has no window
        old = await client.post("/v1/sources/orders/events", data=body(T - 60_000, "failed", n))
        answer = await old.json()
        assert old.status == 200, answer
        assert answer["accepted"] == n
        assert answer["views"] == {
            "per_minute": {
                "applied": 0,
                "late": n,
                "filtered": 0,
                "late_before": format_time(T - 30_000),
                "watermark": format_time(T),
                "grace": "30s",
            },
            "paid": {"applied": 0, "late": 0, "filtered": n},
        }


@pytest.mark.asyncio
async def test_a_retry_gets_the_first_answer_with_its_views(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        headers = {"Idempotency-Key": "k1"}
        data = body(T, "paid", 2)
        first = await (
            await client.post("/v1/sources/orders/events", data=data, headers=headers)
        ).json()
        again = await client.post("/v1/sources/orders/events", data=data, headers=headers)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert await again.json() == first
        assert first["views"]["paid"] == {"applied": 2, "late": 0, "filtered": 0}


def _post_command(printed: str) -> str:
    """The demo's printed example POST: the ``echo ... |`` line and the ``curl`` under it."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("echo "))
    return lines[start].strip() + " " + lines[start + 1].split("#")[0].strip()


@pytest.mark.asyncio
async def test_the_demo_example_pasted_minutes_later_is_not_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Path(demo.EXAMPLE).read_text()
    async with running(config, tmp_path) as (client, _):
        now = int(time.time() * 1000)
        order = {"ts": now, "country": "DE", "status": "paid", "amount": 1, "user_id": "u"}
        await client.post("/v1/sources/orders/events", data=ndjson([order]))  # the watermark
        base = str(client.make_url("")).rstrip("/")
        with monkeypatch.context() as patched:  # printed five minutes before it is pasted
            patched.setattr(time, "time", lambda: now / 1000 - 300)
            printed = demo.examples(base)
        shell = await asyncio.create_subprocess_shell(
            _post_command(printed), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(shell.communicate(), 30)
        answer: dict[str, Any] = orjson.loads(out)
        assert answer["accepted"] == 1
        assert answer["views"]["revenue_by_country"]["applied"] == 1, answer
        assert all(v["late"] == 0 for v in answer["views"].values()), answer
