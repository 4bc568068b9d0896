"""Bad input gets a clear 4xx naming the problem, in the one error shape, and changes nothing."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import BASE_TS, IngestPath, ndjson, running
from views import snapshot
from views.timefmt import MIN_TIME

CONFIG = """
[sources.orders]
time = "ts"
fields = { user_id = "string" }

[views.per_minute]
sql = '''SELECT country, tumble(ts, '1 minute') AS minute, count(*) AS n, sum(amount) AS revenue,
         top_k(product, 3) AS top
         FROM orders WHERE status = 'paid' GROUP BY country, minute'''

[views.totals]
sql = "SELECT count(*) AS n, count_distinct(user_id) AS users FROM orders"
"""

GOOD = {
    "ts": BASE_TS,
    "country": "FR",
    "amount": 3.5,
    "status": "paid",
    "user_id": "u1",
    "product": "p1",
}


def line(**changes: Any) -> bytes:
    event = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in event.items() if v is not ...})


BAD_BODIES = [
    (line() + b"\n{not json\n", 2, None, "not valid JSON"),
    (line() + b"\n" + line(ts=...), 2, "ts", "missing"),
    (line(ts="yesterday"), 1, "ts", "not an RFC 3339 time"),
    (line(ts="2026-01-01T00:00:00"), 1, "ts", "no time zone"),
    (line(ts=True), 1, "ts", "epoch seconds, epoch milliseconds or an RFC 3339"),
    (line() + b"\n" + line() + b"\n" + line(amount="12"), 3, "amount", "expected a number"),
    (line(status=1), 1, "status", "expected a string, got number"),
    (line(user_id=7), 1, "user_id", "expected a string"),
    (line(country={"a": 1}), 1, "country", "expected a string, number or boolean, got object"),
    (line(product=[1]), 1, "product", "got array"),
    (b"[1, 2]", 1, None, "expected a JSON object, got number"),
    (b"[" + line() + b", " + line(amount=False) + b"]", 2, "amount", "got boolean"),
    (b'"just a string"', 1, None, "expected a JSON object"),
]


# Several bad lines in one body: each is named, with its line and field, in order.
SEVERAL = (
    b"\n".join([line(), line(amount="x"), line(ts=...), line(), b"{", line(status=[])]),
    [
        (2, "amount", "expected a number"),
        (3, "ts", "missing"),
        (5, None, "not valid JSON"),
        (6, "status", "expected a string"),
    ],
)


def sized(path: IngestPath, body: bytes) -> tuple[bytes, int]:
    """``body`` on ``path``, and how many lines (array items) come before it: as it is (rows),
    or after enough good lines to make the whole a column-wise body (columns), which the
    column reader must decline and the row decoder then name, line by line."""
    if not path.columns:
        return body, 0
    good = path.body(path.events([GOOD]))
    lines = good.count(b"\n")
    if body.lstrip().startswith(b"["):  # a JSON array: good items before its own
        return b"[" + b",".join(good.splitlines()) + b"," + body.lstrip()[1:], lines
    return good + body, lines


async def _snapshot_of(engine: Any, data_dir: Path) -> tuple[bytes, int]:
    wal = sum(p.stat().st_size for p in (data_dir / "wal").glob("*.log"))
    return snapshot.encode(engine.registry.to_state()), wal


async def _refused(client: Any, body: bytes) -> dict[str, Any]:
    response = await client.post("/v1/sources/orders/events", data=body)
    error: dict[str, Any] = (await response.json())["error"]
    assert response.status == 400, error
    assert error["status"] == 400
    return error


@pytest.mark.asyncio
async def test_invalid_bodies_name_line_and_field_and_apply_nothing(
    tmp_path: Path, ingest_path: IngestPath
) -> None:
    ingest_path.declines = True
    async with running(CONFIG, tmp_path) as (client, engine):
        assert (await client.post("/v1/sources/orders/events", data=line())).status == 200
        before = await _snapshot_of(engine, tmp_path)
        for bad, number, field, reason in BAD_BODIES:
            body, shift = sized(ingest_path, bad)
            error = await _refused(client, body)
            first = error["errors"][0]
            assert (first["line"], first["field"]) == (number + shift, field), (bad, error)
            assert reason in first["reason"], (reason, first)
            assert f"line {number + shift}" in error["message"]
            assert "nothing was applied" in error["message"]
            assert await _snapshot_of(engine, tmp_path) == before
        bad, named = SEVERAL
        body, shift = sized(ingest_path, bad)
        error = await _refused(client, body)
        assert error["invalid_lines"] == len(named)
        assert error["message"].startswith(f"{len(named)} of {bad.count(b'{') + shift} lines")
        got = [(e["line"], e["field"]) for e in error["errors"]]
        assert got == [(number + shift, field) for number, field, _ in named]
        for (_, _, reason), e in zip(named, error["errors"], strict=True):
            assert reason in e["reason"], (reason, e)
        assert await _snapshot_of(engine, tmp_path) == before


@pytest.mark.asyncio
async def test_both_paths_name_bad_lines_in_the_same_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column-wise body falls back to the row decoder to name its bad lines: the errors are
    those of the same lines in a small body, word for word, only numbered on."""
    spy = IngestPath("columns", declines=True)
    spy.install(monkeypatch)
    async with running(CONFIG, tmp_path) as (client, _):
        for bad in [*(b for b, *_ in BAD_BODIES), SEVERAL[0]]:
            small = await _refused(client, bad)
            offered = len(spy.read)
            large, shift = sized(spy, bad)
            error = await _refused(client, large)
            assert spy.read[offered:] == [False]  # the column reader saw it, and declined
            renumbered = [{**e, "line": e["line"] + shift} for e in small["errors"]]
            assert error["errors"] == renumbered
            first = renumbered[0]
            field = f", field '{first['field']}'" if first["field"] else ""
            assert error["message"].endswith(
                f"first: line {first['line']}{field}: {first['reason']}"
            )
            assert small["message"].endswith(f": {first['reason']}")
    spy.check()


