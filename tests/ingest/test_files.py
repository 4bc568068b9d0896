"""The file source: NDJSON and CSV, globs, follow, and positions that survive restarts and
crashes so no line is skipped or counted twice."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.files import complete_lines
from tests.helpers import BASE_TS, fetch_all, running, until


def config(directory: Path, follow: bool = True, fmt: str = "ndjson") -> str:
    fields = 'fields = { ts = "number", amount = "number", k = "string" }' if fmt == "csv" else ""
    pattern = "*.csv" if fmt == "csv" else "*.ndjson"
    return f"""
[sources.logs]
from = "file"
path = "{directory / pattern}"
format = "{fmt}"
follow = {str(follow).lower()}
time = "ts"
{fields}

[views.by_key]
sql = "SELECT k, count(*) AS n, sum(amount) AS total FROM logs GROUP BY k"
"""


def lines(first: int, n: int) -> bytes:
    return b"".join(
        orjson.dumps({"ts": BASE_TS + i, "k": "abc"[i % 3], "amount": i}) + b"\n"
        for i in range(first, first + n)
    )


def expected(ids: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "k": k,
            "n": sum(1 for i in ids if "abc"[i % 3] == k),
            "total": sum(i for i in ids if "abc"[i % 3] == k),
        }
        for k in "abc"
    ]


async def settle(engine: Any, want: dict[str, int], timeout: float = 20) -> None:
    async def reached() -> bool:
        return bool(engine.registry.sources["logs"].positions == want)

    await until(reached, timeout)


def test_complete_lines_waits_for_a_partial_last_line() -> None:
    data = b'{"a":1}\r\n\n{"b":2}\n{"c"'
    assert complete_lines(data, 100, final=False) == [
        (100, b'{"a":1}', 109),
        (109, b"", 110),
        (110, b'{"b":2}', 118),
    ]
    assert complete_lines(data, 100, final=True)[-1] == (118, b'{"c"', 122)


@pytest.mark.asyncio
async def test_files_follow_restart_and_crash_count_each_line_once(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    one, two = inputs / "a.ndjson", inputs / "b.ndjson"
    one.write_bytes(lines(0, 300))
    two.write_bytes(lines(300, 200) + b"{broken\n" + b'{"k": "a"}\n')
    text = config(inputs)
    live = tmp_path / "live"
    async with running(text, live) as (client, engine):
        await settle(engine, {str(one): one.stat().st_size, str(two): two.stat().st_size})
        assert await fetch_all(client, "/v1/views/by_key") == expected(list(range(500)))
        kept = await (await client.get("/v1/sources/logs/rejected")).json()
        assert [(e["part"], e["offset"], e["field"]) for e in kept["events"]] == [
            (str(two), len(lines(300, 200)) + 8, "ts"),
            (str(two), len(lines(300, 200)), None),
        ]
        await client.post("/v1/admin/snapshot")  # the crash image below holds this snapshot...
        with one.open("ab") as f:  # ...and the lines appended after it, which must be re-read
            f.write(lines(500, 100))
            f.write(b'{"ts": 1, "k": "a", "amou')  # a partial line: waits for its end
        await settle(engine, {str(one): one.stat().st_size - 25, str(two): two.stat().st_size})
        shutil.copytree(live, tmp_path / "image")
        with one.open("ab") as f:
            f.write(b'nt": 2}\n')
        await settle(engine, {str(one): one.stat().st_size, str(two): two.stat().st_size})
        everything = expected(list(range(600)))
        everything[0] = {"k": "a", "n": everything[0]["n"] + 1, "total": everything[0]["total"] + 2}
        assert await fetch_all(client, "/v1/views/by_key") == everything
    async with running(text, live) as (client, engine):  # graceful restart: nothing re-read
        assert await fetch_all(client, "/v1/views/by_key") == everything
    async with running(text, tmp_path / "image") as (client, engine):  # crash: resume at snapshot
        await settle(engine, {str(one): one.stat().st_size, str(two): two.stat().st_size})
        assert await fetch_all(client, "/v1/views/by_key") == everything


@pytest.mark.asyncio
async def test_csv_and_a_truncated_file(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    data = inputs / "a.csv"
    data.write_text(
        "ts,k,amount\n"
        + "".join(f"{BASE_TS + i},{'abc'[i % 3]},{i}\n" for i in range(90))
        + f"{BASE_TS},a,lots\n"
    )
    async with running(config(inputs, follow=False, fmt="csv"), tmp_path / "d") as (client, eng):
        await settle(eng, {str(data): data.stat().st_size})
        assert await fetch_all(client, "/v1/views/by_key") == expected(list(range(90)))
        kept = await (await client.get("/v1/sources/logs/rejected")).json()
        assert "column 'amount': 'lots' is not a number" in kept["events"][0]["reason"]
    data.write_text("ts,k,amount\n")  # replaced by a shorter file
    async with running(config(inputs, follow=False, fmt="csv"), tmp_path / "d") as (client, _):

        async def unhealthy() -> bool:
            return (await client.get("/readyz")).status == 503

        await until(unhealthy, 20)
        body = await (await client.get("/readyz")).json()
        error = body["error"]["sources"]["logs"]["files"][str(data)]["error"]
        assert "shorter than its saved position" in error
        assert await fetch_all(client, "/v1/views/by_key") == expected(list(range(90)))
