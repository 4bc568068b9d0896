"""The ``tallyd`` command as users run it: the installed console script, in a subprocess, from a
directory outside the repository (so nothing resolves by accident, ``tests`` included).

Every command in the README's ``## Commands`` block is run here doing its job, quickly: a command
documented there with no working implementation (or no runner below) fails the suite.
Every wait is bounded; every process started is stopped, even when an assertion fails."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest

from benchmarks.server import free_port
from ingest.wal import Wal

ROOT = Path(__file__).resolve().parent.parent
TALLYD = Path(sys.executable).parent / "tallyd"
EXAMPLE = ROOT / "examples" / "shop.toml"
SCENARIOS = ROOT / "benchmarks" / "scenarios"
EMBED_KEY = "e" * 48
RUN_S = 120  # the longest any one command here may take before the test fails


def env(**extra: str) -> dict[str, str]:
    """The caller's environment without PYTHONPATH: only what is installed is importable."""
    out = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**out, **extra}


def tallyd(
    *args: str, cwd: Path, timeout: float = RUN_S, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert TALLYD.exists(), f"the console script is not installed next to {sys.executable}"
    return subprocess.run(
        [str(TALLYD), *args],
        cwd=cwd,
        env=environ or env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def started(*args: str, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running tallyd (serve, demo); killed on the way out if it is still running."""
    with (cwd / "out.log").open("wb") as out, (cwd / "err.log").open("wb") as err:
        proc = subprocess.Popen([str(TALLYD), *args], cwd=cwd, env=env(), stdout=out, stderr=err)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def logs(cwd: Path) -> str:
    return f"stdout:\n{(cwd / 'out.log').read_text()}\nstderr:\n{(cwd / 'err.log').read_text()}"


def http(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    """GET, or POST ``body``; 127.0.0.1 only (a test's own server)."""
    assert url.startswith("http://127.0.0.1:")
    method = "GET" if body is None else "POST"
    request = urllib.request.Request(url, body, method=method)  # noqa: S310 - http, asserted
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - as above
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def until(
    what: Callable[[], bool], proc: subprocess.Popen[bytes], cwd: Path, within: float
) -> None:
    """Poll ``what`` until it holds, the process exits, or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tallyd exited with {proc.returncode}\n{logs(cwd)}")
        with contextlib.suppress(OSError):
            if what():
                return
        time.sleep(0.05)  # polling a condition, bounded by the deadline
    pytest.fail(f"not within {within} s\n{logs(cwd)}")


def stop(proc: subprocess.Popen[bytes], cwd: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, logs(cwd)


def ready(base: str) -> Callable[[], bool]:
    return lambda: http(f"{base}/readyz")[0] == 200


def counted(base: str, view: str) -> Callable[[], bool]:
    def check() -> bool:
        status, body = http(f"{base}/v1/views/{view}")
        return status == 200 and any(row.get("orders", 0) > 0 for row in json.loads(body)["rows"])

    return check


def write_config(cwd: Path, auth: str = "") -> Path:
    path = cwd / "tallyd.toml"
    path.write_text(EXAMPLE.read_text() + auth)
    return path


# -- the README's commands -------------------------------------------------------------------------


def documented() -> list[str]:
    """The command lines of the README's ``## Commands`` code block."""
    section = (ROOT / "README.md").read_text().split("\n## Commands\n", 1)[1]
    block = section.split("```", 2)[1]
    lines: list[str] = []
    for line in block.splitlines():
        if line.startswith("tallyd "):
            lines.append(line.strip())
        elif line.startswith(" ") and lines:  # a long command's next line: the same command
            lines[-1] += " " + line.strip()
    return lines


def command(line: str) -> str:
    """The subcommand path: 'tallyd bench run SCENARIO ...' -> 'bench run'."""
    words = []
    for word in line.split()[1:]:
        if not re.fullmatch(r"[a-z]+", word):
            break
        words.append(word)
    return " ".join(words)


def options(line: str) -> list[str]:
    return re.findall(r"--[a-z][a-z-]*", line.partition("#")[0])


def run_serve(cwd: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_config(cwd)
    args = ("--config", str(config), "--data-dir", str(cwd / "data"))
    with started("serve", *args, "--listen", f"127.0.0.1:{port}", cwd=cwd) as proc:
        until(ready(base), proc, cwd, 60)
        body = b'{"ts": 1790000000000, "status": "paid", "amount": 2.5, "country": "FR"}'
        assert http(f"{base}/v1/sources/orders/events", body)[0] == 200
        until(counted(base, "order_status"), proc, cwd, 10)
        stop(proc, cwd)


def run_check(cwd: Path) -> None:
    done = tallyd("check", str(EXAMPLE), cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert "view revenue_by_country (from orders)" in done.stdout


def run_plan(cwd: Path) -> None:
    """The installed command: nothing to change is exit 0, a change exit 2 (tests/test_plan.py
    has a test per kind of change, and one against a running server)."""
    same = tallyd("plan", "--config", str(EXAMPLE), "--current", str(EXAMPLE), cwd=cwd)
    assert same.returncode == 0, same.stderr
    assert same.stdout.rstrip().endswith("No changes.")
    grown = cwd / "grown.toml"
    grown.write_text(
        EXAMPLE.read_text()
        + '\n[views.per_device]\nsql = "SELECT device, count(*) AS n FROM orders GROUP BY device"\n'
    )
    changed = tallyd("plan", "--config", str(grown), "--current", str(EXAMPLE), cwd=cwd)
    assert changed.returncode == 2, changed.stderr
    assert "  + view per_device: added: from orders" in changed.stdout


def run_apply(cwd: Path) -> None:
    """A view added to a running server: applied, answering; its SQL changed: applied too (the
    example keeps events: it backfills); a source's declared field types changed: refused by name
    (tests/api/test_apply_config.py and test_backfill.py have the rest)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_config(cwd)
    args = ("--config", str(config), "--data-dir", str(cwd / "data"))
    grown = cwd / "grown.toml"
    grown.write_text(
        config.read_text()
        + '\n[views.per_status]\nsql = "SELECT status, count(*) AS n FROM orders GROUP BY status"\n'
    )
    with started("serve", *args, "--listen", f"127.0.0.1:{port}", cwd=cwd) as proc:
        until(ready(base), proc, cwd, 60)
        done = tallyd("apply", "--config", str(grown), "--url", base, cwd=cwd)
        assert done.returncode == 0, done.stderr
        assert "applied: view per_status: add" in done.stdout
        assert http(f"{base}/v1/views/per_status")[0] == 200
        changed = cwd / "changed.toml"
        changed.write_text(
            grown.read_text().replace(
                "AS n FROM orders GROUP", "AS n FROM orders WHERE amount > 1 GROUP"
            )
        )
        swapped = tallyd("apply", "--config", str(changed), "--url", base, cwd=cwd)
        assert swapped.returncode == 0, swapped.stderr
        assert "applied: view per_status: change" in swapped.stdout
        retimed = cwd / "retyped.toml"
        retimed.write_text(changed.read_text().replace('user_id = "string"', 'user_id = "scalar"'))
        refused = tallyd("apply", "--config", str(retimed), "--url", base, cwd=cwd)
        assert refused.returncode == 1
        assert "answered 409" in refused.stderr
        assert "source orders: its kind, format, time field" in refused.stderr
        stop(proc, cwd)


def run_demo(cwd: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ("--rate", "50", "--data-dir", str(cwd / "demo-data"), "--listen", f"127.0.0.1:{port}")
    with started("demo", *args, cwd=cwd) as proc:
        until(ready(base), proc, cwd, 60)
        until(counted(base, "order_status"), proc, cwd, 20)  # the generator is posting
        stop(proc, cwd)
    assert f"tallyd demo is running at {base}" in (cwd / "out.log").read_text()
    # Ctrl-C is the normal way out: the generator stops with the server, not with warnings
    # about a closed port (it posts every 200 ms, so stopping mid-post is the common case).
    assert "demo_post_failed" not in (cwd / "err.log").read_text(), logs(cwd)


def run_bench_list(cwd: Path) -> None:
    done = tallyd("bench", "list", cwd=cwd)
    assert done.returncode == 0, done.stderr
    for path in SCENARIOS.glob("*.toml"):
        assert re.search(rf"^{re.escape(path.stem)} ", done.stdout, re.MULTILINE), path.stem


def run_bench_run(cwd: Path) -> None:
    scenario = cwd / "tiny.toml"
    scenario.write_text(
        'name = "tiny"\nduration = "1s"\nconnections = 2\n'
        '[ingest]\nrate = 100\nbatch = 10\nsource = "orders"\n'
        '[query]\nrate = 10\ntemplates = [{ path = "/v1/views/order_status" }]\n'
    )
    out = cwd / "reports"
    args = ("--config", str(write_config(cwd)), "--out", str(out))
    done = tallyd("bench", "run", str(scenario), *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "tiny.json").read_text())
    assert report["streams"]["ingest"]["statuses"] == {"200": 10}
    assert report["streams"]["query"]["statuses"] == {"200": 10}


def run_bench_run_ingest(cwd: Path) -> None:
    """Your own events, gzipped, moved to now (tests/benchmarks/test_replay.py checks that the
    server counts exactly them)."""
    out = cwd / "reports"
    args = ("--config", str(write_config(cwd)), "--out", str(out))
    events = [{"ts": 1_700_000_000_000 + i, "status": "paid", "amount": 1} for i in range(30)]
    mine = cwd / "mine.ndjson.gz"
    mine.write_bytes(gzip.compress(b"".join(json.dumps(e).encode() + b"\n" for e in events)))
    replayed = ("--events", str(mine), "--retime", "--rate", "300", "--batch", "10")
    fans = ("--subscribers", "20", "--view", "order_status", "--workers", "2")
    done = tallyd("bench", "run", "ingest", *args, *replayed, *fans, cwd=cwd)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "ingest-mine.json").read_text())
    assert report["streams"]["ingest"]["statuses"] == {"200": 3}
    assert report["streams"]["ingest"]["items"] == 30
    # 20 subscribers in two workers, each told of its worker's writes (2 and 1 of the 3)
    assert report["subscribers"]["connected"] == 20
    assert report["streams"]["delivery"]["statuses"] == {"delivered": 10 * 2 + 10 * 1}


def run_bench_run_query(cwd: Path) -> None:
    """A query mix derived from the server's views, shown, saved, run: every query answers
    (tests/benchmarks/test_auto.py asks each derived query on its own)."""
    out, saved = cwd / "reports", cwd / "mine.toml"
    query = cwd / "query.toml"  # the bundled "query" scenario, one second long
    query.write_text('name = "query"\nduration = "1s"\n[query]\nrate = 20\ntemplates = []\n')
    args = ("--config", str(write_config(cwd)), "--out", str(out), "--auto", "--save", str(saved))
    done = tallyd("bench", "run", str(query), *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert "[query]" in done.stderr  # shown before the run
    assert "/v1/views/order_status" in saved.read_text()
    report = json.loads((out / "query-auto.json").read_text())
    assert set(report["streams"]["query"]["statuses"]) == {"200"}


def run_bench_compare(cwd: Path) -> None:
    """Two reports (as ``bench run`` writes them): one 30 % slower at p99 fails at 10 %.
    tests/benchmarks/test_compare.py compares real runs."""
    for name, p99 in (("base", 3.0), ("new", 3.9)):
        latency = {"p50": 1.0, "p90": 2.0, "p99": p99, "p99.9": 4.0, "max": 5.0}
        stream = {"achieved_rate": 100.0, "unit": "requests", "latency_ms": latency}
        report = {"scenario": name, "duration_s": 1.0, "streams": {"query": stream}}
        (cwd / f"{name}.json").write_text(json.dumps(report))
    done = tallyd("bench", "compare", "base.json", "new.json", "--fail-over", "10", cwd=cwd)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 regression(s) over 10 %: query p99" in done.stdout


def run_bench_targets(cwd: Path) -> None:
    # --quick alone runs every target (minutes: Kafka, peers, wrk); one in-process target shows
    # the command works. test_bench_targets_runs_without_the_repository runs the Kafka one.
    done = tallyd("bench", "targets", "--quick", "--only", "memory", "--out", str(cwd), cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert json.loads((cwd / "targets.json").read_text())["memory"]["pairs"] > 0


def run_token_create(cwd: Path) -> None:
    done = tallyd("token", "create", "--name", "ci", "--scopes", "read,append:orders", cwd=cwd)
    assert done.returncode == 0, done.stderr
    first, *_, last = done.stdout.splitlines()
    secret = first.rpartition(": ")[2]
    line = tomllib.loads(f"t = {last.strip()}")["t"]
    assert line["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    # The line it prints is one a config accepts.
    checked = tallyd("check", str(write_config(cwd, f"\n[auth]\ntokens = [{last}]\n")), cwd=cwd)
    assert checked.returncode == 0, checked.stderr


def run_token_embed(cwd: Path) -> None:
    config = write_config(cwd, '\n[auth]\nembed_secret_env = "TALLYD_CLI_TEST_EMBED"\n')
    args = ("--config", str(config), "--views", "revenue_by_country,order_status")
    with_secret = env(TALLYD_CLI_TEST_EMBED=EMBED_KEY)
    done = tallyd("token", "embed", *args, "--filter", "country=FR", cwd=cwd, environ=with_secret)
    assert done.returncode != 0  # order_status is not grouped by country: it would only 403
    assert "order_status has no key 'country'" in done.stderr
    args = ("--config", str(config), "--views", "revenue_by_country")
    filters = ("--filter", "country=FR", "--filter", "country=DE")
    done = tallyd("token", "embed", *args, *filters, cwd=cwd, environ=with_secret)
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), EMBED_KEY, algorithms=["HS256"])
    assert claims["views"] == ["revenue_by_country"]
    assert claims["filters"] == {"country": ["FR", "DE"]}
    assert claims["exp"] - claims["iat"] == 3600  # --ttl defaults to 1h


def run_repair(cwd: Path) -> None:
    # The log two servers on one directory leave: the same record number written twice.
    data = cwd / "data"
    event = {"ts": 1790000000000, "status": "paid", "amount": 2.5, "country": "FR"}
    payload = json.dumps({"source": "orders", "events": [event], "rejected": []}).encode()
    one, two = Wal(data / "wal"), Wal(data / "wal")
    assert list(one.open(after=0)) == list(two.open(after=0)) == []
    assert one.append([payload]) == two.append([payload]) == [1]
    one.close()
    two.close()
    args = ("repair", "--config", str(write_config(cwd)), "--data-dir", str(data))
    dry = tallyd(*args, "--dry-run", cwd=cwd)
    assert dry.returncode == 0, dry.stderr
    assert "record 1, expected 2" in dry.stdout
    assert not list(data.glob("quarantine-*"))
    done = tallyd(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert "log records 1..1 (1 record, 1 event)" in done.stdout
    assert len(list(data.glob("quarantine-*/wal/*"))) == 1
    assert [seq for seq, _ in Wal(data / "wal").open(after=0)] == [1]


RUNNERS: dict[str, Callable[[Path], None]] = {
    "serve": run_serve,
    "check": run_check,
    "plan": run_plan,
    "apply": run_apply,
    "demo": run_demo,
    "repair": run_repair,
    "bench list": run_bench_list,
    "bench run": run_bench_run,
    "bench run ingest": run_bench_run_ingest,
    "bench run query": run_bench_run_query,
    "bench compare": run_bench_compare,
    "bench targets": run_bench_targets,
    "token create": run_token_create,
    "token embed": run_token_embed,
}
LINES = documented()


def test_the_commands_block_is_found_and_every_runner_is_documented() -> None:
    assert len(LINES) >= 8, LINES
    stale = set(RUNNERS) - {command(line) for line in LINES}
    assert not stale, f"runners for commands the README no longer documents: {stale}"


@pytest.mark.parametrize("line", LINES, ids=[command(line) for line in LINES])
def test_every_documented_command_does_its_job(line: str, tmp_path: Path) -> None:
    path = command(line)
    runner = RUNNERS.get(path)
    assert runner is not None, f"README documents 'tallyd {path}': add a runner to {__file__}"
    shown = tallyd(*path.split(), "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    missing = [o for o in options(line) if o not in shown.stdout]
    assert not missing, f"'tallyd {path} --help' lacks the documented {missing}"
    runner(tmp_path)


# -- issue 14.3: an installed command imports nothing from tests/ ----------------------------------


def test_bench_targets_runs_without_the_repository(tmp_path: Path) -> None:
    """The Kafka target imported its broker helpers from tests/: run from outside the repository
    it died with ModuleNotFoundError after its first figure."""
    external = os.environ.get("TALLYD_TEST_KAFKA")  # the suite's Kafka, when it is given one
    bootstrap = ("--bootstrap", external) if external else ()
    args = ("--quick", "--only", "kafka", "--kafka-events", "2000", "--out", str(tmp_path))
    done = tallyd("bench", "targets", *args, *bootstrap, cwd=tmp_path)
    assert "No module named" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "targets.json").read_text())
    assert figures["kafka_all"]["events"] == figures["kafka_revenue"]["events"] == 2000


# -- issue 14.4: help and listings -----------------------------------------------------------------


def test_tallyd_help_lists_every_command(tmp_path: Path) -> None:
    done = tallyd("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("serve", "check", "demo", "token", "bench"):
        assert re.search(rf"^\s+{name}\s+\S", done.stdout, re.MULTILINE), (name, done.stdout)
    assert "``" not in done.stdout  # no raw docstring markup


def test_bench_help_exits_0_and_lists_its_subcommands(tmp_path: Path) -> None:
    done = tallyd("bench", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("run", "list", "targets"):
        assert re.search(rf"^\s+{name}\s+\S", done.stdout, re.MULTILINE), (name, done.stdout)


def test_bench_list_gives_each_scenario_a_whole_sentence(tmp_path: Path) -> None:
    done = tallyd("bench", "list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    entries: dict[str, str] = {}
    for line in done.stdout.splitlines():  # an entry starts at column 0; the rest is wrapping
        if line[:1].strip():
            name, _, text = line.partition(" ")
            entries[name] = text.strip()
        else:
            entries[name] += " " + line.strip()
    assert set(entries) == {p.stem for p in SCENARIOS.glob("*.toml")}
    for name, text in entries.items():
        comment = " ".join(
            line.lstrip("#").strip()
            for line in (SCENARIOS / f"{name}.toml").read_text().splitlines()
            if line.startswith("#")
        )
        assert comment.startswith(text), (name, text)
        assert text.endswith((".", "!", "?")), (name, text)


def test_bench_without_its_extras_says_what_to_install(tmp_path: Path) -> None:
    hide_hdrh = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'hdrh':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from api.cli import main\n"
        "sys.exit(main(['bench', 'list']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_hdrh],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=RUN_S,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'tallyd[bench]'" in done.stderr


# -- issue 14.7: check needs no secrets, serve does ------------------------------------------------

UNSET = "TALLYD_CLI_TEST_UNSET_SECRET"


def test_check_validates_the_secret_variable_name_without_its_value(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'\n[auth]\nembed_secret_env = "{UNSET}"\n')
    assert UNSET not in env()
    done = tallyd("check", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    bad = write_config(tmp_path, '\n[auth]\nembed_secret_env = "not a name"\n')
    done = tallyd("check", str(bad), cwd=tmp_path)
    assert done.returncode == 1
    assert "embed_secret_env" in done.stderr
    assert "the name of an environment variable" in done.stderr


def test_serve_and_token_embed_refuse_without_the_secret_naming_its_variable(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, f'\n[auth]\nembed_secret_env = "{UNSET}"\n')
    serve = ("serve", "--config", str(config), "--data-dir", str(tmp_path / "data"))
    done = tallyd(*serve, "--listen", f"127.0.0.1:{free_port()}", cwd=tmp_path)
    assert done.returncode == 1
    assert f"${UNSET} is not set" in done.stderr
    embed = ("token", "embed", "--config", str(config), "--views", "order_status")
    done = tallyd(*embed, cwd=tmp_path)
    assert done.returncode == 1
    assert f"${UNSET} is not set" in done.stderr


def test_check_refuses_a_cluster_member_peers_cannot_reach(tmp_path: Path) -> None:
    kafka = """
[sources.k]
from = "kafka"
bootstrap = "127.0.0.1:9"
topic = "t"
group = "g"
time = "ts"

[views.v]
sql = "SELECT count(*) AS n FROM k"
"""
    config = tmp_path / "cluster.toml"
    env_line = 'secret_env = "TALLYD_TEST_UNSET_CLUSTER_SECRET"\n'
    config.write_text('[server]\nlisten = "0.0.0.0:8080"\n\n[cluster]\n' + env_line + kafka)
    done = tallyd("check", str(config), cwd=tmp_path)
    assert done.returncode == 1
    assert "cluster.toml: cluster: field 'advertise': the server listens on 0.0.0.0:8080" in (
        done.stderr
    )
    advertise = 'advertise = "http://10.0.0.5:8080"\n'
    config.write_text('[server]\nlisten = "0.0.0.0:8080"\n\n[cluster]\n' + advertise + kafka)
    done = tallyd("check", str(config), cwd=tmp_path)
    assert done.returncode == 1
    assert "cluster: field 'secret_env': name the environment variable" in done.stderr
    # check reads the secret's name, not its value (CI checks configs without secrets); serve
    # needs the value
    config.write_text(
        '[server]\nlisten = "0.0.0.0:8080"\n\n[cluster]\n' + advertise + env_line + kafka
    )
    assert "TALLYD_TEST_UNSET_CLUSTER_SECRET" not in env()
    done = tallyd("check", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    serve = ("serve", "--config", str(config), "--data-dir", str(tmp_path / "data"))
    done = tallyd(*serve, "--listen", f"127.0.0.1:{free_port()}", cwd=tmp_path)
    assert done.returncode == 1
    assert "$TALLYD_TEST_UNSET_CLUSTER_SECRET is not set" in done.stderr