@pytest.mark.asyncio
async def test_size_limits(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path, max_body_bytes=4000, max_line_bytes=300) as (
        client,
        engine,
    ):
        before = await _snapshot_of(engine, tmp_path)
        big = b"\n".join([line()] * 60)
        response = await client.post("/v1/sources/orders/events", data=big)
        assert response.status == 413
        assert "max_body_bytes" in (await response.json())["error"]["message"]
        bomb = gzip.compress(big)  # small on the wire, too big once inflated
        assert len(bomb) < 4000
        response = await client.post(
            "/v1/sources/orders/events", data=bomb, headers={"Content-Encoding": "gzip"}
        )
        assert response.status == 413
        long_line = line(product="x" * 400)
        response = await client.post("/v1/sources/orders/events", data=long_line)
        assert response.status == 400
        assert "longer than 300 bytes" in (await response.json())["error"]["errors"][0]["reason"]
        assert await _snapshot_of(engine, tmp_path) == before


@pytest.mark.asyncio
async def test_skip_applies_good_lines_and_keeps_the_rest(
    tmp_path: Path, ingest_path: IngestPath
) -> None:
    ingest_path.declines = True  # a body with bad lines is never read column-wise
    bad = b"\n".join([line(), line(amount="x"), b"", line(user_id="u2"), b"{"])
    body, shift = sized(ingest_path, bad)
    async with running(CONFIG, tmp_path) as (client, _):
        response = await client.post("/v1/sources/orders/events?on_error=skip", data=body)
        answer = await response.json()
        assert response.status == 200
        assert (answer["accepted"], answer["rejected"]) == (shift + 2, 2)
        assert answer["position"] == "wal:1"
        totals = await (await client.get("/v1/views/totals")).json()
        assert totals["rows"] == [{"n": shift + 2, "users": 2}]
        kept = await (await client.get("/v1/sources/orders/rejected")).json()
        assert kept["rejected"] == 2
        assert [(e["line"], e["field"]) for e in kept["events"]] == [
            (shift + 5, None),
            (shift + 2, "amount"),
        ]
        assert kept["events"][1]["text"] == line(amount="x").decode()


