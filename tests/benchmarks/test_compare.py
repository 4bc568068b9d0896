"""``tallyd bench compare``: two runs' reports side by side, exit 1 on a regression past
``--fail-over`` (a team's CI against its staging deployment)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from api.demo import EXAMPLE
from benchmarks import load, report
from benchmarks.__main__ import main
from tests.benchmarks.test_load import SCENARIOS, tiny
from tests.helpers import running


@pytest.mark.asyncio
async def test_a_planted_regression_fails_the_comparison_and_a_rerun_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (mixed,) = [p for p in SCENARIOS if p.stem == "mixed"]
    async with running(EXAMPLE.read_text(), tmp_path / "data") as (client, _):
        url = str(client.make_url("")).rstrip("/")
        baseline = await load.run(tiny(load.Scenario.load(mixed)), url)
    assert 0 < baseline["generator_cpu"] < 1.5  # its own CPU, measured (one process)
    a = _saved(baseline, tmp_path / "a")
    same = _saved(copy.deepcopy(baseline), tmp_path / "same")
    assert main(["compare", str(a), str(same), "--fail-over", "5"]) == 0
    out = capsys.readouterr().out
    assert "| query | p99 (ms) |" in out
    assert "no regression over 5 %" in out
    slower: dict[str, Any] = copy.deepcopy(baseline)
    slower["streams"]["query"]["latency_ms"]["p99"] *= 1.5  # planted: p99 up 50 %
    slower["streams"]["ingest"]["achieved_rate"] *= 0.97  # throughput down 3 %: within 5 %
    b = _saved(slower, tmp_path / "b")
    assert main(["compare", str(a), str(b), "--fail-over", "5"]) == 1
    out = capsys.readouterr().out
    assert "+50.0 % | REGRESSION |" in out
    assert "-3.0 % |  |" in out
    assert "1 regression(s) over 5 %: query p99" in out
    assert main(["compare", str(a), str(b), "--fail-over", "60"]) == 0  # a looser threshold


def _saved(result: dict[str, Any], directory: Path) -> Path:
    (json_path, *_) = report.write(result, directory)
    assert orjson.loads(json_path.read_bytes())["streams"] == result["streams"]
    return json_path
