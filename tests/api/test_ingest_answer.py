"""The ingest answer says what the events did to each view: a 200 whose events were all late,
or all filtered out by a WHERE, must not look like one that moved every chart (issue 14, 5)."""

from __future__ import annotations

import asyncio
import random
import time
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from api import demo
from ingest.http import outcomes
from tests import reference as ref
from tests.helpers import BASE_TS, IngestPath, ndjson, record_groups, running, until
from views.config import parse
from views.query import all_rows
from views.registry import Batch, Registry
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


def body(ts: int, status: str, n: int) -> bytes:
    return ndjson([{"ts": ts, "status": status} for _ in range(n)])


async def post(client: Any, data: bytes, **headers: str) -> Any:
    response = await client.post("/v1/sources/orders/events", data=data, headers=headers)
    answer = await response.json()
    assert response.status == 200, answer
    return answer


@pytest.mark.asyncio
async def test_the_answer_says_per_view_what_was_applied_late_and_filtered(
    tmp_path: Path, ingest_path: IngestPath
) -> None:
    first = ingest_path.events([{"ts": T, "status": "paid"}])
    # per_minute has 30 s of grace: T - 30 s, exactly at the edge, is on time; a millisecond
    # before it and a minute before it are late. paid has no window: nothing is late there.
    second = ingest_path.events(
        [{"ts": T - d, "status": "failed"} for d in (30_000, 30_001, 60_000)]
    )
    on_time, late = ref.judge_late(
        [[{**e, "_ts": e["ts"]} for e in batch] for batch in (first, second)], 30_000
    )
    assert 0 < len(on_time) - len(first) < len(second)  # some of the second batch each way
    async with running(CONFIG, tmp_path) as (client, _):
        answer = await post(client, ingest_path.body(first))
        assert answer["views"] == {
            "per_minute": {"applied": len(first), "late": 0, "filtered": 0},
            "paid": {"applied": len(first), "late": 0, "filtered": 0},
        }
        answer = await post(client, ingest_path.body(second))
        assert answer["accepted"] == len(second)
        assert answer["views"] == {
            "per_minute": {
                "applied": len(on_time) - len(first),
                "late": len(late),
                "filtered": 0,
                "late_before": format_time(T - 30_000),
                "watermark": format_time(T),
                "grace": "30s",
            },
            "paid": {"applied": 0, "late": 0, "filtered": len(second)},
        }


@pytest.mark.asyncio
async def test_a_retry_gets_the_first_answer_with_its_views(
    tmp_path: Path, ingest_path: IngestPath
) -> None:
    events = ingest_path.events([{"ts": T, "status": "paid"}] * 2)
    data = ingest_path.body(events)
    async with running(CONFIG, tmp_path) as (client, _):
        first = await post(client, data, **{"Idempotency-Key": "k1"})
        again = await client.post(
            "/v1/sources/orders/events", data=data, headers={"Idempotency-Key": "k1"}
        )
        assert again.headers["Idempotent-Replayed"] == "true"
        assert await again.json() == first
        assert first["views"]["paid"] == {"applied": len(events), "late": 0, "filtered": 0}


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


@pytest.mark.asyncio
async def test_a_body_of_many_invalid_lines_names_the_first_hundred(tmp_path: Path) -> None:
    """150 invalid lines: the answer counts them all, names the first and lists 100 (a bound on
    the answer's size), and nothing is applied."""
    lines = [{"ts": T, "status": 7} for _ in range(150)]  # status must be a string
    async with running(CONFIG, tmp_path) as (client, engine):
        response = await client.post("/v1/sources/orders/events", data=ndjson(lines))
        answer = await response.json()
        assert response.status == 400
        assert answer["error"]["message"].startswith(
            "150 of 150 lines are invalid, nothing was applied; first: line 1, field 'status'"
        )
        assert len(answer["error"]["errors"]) == 100
        assert engine.registry.sources["orders"].accepted == 0


@pytest.mark.asyncio
async def test_an_http_source_says_what_it_is_and_that_it_runs(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        answer = await (await client.get("/v1/sources")).json()
        (orders,) = answer["sources"]
        assert orders["status"] == {"kind": "http", "state": "running", "healthy": True}


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", [1, 2])
async def test_small_bodies_applied_as_one_group_answer_as_if_applied_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """90 small bodies posted at once (the test client has 100 connections), while the views are
    held, are logged and then applied as one group or a few: each answer says what applying the
    bodies one by one, in log order, says for it — its late events judged by the watermark
    after the bodies logged before it — and the views end as they would."""
    groups = record_groups(monkeypatch)
    rng = random.Random(seed)
    bodies = [
        [
            {"ts": T + rng.randrange(-60_000, 60_000), "status": rng.choice(["paid", "failed"])}
            for _ in range(rng.choice([1, 1, 2, 5]))
        ]
        for _ in range(90)
    ]
    data = [ndjson(events) for events in bodies]
    async with running(CONFIG, tmp_path) as (client, engine):
        async with engine.committer.step():  # the views held: every body is read and logged
            posts = [asyncio.create_task(post(client, body)) for body in data]

            async def all_read() -> bool:
                return engine.http.backlog == sum(len(body) for body in data)

            await until(all_read, 30)
        answers = await asyncio.gather(*posts)
        got = all_rows(engine.registry.views["per_minute"])
    assert max(groups) >= 23  # at most four groups: two queued, one waiting, the rest pending
    config = parse(tomllib.loads(CONFIG))
    one_by_one = Registry(config.sources, config.views)
    positions = [int(answer["position"].split(":")[1]) for answer in answers]
    for i in sorted(range(len(bodies)), key=positions.__getitem__):
        applied = one_by_one.apply(Batch("orders", [dict(e) for e in bodies[i]], positions[i]))
        assert answers[i]["views"] == outcomes(one_by_one, len(bodies[i]), applied)
    assert got == all_rows(one_by_one.views["per_minute"])
    assert sum(a["views"]["per_minute"]["late"] for a in answers) > 0  # lateness was judged


@pytest.mark.asyncio
async def test_groups_logged_while_the_views_are_held_are_applied_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The applier takes every group the log wrote while it waited for the views, in log order,
    in one apply — each body still told its own outcome."""
    bodies = [[{"ts": T + i, "status": "paid"} for i in range(n)] for n in (1, 2, 3)]
    async with running(CONFIG, tmp_path) as (client, engine):
        groups = record_groups(monkeypatch)  # from here: not the start's replay of nothing
        wal = engine.http.wal
        first_seq = wal.next_seq
        posts = []
        async with engine.committer.step():  # the views held
            for i, body in enumerate(bodies):  # each body logged alone: a group of its own
                posts.append(asyncio.create_task(post(client, ndjson(body))))

                async def logged(i: int = i) -> bool:
                    return bool(wal.next_seq >= first_seq + i + 1)

                await until(logged, 30)
        answers = await asyncio.wait_for(asyncio.gather(*posts), 30)
    assert groups == [3]  # three groups logged, one apply
    assert [a["views"]["per_minute"]["applied"] for a in answers] == [1, 2, 3]
    assert [int(a["position"].split(":")[1]) for a in answers] == [
        first_seq,
        first_seq + 1,
        first_seq + 2,
    ]
