"""Your own events replayed by the load-test suite (``tallyd bench run ingest --events F``):
times moved to now keeping their spacing and their form, bodies due at the events' own pace,
and end to end the server counts exactly the events of the file."""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import orjson
import pytest

from api.demo import EXAMPLE
from benchmarks import load
from benchmarks.__main__ import SCENARIOS, own_events
from benchmarks.replay import build
from tests.helpers import fetch_all, running

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def write(path: Path, events: list[dict[str, object]]) -> Path:
    data = b"".join(orjson.dumps(e) + b"\n" for e in events) + b"\n"  # a blank last line
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def test_retime_keeps_the_spacing_and_each_time_s_form(tmp_path: Path) -> None:
    events: list[dict[str, object]] = [
        {"ts": T0, "n": 1},  # epoch ms
        {"ts": (T0 + 1_500) / 1000, "n": 2},  # epoch s, a float
        {"ts": "2023-11-14T23:13:23.000+01:00", "n": 3},  # RFC 3339 with an offset: T0 + 3 s
    ]
    path = write(tmp_path / "e.ndjson.gz", events)
    now = 1_790_000_000_000
    moved = build(path, 2, "ts", now, retime=True)
    assert moved.events == 3
    assert moved.due is None
    got = [orjson.loads(line) for body in moved.bodies for line in body.split(b"\n")]
    assert [len(body.split(b"\n")) for body in moved.bodies] == [2, 1]
    assert got[0] == {"ts": now, "n": 1}
    assert got[1] == {"ts": (now + 1_500) / 1000, "n": 2}
    assert got[2] == {"ts": "2026-09-21T14:13:23.000Z", "n": 3}  # now + 3 s, in UTC
    fast = build(path, 1, "ts", now, retime=True, speedup=10)
    assert fast.due == [0.0, 0.15, 0.3]  # 1.5 s and 3 s of their time, ten times faster
    assert orjson.loads(fast.bodies[2])["ts"] == "2026-09-21T14:13:20.300Z"
    plain = build(path, 10, "ts", now)  # neither: the lines as they are
    assert plain.bodies[0].split(b"\n")[0] == orjson.dumps(events[0])


def test_a_bad_time_names_the_line_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path / "e.ndjson", [{"ts": T0}, {"at": T0}, {"ts": "yesterday"}])
    with pytest.raises(ValueError, match=r"e.ndjson: line 2: field 'ts': absent"):
        build(path, 10, "ts", 0, retime=True)
    path = write(tmp_path / "f.ndjson", [{"ts": T0}, {"ts": "yesterday"}])
    with pytest.raises(ValueError, match=r"line 2: field 'ts': 'yesterday' is not an RFC 3339"):
        build(path, 10, "ts", 0, retime=True)


@pytest.mark.asyncio
async def test_the_server_counts_exactly_the_replayed_events(tmp_path: Path) -> None:
    statuses = ["paid", "paid", "refunded", "shipped"]
    events: list[dict[str, object]] = [
        {
            "ts": T0 + i * 250,
            "status": statuses[i % 4],
            "amount": i % 7,
            "country": "FR",
            "user_id": f"u{i}",
            "device": "ios",
            "product": "p1",
        }
        for i in range(300)
    ]
    path = write(tmp_path / "mine.ndjson.gz", events)
    args = argparse.Namespace(
        events=path,
        source="orders",
        rate=3000.0,
        speedup=None,
        batch=40,
        retime=True,
        time_field="ts",
        kafka=None,
        topic=None,
    )
    scenario = own_events(load.Scenario.load(SCENARIOS / "ingest.toml"), args)
    assert scenario.name == "ingest-mine"
    async with running(EXAMPLE.read_text(), tmp_path / "data") as (client, _):
        started = int(time.time() * 1000)
        result = await load.run(scenario, str(client.make_url("")).rstrip("/"))
        ingest = result["streams"]["ingest"]
        assert ingest["statuses"] == {"200": 8}  # 300 events in bodies of 40
        assert ingest["items"] == 300
        rows = await fetch_all(client, "/v1/views/order_status")
        assert {r["status"]: r["orders"] for r in rows} == {
            s: sum(1 for e in events if e["status"] == s) for s in set(statuses)
        }
        # retimed: the first event was "now" when the bodies were built, just before the run,
        # and the newest keeps its 74.75 s from it (spacing kept), not a date in 2023
        status = await (await client.get("/v1/status")).json()
        newest = status["sources"]["orders"]["watermark_ms"]
        assert started - 5_000 <= newest - 74_750 <= started
    assert result["generator_cpu"] > 0
