"""Views changed on a running server (issue 17, the part without backfill): ``POST
/v1/admin/config`` (``tallyd apply``) and SIGHUP apply a config whose changes can be made live
— views added (they start empty), removed (their state goes), their options changed — in one
step, then snapshot, so that a restart with the new file starts from the applied state. A change
that cannot be made live is refused with the reasons and changes nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.server import ServerProcess
from tests.helpers import BASE_TS, ndjson, running, until

CONFIG = """
[sources.orders]
time = "ts"

[views.by_country]
sql = "SELECT country, count(*) AS n, sum(amount) AS total FROM orders GROUP BY country"

[views.by_status]
sql = "SELECT status, count(*) AS n FROM orders GROUP BY status"
"""
# by_status removed, by_device added (it reads no field the source does not check already)
NEW = CONFIG[: CONFIG.index("[views.by_status]")] + (
    '[views.by_device]\nsql = "SELECT country AS c, count(*) AS n FROM orders GROUP BY c"\n'
)


def orders(start: int, n: int) -> list[dict[str, Any]]:
    countries = ["FR", "DE", "DE"]
    return [
        {"ts": BASE_TS + start + i, "country": countries[i % 3], "amount": i, "status": "paid"}
        for i in range(n)
    ]


def counts(events: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e["country"]] = out.get(e["country"], 0) + 1
    return out


@pytest.mark.asyncio
async def test_a_view_added_and_one_removed_live_then_kept_by_a_restart(tmp_path: Path) -> None:
    before, after = orders(0, 30), orders(1000, 20)
    async with running(CONFIG, tmp_path / "data") as (client, engine):
        r = await client.post("/v1/sources/orders/events", data=ndjson(before))
        assert r.status == 200
        r = await client.get("/v1/status")
        taken = (await r.json())["snapshot"]["file"]
        source = engine.sources["orders"]
        r = await client.post("/v1/admin/config", data=NEW)
        answer = await r.json()
        assert r.status == 200, answer
        # by_status took the field status with it; the source is not restarted for that
        assert engine.sources["orders"] is source
        # the applied state is snapshotted at once: a crash right after restarts from here
        r = await client.get("/v1/status")
        assert (await r.json())["snapshot"]["file"] not in (None, taken)
        assert answer["file"] is not None  # the server's file still holds the old config
        actions = {(c["name"], c["action"]) for c in answer["applied"]["changes"]}
        assert actions == {("by_device", "add"), ("by_status", "remove")}
        r = await client.get("/v1/views/by_status")
        assert r.status == 404
        r = await client.get("/v1/views/by_device")
        assert (await r.json())["rows"] == []  # starts empty: nothing before the apply
        r = await client.post("/v1/sources/orders/events", data=ndjson(after))
        assert r.status == 200
        r = await client.get("/v1/views/by_device")
        got = {row["c"]: row["n"] for row in (await r.json())["rows"]}
        assert got == counts(after)
        r = await client.get("/v1/views/by_country")
        kept = {row["country"]: row["n"] for row in (await r.json())["rows"]}
        assert kept == counts(before + after)  # unchanged views keep counting
    # a restart with the new file: the same state, from the apply's snapshot and the log after
    async with running(NEW, tmp_path / "data") as (client, _):
        r = await client.get("/v1/views/by_device")
        assert {row["c"]: row["n"] for row in (await r.json())["rows"]} == counts(after)
        r = await client.get("/v1/views/by_country")
        assert {row["country"]: row["n"] for row in (await r.json())["rows"]} == counts(
            before + after
        )


@pytest.mark.asyncio
async def test_a_change_that_cannot_be_made_live_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    changed_sql = CONFIG.replace("GROUP BY status", "WHERE amount > 3 GROUP BY status")
    retimed = CONFIG.replace('time = "ts"', 'time = "at"')
    new_field = NEW.replace("country AS c", "device AS c")  # device: a field not checked now
    async with running(CONFIG, tmp_path / "data") as (client, _):
        r = await client.post("/v1/sources/orders/events", data=ndjson(orders(0, 10)))
        assert r.status == 200
        for text, reason in (
            (changed_sql, "view by_status: its SQL changed"),
            (retimed, "source orders: its kind, format, time field or declared field types"),
            (new_field, "source orders: the new views read device:"),
            ("[views", "not valid TOML"),
            (CONFIG.replace("count(*) AS n FROM orders GROUP BY status", "nonsense"), "view"),
        ):
            r = await client.post("/v1/admin/config", data=text)
            answer = await r.json()
            assert r.status in (400, 409), answer
            assert reason in answer["error"]["message"], answer
        r = await client.get("/v1/views")
        assert sorted(v["name"] for v in (await r.json())["views"]) == ["by_country", "by_status"]
        r = await client.get("/v1/views/by_status")
        assert (await r.json())["rows"] == [{"status": "paid", "n": 10}]


@pytest.mark.asyncio
async def test_sighup_rereads_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "tallyd.toml"
    path.write_text(CONFIG)
    server = ServerProcess(path, tmp_path / "data", tmp_path / "server.log")
    await server.start()
    try:
        path.write_text(NEW)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        async with aiohttp.ClientSession() as session:

            async def views() -> list[str]:
                while True:
                    async with session.get(f"{server.url}/v1/views") as r:
                        names = sorted(v["name"] for v in (await r.json())["views"])
                    if names != ["by_country", "by_status"]:
                        return names
                    await asyncio.sleep(0.05)  # polling a condition, bounded by wait_for

            assert await asyncio.wait_for(views(), 10) == ["by_country", "by_device"]
    finally:
        assert server.terminate() == 0
    assert "event=config_applied" in (tmp_path / "server.log").read_text()


@pytest.mark.asyncio
async def test_sources_added_removed_and_restarted_live(tmp_path: Path) -> None:
    """A source added live takes events at once; one removed goes with its views (404); a file
    source whose path changed is restarted on its own, its state kept, reading the new path."""
    logs, more = tmp_path / "logs", tmp_path / "more"
    logs.mkdir()
    more.mkdir()
    (logs / "a.ndjson").write_bytes(ndjson(orders(0, 6)))
    (more / "b.ndjson").write_bytes(ndjson(orders(100, 4)))
    files = (
        f'\n[sources.files]\nfrom = "file"\npath = "{logs / "*.ndjson"}"\nfollow = true\n'
        'time = "ts"\n\n[views.file_n]\nsql = "SELECT count(*) AS n FROM files"\n'
    )
    clicks = (
        '\n[sources.clicks]\ntime = "ts"\n\n[views.click_n]\n'
        'sql = "SELECT count(*) AS n FROM clicks"\n'
    )
    async with running(CONFIG + files, tmp_path / "data") as (client, _):

        async def file_count(n: int) -> bool:
            r = await client.get("/v1/views/file_n")
            rows = (await r.json())["rows"]
            return bool(rows) and rows[0]["n"] == n

        await until(lambda: file_count(6), 20)
        r = await client.post("/v1/sources/clicks/events", data=ndjson(orders(0, 3)))
        assert r.status == 404
        moved = (CONFIG + files).replace(str(logs / "*.ndjson"), str(more / "*.ndjson"))
        r = await client.post("/v1/admin/config", data=moved + clicks)
        answer = await r.json()
        assert r.status == 200, answer
        actions = {(c["kind"], c["name"], c["action"]) for c in answer["applied"]["changes"]}
        assert ("source", "clicks", "add") in actions
        assert ("source", "files", "change") in actions
        r = await client.post("/v1/sources/clicks/events", data=ndjson(orders(0, 3)))
        assert r.status == 200
        r = await client.get("/v1/views/click_n")
        assert (await r.json())["rows"] == [{"n": 3}]
        await until(lambda: file_count(6 + 4), 20)  # kept 6, read the new path's 4
        r = await client.post("/v1/admin/config", data=CONFIG + files)  # clicks removed
        assert r.status == 200
        r = await client.post("/v1/sources/clicks/events", data=ndjson(orders(0, 3)))
        assert r.status == 404
        assert (await client.get("/v1/views/click_n")).status == 404
        r = await client.get("/v1/status")
        assert sorted((await r.json())["sources"]) == ["files", "orders"]