QUERIES = [
    ("/v1/views/nope", 404, "no view named 'nope'"),
    ("/v1/sources/nope/rejected", 404, "no source named 'nope'"),
    ("/v1/nothing", 404, "no such endpoint"),
    ("/v1/views/per_minute?limit=0", 400, "parameter 'limit'"),
    ("/v1/views/per_minute?limit=ten", 400, "parameter 'limit'"),
    ("/v1/views/per_minute?limit=100000", 400, "exceeds the maximum of 10000"),
    ("/v1/views/per_minute?limit=1&limit=2", 400, "given more than once"),
    ("/v1/views/per_minute?bucket=7x", 400, "parameter 'bucket'"),
    ("/v1/views/per_minute?bucket=90s", 400, "multiple of the window"),
    ("/v1/views/totals?bucket=1h", 400, "has no time window"),
    ("/v1/views/per_minute?order_by=-nope", 400, "cannot order by 'nope'"),
    ("/v1/views/per_minute?order_by=top", 400, "is a list and has no order"),
    ("/v1/views/per_minute?group_by=status", 400, "not a group key"),
    ("/v1/views/per_minute?columns=n,nope", 400, "no column 'nope'"),
    ("/v1/views/per_minute?from=yesterday", 400, "parameter 'from'"),
    ("/v1/views/per_minute?from=2000&to=1000", 400, "parameter 'to': is before 'from'"),
    ("/v1/views/per_minute?cursor=abc", 400, "parameter 'cursor'"),
    ("/v1/views/per_minute?format=xml", 400, "parameter 'format'"),
    ("/v1/views/per_minute?contry=FR", 400, "parameter 'contry': unknown parameter"),
    ("/v1/views/per_minute/late?limit=0", 400, "parameter 'limit'"),
    ("/v1/views?x=1", 400, "parameter 'x'"),
]


@pytest.mark.asyncio
async def test_bad_queries(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        for path, status, message in QUERIES:
            response = await client.get(path)
            body = await response.json()
            assert response.status == status, (path, body)
            assert body["error"]["status"] == status
            assert message in body["error"]["message"], (path, body)
        # a cursor only works for the query that issued it
        await client.post(
            "/v1/sources/orders/events", data=b"\n".join(line(country=c) for c in "ABCDEF")
        )
        page = await (await client.get("/v1/views/per_minute?limit=2")).json()
        response = await client.get(
            f"/v1/views/per_minute?limit=2&country=A&cursor={page['next_cursor']}"
        )
        assert response.status == 400
        assert "different query" in (await response.json())["error"]["message"]
        response = await client.get("/v1/sources/orders/events")
        assert response.status == 405
        assert (await response.json())["error"]["message"] == "method GET not allowed here"
        response = await client.post("/v1/sources/orders/events?on_error=ignore", data=line())
        assert response.status == 400


@pytest.mark.asyncio
async def test_internal_errors_never_leak_and_carry_the_id_the_log_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: object) -> None:
        raise RuntimeError("secret: /etc/passwd at 0xdeadbeef")

    monkeypatch.setattr("views.query.run", explode)  # what the query handler calls
    caplog.set_level(logging.ERROR, logger="tallyd.api")
    ids = []
    async with running(CONFIG, tmp_path) as (client, _):
        for _ in range(2):
            response = await client.get("/v1/views/totals")
            text = await response.text()
            assert response.status == 500
            for internal in ("secret", "passwd", "RuntimeError", "Traceback", "explode"):
                assert internal not in text, internal
            error = orjson.loads(text)["error"]
            assert error.keys() == {"status", "message", "error_id"}
            assert (error["status"], error["message"]) == (500, "internal error")
            assert re.fullmatch(r"[0-9a-f]{12}", error["error_id"]), error
            ids.append(error["error_id"])
    assert ids[0] != ids[1]  # one id per failure, to find it in the log
    logged = [r for r in caplog.records if r.name == "tallyd.api" and r.levelno >= logging.ERROR]
    assert [r.getMessage().split()[1] for r in logged] == [f"id={i}" for i in ids]
    for record in logged:  # the log, not the answer, has what went wrong
        assert record.exc_info is not None
        assert "secret: /etc/passwd" in str(record.exc_info[1])
        assert "path=/v1/views/totals" in record.getMessage()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "ts", [-281_474_976_710_656, -62_135_596_800_001, 1e300, "0001-01-01T00:30:00+01:00"]
)
async def test_times_outside_the_years_1_to_9999_are_refused_naming_line_and_field(
    tmp_path: Path, ingest_path: IngestPath, ts: Any
) -> None:
    """A time an answer could not write (a negative epoch far back, a float past every year, a
    year-1 time whose offset puts it in year 0): refused with its line and field, nothing
    applied. Accepted before: the view kept a bucket no query could format (a 500 on every
    read), or with fine windows a bucket code that wrapped round its int64 silently."""
    ingest_path.declines = True
    now = int(time.time() * 1000)
    events = ingest_path.events([{"ts": now - i, "country": "FR"} for i in range(3)])
    async with running(CONFIG, tmp_path) as (client, engine):
        body = ingest_path.body([events[0], {"ts": ts, "country": "FR"}, *events[1:]])
        error = await _refused(client, body)
        (problem,) = error["errors"]
        assert (problem["line"], problem["field"]) == (2, "ts")
        assert "outside the times tallyd keeps" in problem["reason"]
        assert engine.registry.version == 0
        edge = [{**GOOD, "ts": "0001-01-01T00:00:00Z"}]  # the first time kept: answered
        ok = await client.post("/v1/sources/orders/events", data=ndjson(edge))
        assert ok.status == 200, await ok.text()
        answer = await client.get("/v1/views/per_minute")
        assert answer.status == 200, await answer.text()
        rows = (await answer.json())["rows"]
        assert [(r["minute"], r["n"]) for r in rows] == [("0001-01-01T00:00:00.000Z", 1)]


