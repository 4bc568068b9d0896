"""The data directory as users meet it, through the installed ``tallyd`` (issue 14, items 2 and 6):
one server at a time on it, a way back when its log is damaged, and where it is.

Real processes throughout (the console script, in its own working directory); every wait is
bounded and every process started is stopped (``tests/test_cli.py``'s helpers)."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson

from benchmarks.server import free_port
from ingest.datadir import LOCK_FILE
from ingest.wal import Wal
from tests.ingest.test_repair import CONFIG, Counts, batch, files, record, reference
from tests.test_cli import http, logs, ready, started, stop, tallyd, until

CONFIG_1H = '[server]\nsnapshot_every = "1h"\n' + CONFIG  # no snapshot unless asked


def setup(tmp_path: Path, server: str = CONFIG_1H) -> Path:
    config = tmp_path / "tallyd.toml"
    config.write_text(server)
    return config


def post(base: str, events: list[dict[str, object]]) -> str:
    status, body = http(f"{base}/v1/sources/orders/events", b"\n".join(map(orjson.dumps, events)))
    assert status == 200, body
    return str(json.loads(body)["position"])


def counts(base: str) -> Counts:
    status, body = http(f"{base}/v1/views/per_batch?limit=1000")
    assert status == 200, body
    return {r["batch"]: (r["n"], r["ids"]) for r in json.loads(body)["rows"]}


def serve_args(config: Path, data: Path | None, port: int) -> list[str]:
    where = ["--data-dir", str(data)] if data is not None else []
    return ["serve", "--config", str(config), *where, "--listen", f"127.0.0.1:{port}"]


@contextlib.contextmanager
def serving(
    config: Path, data: Path | None, cwd: Path, *extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A ``tallyd serve`` started in ``cwd``, once ready: (its process, its base URL)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with started(*serve_args(config, data, port), *extra, cwd=cwd) as proc:
        until(ready(base), proc, cwd, 60)
        yield proc, base


def what(report: str) -> list[str]:
    """A repair's kept and dropped lines, the same for a dry run and a run: without the last line
    (what was done) and the quarantine's name (a time)."""
    lines = report.replace("to be moved", "moved").splitlines()[:-1]
    return [re.sub(r"quarantine-[^/]+/", "quarantine-*/", line) for line in lines]


def workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


# -- item 2: one server per data directory ---------------------------------------------------------


def test_a_second_server_on_one_data_dir_refuses_naming_the_first(tmp_path: Path) -> None:
    config, data = setup(tmp_path), tmp_path / "data"
    one, two = workdir(tmp_path, "one"), workdir(tmp_path, "two")
    with serving(config, data, one) as (first, base):
        assert post(base, batch(1)) == "wal:1"
        try:
            second = tallyd(*serve_args(config, data, free_port()), cwd=two, timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("a second server started on the same data directory") from None
        assert second.returncode == 1, second.stderr
        assert f"{data} is in use by another tallyd (pid {first.pid}" in second.stderr
        assert "--data-dir" in second.stderr
        assert (data / LOCK_FILE).read_text().strip() == str(first.pid)
        assert post(base, batch(2)) == "wal:2"  # the first one never noticed
        assert counts(base) == reference(batch(1), batch(2))
        stop(first, one)


def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    config, data = setup(tmp_path), tmp_path / "data"
    one, two = workdir(tmp_path, "one"), workdir(tmp_path, "two")
    with serving(config, data, one) as (first, base):
        post(base, batch(1))
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    assert (data / LOCK_FILE).read_text().strip() == str(first.pid)  # left behind, yet free
    with serving(config, data, two) as (again, base):
        assert counts(base) == reference(batch(1))
        stop(again, two)


def test_a_log_two_servers_wrote_is_refused_naming_repair_and_repaired(tmp_path: Path) -> None:
    """The directory two servers left (both acknowledged wal:4), then killed: ``serve`` refuses
    and names ``tallyd repair``; ``--dry-run`` changes nothing; ``repair`` keeps the first
    writer's records up to the repeat, and the server answers exactly their events."""
    config, data = setup(tmp_path), tmp_path / "data"
    one = workdir(tmp_path, "one")
    with serving(config, data, one) as (first, base):
        for n in (1, 2, 3):
            post(base, batch(n))
        second = Wal(data / "wal")  # what a second server's restore opened, had it started
        assert len(list(second.open(after=0))) == 3
        assert post(base, batch(4)) == "wal:4"
        assert second.append([record(batch(5))]) == [4]
        assert post(base, batch(6)) == "wal:5"
        second.close()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    refused = tallyd(*serve_args(config, data, free_port()), cwd=one, timeout=60)
    assert refused.returncode == 1
    assert "record 4, expected 5" in refused.stderr
    assert f"tallyd repair --config {config} --data-dir {data}" in refused.stderr
    before = files(data)
    dry = tallyd("repair", "--config", str(config), "--data-dir", str(data), "--dry-run", cwd=one)
    assert dry.returncode == 0, dry.stderr
    assert "log records 1..4 (4 records, 80 events)" in dry.stdout
    assert "record 4, expected 5; holds 2 readable records (4..5), 40 events" in dry.stdout
    assert "dry run: nothing was changed" in dry.stdout
    assert files(data) == before
    done = tallyd("repair", "--config", str(config), "--data-dir", str(data), cwd=one)
    assert done.returncode == 0, done.stderr
    assert what(done.stdout) == what(dry.stdout)  # it did what the dry run said
    (quarantine,) = data.glob("quarantine-*")
    assert len(list((quarantine / "wal").iterdir())) == 1
    with serving(config, data, one) as (again, base):
        assert counts(base) == reference(*(batch(n) for n in (1, 2, 3, 4)))
        stop(again, one)


# -- item 6: paths in the config are relative to the config file -----------------------------------


def test_a_config_elsewhere_keeps_its_data_dir_next_to_it(tmp_path: Path) -> None:
    """Started from another working directory, ``data_dir = "state"`` is the config's own
    ``state/`` — written there, and restored from there by a start from a third directory."""
    home = workdir(tmp_path, "conf")
    config = setup(home, '[server]\ndata_dir = "state"\nsnapshot_every = "1h"\n' + CONFIG)
    expected = home / "state"
    one, two = workdir(tmp_path, "one"), workdir(tmp_path, "two")
    with serving(config, None, one) as (first, base):
        post(base, batch(1))
        stop(first, one)  # a snapshot on SIGTERM
    assert list((expected / "snapshots").glob("*.tsnap"))
    assert not (one / "state").exists()
    started_log = (one / "err.log").read_text()
    assert f"event=restored data_dir={expected} state='empty: nothing to restore'" in started_log
    with serving(config, None, two) as (again, base):
        assert counts(base) == reference(batch(1))
        stop(again, two)
    restored = (two / "err.log").read_text()
    assert f"event=restored data_dir={expected} snapshot=snapshot-" in restored, logs(two)
