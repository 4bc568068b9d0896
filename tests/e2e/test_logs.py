"""What a running server logs (issue 14, item 9): routine work (each snapshot) at debug, and at
info one summary line per ``summary_every`` with what happened meanwhile — nothing when nothing
did — so ``tallyd demo`` does not scroll its printed queries away. Real processes, bounded waits."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from api.logs import Totals, summary
from tests.e2e.test_data_dir import counts, post, serving, setup, workdir
from tests.helpers import BASE_TS
from tests.test_cli import http, stop, until

CONFIG = """
[server]
snapshot_every = "200ms"
summary_every = "1s"

[sources.orders]
time = "ts"

[views.per_batch]
sql = "SELECT batch, count(*) AS n, sum(id) AS ids FROM orders GROUP BY batch"

[views.per_minute]
sql = "SELECT tumble(ts, '1 minute') AS minute, count(*) AS n FROM orders GROUP BY minute"
grace = "1m"
"""
SUMMARY = re.compile(
    r"level=info logger=tallyd\.engine event=summary seconds=(?P<seconds>[\d.]+) "
    r"accepted=(?P<accepted>\d+) per_s=(?P<per_s>[\d.]+) rejected=(?P<rejected>\d+) "
    r"late=(?P<late>\d+) snapshots=(?P<snapshots>\d+) last_snapshot_s=(?P<last>\S+) "
    r"wal_bytes=(?P<wal>\d+)$"
)


def events(batch: int, n: int, at: int) -> list[dict[str, object]]:
    return [{"id": batch * 1000 + i, "batch": batch, "ts": at + i} for i in range(n)]


def summaries(log: Path) -> list[dict[str, str]]:
    lines = log.read_text().splitlines()
    return [m.groupdict() for m in map(SUMMARY.search, lines) if m]


def total(found: list[dict[str, str]], key: str) -> int:
    return sum(int(s[key]) for s in found)


def test_the_default_level_logs_a_summary_with_the_counts_and_no_snapshot_lines(
    tmp_path: Path,
) -> None:
    config, cwd = setup(tmp_path, CONFIG), workdir(tmp_path, "run")
    with serving(config, tmp_path / "data", cwd) as (proc, base):
        on_time = events(1, 50, BASE_TS + 600_000)
        body = b"\n".join([*map(orjson.dumps, on_time), b'{"batch": 1}', b"{", b'{"ts": "soon"}'])
        status, answer = http(f"{base}/v1/sources/orders/events?on_error=skip", body)
        assert status == 200, answer
        late = events(2, 20, BASE_TS)  # ten minutes behind the watermark, the grace is one
        post(base, late)
        assert counts(base) == {1: (50, sum(range(1000, 1050))), 2: (20, sum(range(2000, 2020)))}
        log = cwd / "err.log"
        until(lambda: total(summaries(log), "accepted") >= 70, proc, cwd, 30)
        until(lambda: total(summaries(log), "snapshots") >= 1, proc, cwd, 30)
        stop(proc, cwd)
    found = summaries(log)
    assert total(found, "accepted") == 70
    assert total(found, "rejected") == 3
    assert total(found, "late") == 20
    for line in found:  # seconds are rounded to 0.1 in the line: per_s within that
        rate = int(line["accepted"]) / float(line["seconds"])
        assert float(line["per_s"]) == pytest.approx(rate, rel=0.1, abs=0.1)
    assert any(line["last"] != "none" for line in found)  # the last snapshot's duration
    text = log.read_text()
    assert "event=snapshot " not in text  # taken (the summaries count them), at debug
    assert "event=restored" in text


def test_debug_shows_each_snapshot(tmp_path: Path) -> None:
    config, cwd = setup(tmp_path, CONFIG), workdir(tmp_path, "run")
    with serving(config, tmp_path / "data", cwd, "--log-level", "debug") as (proc, base):
        post(base, events(1, 5, BASE_TS))
        snapshot = "level=debug logger=tallyd.commit event=snapshot file=snapshot-"
        until(lambda: snapshot in (cwd / "err.log").read_text(), proc, cwd, 30)
        stop(proc, cwd)


def test_an_interval_in_which_nothing_happened_logs_nothing() -> None:
    quiet = Totals(accepted=5, rejected=1, late=2, snapshots=3, last_snapshot_s=0.1, wal_bytes=9)
    assert summary(quiet, quiet, 60.0) is None
    busy = Totals(accepted=125, rejected=1, late=2, snapshots=4, last_snapshot_s=0.2, wal_bytes=99)
    assert summary(quiet, busy, 60.0) == (
        "event=summary seconds=60.0 accepted=120 per_s=2.0 rejected=0 late=0 snapshots=1 "
        "last_snapshot_s=0.2 wal_bytes=99"
    )
    moved_away = Totals(accepted=5, rejected=1, late=0, snapshots=3)  # a partition left
    assert summary(quiet, moved_away, 60.0) is None
