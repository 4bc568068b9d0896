"""The load-test suite, behaviour only: every bundled scenario runs end to end in a tiny form and
writes its report; and a stall shows up in the percentiles (no coordinated omission)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import orjson
import pytest

from api.demo import EXAMPLE
from benchmarks import load, report
from benchmarks.shop import CONFIG as SHOP_CONFIG
from tests.helpers import running

SCENARIOS = [
    path
    for path in sorted(
        (Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios").glob("*.toml")
    )
    if path.stem != "shop-kafka"  # needs a broker: tests/kafka/test_bench_produce.py
]


def tiny(scenario: load.Scenario) -> load.Scenario:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in scenario.raw.items()}
    for name, rate in (("query", 40), ("ingest", 400), ("freshness", 4)):
        if name in raw:
            raw[name]["rate"] = rate
    if "ingest" in raw:
        raw["ingest"]["batch"] = 20
    if "subscribers" in raw:
        raw["subscribers"]["count"] = 8
    return dataclasses.replace(scenario, duration=0.5, raw=raw, connections=4)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
@pytest.mark.asyncio
async def test_scenario_runs_and_reports(path: Path, tmp_path: Path) -> None:
    scenario = tiny(load.Scenario.load(path))
    shop = path.stem.startswith("shop")  # the reference workload and its views
    config = (SHOP_CONFIG if shop else EXAMPLE).read_text()
    async with running(config, tmp_path / "data") as (client, _):
        url = str(client.make_url("")).rstrip("/")
        await client.post(
            "/v1/sources/orders/events",
            data=orjson.dumps(
                {"ts": 1_790_000_000_000, "status": "paid", "country": "US", "amount": 1.0}
            ),
        )
        result = await load.run(scenario, url)
        if shop and "ingest" in result["streams"]:  # every acknowledged event was counted
            answer = await (await client.get("/v1/views/top_products")).json()
            acked = result["streams"]["ingest"]["items"]
            freshness_probes = result["streams"].get("freshness", {}).get("items", 0)
            assert answer["rows"][0]["orders"] == 1 + acked + freshness_probes
    streams = dict(result["streams"])
    expected = {"query": 20, "ingest": 10, "freshness": 2}  # rate x 0.5 s, open loop: exact
    fans = streams.pop("delivery", None)
    if fans is not None:  # each of the 8 subscribers got each of the 10 acknowledged writes
        assert fans["statuses"] == {"delivered": 80}
        assert result["subscribers"]["connected"] == 8
    for name, stream in streams.items():
        assert stream["sent"] == expected[name], (name, stream)
        assert set(stream["statuses"]) == ({"visible"} if name == "freshness" else {"200"})
        assert stream["latency_ms"]["p50"] > 0
    if "ingest" in streams:
        assert streams["ingest"]["unit"] == "events"
    files = report.write(result, tmp_path / "out")
    assert [f.suffix for f in files] == [".json", ".md", ".html"]
    assert "| stream | asked | achieved |" in files[1].read_text()
    page = files[2].read_text()
    for name in result["streams"]:
        assert f"{name}: throughput over time" in page
    assert "latency over time" in page
    assert "latency distribution" in page


@pytest.mark.asyncio
async def test_a_stall_is_measured_from_the_intended_send_times() -> None:
    stream = load.Stream("probe", 100.0)

    async def send(i: int) -> tuple[str, int]:
        if i == 0:
            await asyncio.sleep(0.3)  # the server stalls on the first request
        return "200", 1

    await load.open_loop(100.0, 0.5, 1, stream, send)
    assert stream.sent == 50
    # With one connection, requests 1..29 were due during the stall: each one's latency is at
    # least 0.3 s minus its own offset (10 ms apart), so at least 20 of them exceed 100 ms.
    # A closed-loop tool would have recorded a single slow request.
    slow = sum(1 for _, latency_ms in stream.timeline if latency_ms >= 100)
    assert slow >= 20
    # The five most-delayed (due at 0-40 ms) waited more than 250 ms: p90 reflects the stall.
    assert stream.histogram.get_value_at_percentile(90) >= 200_000


def test_the_latency_timeline_stays_bounded() -> None:
    stream = load.Stream("probe", 1.0)
    for i in range(100_000):
        stream.record(0.0, i + 0.001, float(i), "200", 1)
    assert len(stream.timeline) < 2 * load.TIMELINE_POINTS
    assert stream.timeline[-1][0] > 90_000  # it still spans the whole run
    assert stream.histogram.get_total_count() == 100_000  # percentiles see every sample


@pytest.mark.asyncio
async def test_progress_is_reported_while_it_runs(tmp_path: Path) -> None:
    scenario = dataclasses.replace(
        load.Scenario.load(SCENARIOS[0]),
        duration=2.5,
        raw={"ingest": {"rate": 200, "batch": 20}},
        connections=4,
    )
    lines: list[str] = []
    async with running(EXAMPLE.read_text(), tmp_path / "data") as (client, _):
        await load.run(scenario, str(client.make_url("")).rstrip("/"), progress=lines.append)
    assert len(lines) >= 2  # one a second, for at least 2.5 s
    assert "ingest:" in lines[-1]
    assert "events" in lines[-1]
    assert "0 not 2xx" in lines[-1]
