"""The file source: NDJSON and CSV, globs, follow, and positions that survive restarts and
crashes so no line is skipped or counted twice."""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.files import complete_lines
from tests.api.test_backfill import to_ms
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


@pytest.mark.asyncio
async def test_a_view_added_live_fills_from_the_files_while_they_grow(tmp_path: Path) -> None:
    """Issue 17: a view added by ``POST /v1/admin/config`` reads every file again from its first
    line up to where the live views are — a chunk per step, while lines keep being appended —
    and joins them file by file: then it equals the plain-Python reference over every line, and
    a twin defined from the start."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    windowed = (
        "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, sum(x) AS total "
        "FROM f WHERE x IS NULL OR x > 2 GROUP BY k, m"
    )
    twin = f"""
[sources.f]
from = "file"
path = "{inputs / "*.ndjson"}"
follow = true
time = "ts"
fields = {{ k = "string", x = "number" }}

[views.twin]
sql = "{windowed}"
grace = "1h"
"""
    added = twin + f'\n[views.added]\nsql = "{windowed}"\ngrace = "1h"\n'
    rng = random.Random(4)
    written: list[dict[str, Any]] = []

    def append(path: Path, n: int) -> None:
        events = []
        for _ in range(n):
            event: dict[str, Any] = {"ts": BASE_TS + len(written) * 500, "k": rng.choice("ab")}
            if rng.random() < 0.8:
                event["x"] = rng.choice([None, rng.randint(0, 9)])
            events.append(event)
            written.append(event)
        with path.open("ab") as f:
            f.write(b"".join(orjson.dumps(e) + b"\n" for e in events))

    def reference() -> dict[tuple[str, int], tuple[int, Any]]:
        out: dict[tuple[str, int], list[Any]] = {}
        for e in written:
            x = e.get("x")
            if x is not None and x <= 2:
                continue
            row = out.setdefault((e["k"], e["ts"] // 60_000 * 60_000), [0, None])
            row[0] += 1
            if x is not None:
                row[1] = (row[1] or 0) + x
        return {key: (n, total) for key, (n, total) in out.items()}

    async def rows(view: str) -> dict[tuple[str, int], tuple[int, Any]]:
        got = await fetch_all(client, f"/v1/views/{view}")
        return {(r["k"], to_ms(r["m"])): (r["n"], r["total"]) for r in got}

    for name in ("a.ndjson", "b.ndjson"):
        append(inputs / name, 3000)
    async with running(twin, tmp_path / "d", backfill_chunk_bytes=20_000) as (client, engine):
        positions = engine.registry.sources["f"].positions

        async def caught_up() -> bool:  # every line written is applied live
            sizes = {str(p): p.stat().st_size for p in inputs.glob("*.ndjson")}
            return positions == sizes

        await until(caught_up, 30)
        r = await client.post("/v1/admin/config", data=added)
        assert r.status == 200, await r.text()
        for _ in range(10):  # lines keep coming while it reads (~15 steps a file)
            append(inputs / rng.choice(("a.ndjson", "b.ndjson")), 40)
            await asyncio.sleep(0.01)

        async def filled() -> bool:
            r = await client.get("/v1/views/added")
            return (await r.json())["freshness"]["backfilling"] is False

        await until(filled, 30)
        await until(caught_up, 30)
        expected = reference()
        assert await rows("added") == expected
        assert await rows("twin") == expected


@pytest.mark.asyncio
async def test_a_file_shortened_under_a_backfill_stops_it_and_says_so(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.ndjson").write_bytes(lines(0, 100))
    text = config(inputs)
    async with running(text, tmp_path / "d") as (client, engine):
        await settle(engine, {str(inputs / "a.ndjson"): len(lines(0, 100))})
        (inputs / "a.ndjson").write_bytes(lines(0, 10))  # shortened: its history is gone
        added = text + '\n[views.n]\nsql = "SELECT count(*) AS n FROM logs"\n'
        assert (await client.post("/v1/admin/config", data=added)).status == 200

        async def failed() -> bool:
            r = await client.get("/v1/views/n")
            return bool((await r.json())["freshness"]["backfill"]["failed"])

        await until(failed, 10)
        r = await client.get("/v1/views/n")
        why = (await r.json())["freshness"]["backfill"]["failed"]
        assert "a.ndjson is shorter than the position its views reached" in why