@pytest.mark.asyncio
async def test_events_from_the_future_are_refused_naming_line_and_field(
    tmp_path: Path, ingest_path: IngestPath
) -> None:
    ingest_path.declines = True
    now = int(time.time() * 1000)
    events = ingest_path.events([{"ts": now - i, "country": "FR"} for i in range(3)])
    ahead = {"ts": now + 2 * 3_600_000, "country": "FR"}
    async with running(CONFIG, tmp_path, max_future="1h") as (client, engine):
        for at in (len(events), 0):  # last, and first
            body = ingest_path.body([*events[:at], ahead, *events[at:]])
            error = await _refused(client, body)
            (problem,) = error["errors"]
            assert problem["line"] == at + 1
            assert problem["field"] == "ts"
            assert "ahead of the server's clock" in problem["reason"]
            assert engine.registry.version == 0  # nothing applied, the watermark not moved
        ok = await client.post("/v1/sources/orders/events", data=ndjson(events[:1]))
        assert ok.status == 200
        assert engine.registry.sources["orders"].watermarks[""] == events[0]["ts"]


@pytest.mark.asyncio
async def test_a_batch_a_view_cannot_place_is_counted_and_writes_go_on(tmp_path: Path) -> None:
    """1 ms windows, 2**17 keys in year 1, then an event of 2026: its pair code would not fit
    the view's int64 (``views.state._fits``). The batch is not applied to the view — the answer
    and ``/v1/status`` say ``out_of_range`` — and the server goes on taking writes (before, the
    applier died on the error, and every later request waited forever)."""
    config = """
[sources.s]
time = "ts"

[views.fine]
sql = "SELECT k, tumble(ts, '1 millisecond') AS m, count(*) AS n FROM s GROUP BY k, m"
grace = "1000000d"
"""
    first = [{"ts": MIN_TIME + i % 1000, "k": i} for i in range(1 << 17)]
    async with running(config, tmp_path) as (client, _engine):
        ok = await client.post("/v1/sources/s/events", data=io.BytesIO(ndjson(first)))
        assert ok.status == 200, await ok.text()
        late_comer = ndjson([{"ts": 1_790_000_000_000, "k": 0}])
        answer = await asyncio.wait_for(client.post("/v1/sources/s/events", data=late_comer), 30)
        assert answer.status == 200, await answer.text()
        fine = (await answer.json())["views"]["fine"]
        assert (fine["applied"], fine["out_of_range"], fine["filtered"]) == (0, 1, 0)
        near = ndjson([{"ts": MIN_TIME + 5, "k": 1}])
        answer = await asyncio.wait_for(client.post("/v1/sources/s/events", data=near), 30)
        assert answer.status == 200, await answer.text()
        assert (await answer.json())["views"]["fine"]["applied"] == 1
        status = await (await client.get("/v1/status")).json()
        assert status["views"]["fine"]["out_of_range"] == 1
