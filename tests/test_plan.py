"""``tallyd plan`` (issue 17's first step): what a new config would change, per view, source and
setting, and what that does at the restart that applies it today; exit 0 when nothing changes,
2 when something does, 1 for an invalid config or a server that does not answer. Against a file
(``--current``) and against a running server (``--url``, ``GET /v1/admin/config``)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from api.cli import main
from tests.helpers import running

BASE = """
[server]
snapshot_every = "10s"

[sources.orders]
time = "ts"

[views.revenue]
sql = '''SELECT country, tumble(ts, '1 minute') AS m, count(*) AS n, sum(amount) AS total
FROM orders WHERE status = 'paid' GROUP BY country, m'''
grace = "30s"

[views.by_status]
sql = "SELECT status, count(*) AS n FROM orders GROUP BY status"
"""


def plan(
    tmp_path: Path, new: str, capsys: pytest.CaptureFixture[str], *flags: str
) -> tuple[int, str]:
    current, proposed = tmp_path / "current.toml", tmp_path / "new.toml"
    current.write_text(BASE)
    proposed.write_text(new)
    code = main(["plan", "--config", str(proposed), "--current", str(current), *flags])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_an_unchanged_config_plans_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = plan(tmp_path, BASE.replace('"10s"', '"10s"  # a comment'), capsys)
    assert code == 0
    assert "= 2 view(s) unchanged: revenue, by_status" in out
    assert out.rstrip().endswith("No changes.")


def test_an_added_view_starts_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    added = BASE + '\n[views.per_day]\nsql = "SELECT count(*) AS n FROM orders"\n'
    code, out = plan(tmp_path, added, capsys)
    assert code == 2
    assert "  + view per_day: added: from orders\n      starts empty when applied:" in out
    assert "Plan: 1 to add, 0 to change, 0 to remove.\nApplies live: tallyd apply" in out


def test_a_changed_view_names_the_clause_and_is_refused_by_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = BASE.replace("status = 'paid'", "status IN ('paid', 'shipped')")
    code, out = plan(tmp_path, changed, capsys)
    assert code == 2
    assert "  ~ view revenue: changed: SQL: WHERE\n      refused, live and at a restart" in out
    assert (
        "Not applicable live (tallyd apply and SIGHUP refuse it):\n  - view revenue: its SQL" in out
    )
    grouped = BASE.replace(
        "SELECT status, count(*) AS n FROM orders GROUP BY status",
        "SELECT status, country, count(*) AS n FROM orders GROUP BY status, country",
    )
    code, out = plan(tmp_path, grouped, capsys)
    assert code == 2
    assert "  ~ view by_status: changed: SQL: SELECT, GROUP BY\n" in out
    # only an option: the state is kept
    code, out = plan(tmp_path, BASE.replace('grace = "30s"', 'grace = "1m"'), capsys)
    assert code == 2
    assert (
        "  ~ view revenue: changed: grace: 30s -> 1m\n      takes effect when applied; its " in out
    )


def test_with_retained_events_added_and_changed_views_backfill_live(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = BASE.replace('snapshot_every = "10s"', 'snapshot_every = "10s"\nretain_events = "7d"')
    current, proposed = tmp_path / "current.toml", tmp_path / "new.toml"
    current.write_text(kept)
    added = kept + '\n[views.per_day]\nsql = "SELECT count(*) AS n FROM orders"\n'
    changed = added.replace("status = 'paid'", "status IN ('paid', 'shipped')")
    proposed.write_text(changed)
    code = main(["plan", "--config", str(proposed), "--current", str(current)])
    out = capsys.readouterr().out
    assert code == 2
    assert (
        "  + view per_day: added: from orders\n      fills from the events the server kept "
        "(retain_events) when applied" in out
    )
    assert (
        "  ~ view revenue: changed: SQL: WHERE\n      the new definition fills from the events "
        "the server kept (retain_events) beside the old one, which answers until then" in out
    )
    assert "Plan: 1 to add, 1 to change, 0 to remove.\nApplies live: tallyd apply" in out
    where = "status IN ('paid', 'shipped')"
    # a Kafka source: its views fill from the topic, retain_events or not
    kafka = 'from = "kafka"\nbootstrap = "127.0.0.1:9092"\ntopic = "o"\ngroup = "g"\n'
    code, out = plan_source(tmp_path, BASE, kafka, where, capsys)
    assert code == 2
    assert "the new definition fills from the topic, from its log start" in out
    assert "Applies live" in out
    # a file source: the files, read again
    code, out = plan_source(tmp_path, BASE, 'from = "file"\npath = "o.ndjson"\n', where, capsys)
    assert code == 2
    assert "the new definition fills from the files, from their first line" in out
    assert "Applies live" in out


def plan_source(
    tmp_path: Path, base: str, source: str, where: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """The plan of the revenue view's WHERE changed, its source being ``source`` (TOML lines)."""
    current, proposed = tmp_path / "current.toml", tmp_path / "new.toml"
    text = base.replace('[sources.orders]\ntime = "ts"', f'[sources.orders]\n{source}time = "ts"')
    current.write_text(text)
    proposed.write_text(text.replace("status = 'paid'", where))
    code = main(["plan", "--config", str(proposed), "--current", str(current)])
    return code, capsys.readouterr().out


def test_a_removed_view_and_changed_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = BASE.index("[views.by_status]")
    removed = BASE[:start].replace('"10s"', '"5s"')
    code, out = plan(tmp_path, removed, capsys, "--json")
    assert code == 2
    answer = orjson.loads(out)
    assert answer["unchanged_views"] == ["revenue"]
    assert [(c["kind"], c["name"], c["action"], c["what"]) for c in answer["changes"]] == [
        ("view", "by_status", "remove", ["from orders"]),
        ("setting", "[server] snapshot_every", "change", ["10s -> 5s"]),
    ]
    assert answer["live"] is False
    assert answer["not_live"] == ["[server] snapshot_every: changes only at a restart"]


def test_an_invalid_new_config_is_named_as_tallyd_check_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = plan(tmp_path, BASE.replace("sum(amount)", "sum(amount"), capsys)
    assert code == 1
    assert "new.toml: view 'revenue'" in out


@pytest.mark.asyncio
async def test_plan_against_a_running_server_asks_for_its_config_with_an_admin_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "tly_plan-test-secret"  # noqa: S105 - a test's token
    digest = hashlib.sha256(secret.encode()).hexdigest()
    served = (
        BASE + f'\n[auth]\ntokens = [{{ name = "ops", sha256 = "{digest}", scopes = ["admin"] }}]\n'
    )
    new = tmp_path / "new.toml"
    new.write_text(served + '\n[views.per_day]\nsql = "SELECT count(*) AS n FROM orders"\n')
    async with running(served, tmp_path / "data") as (client, _):
        url = str(client.make_url("")).rstrip("/")
        args = ["plan", "--config", str(new), "--url", url]
        refused = await asyncio.to_thread(main, [*args, "--token", ""])
        assert refused == 1
        assert "answered 401" in capsys.readouterr().err
        code = await asyncio.to_thread(main, [*args, "--token", secret])
    out = capsys.readouterr().out
    assert code == 2
    assert f"against {url} (running test.toml)" in out
    assert "  + view per_day: added: from orders" in out
    assert "= 2 view(s) unchanged: revenue, by_status" in out


@pytest.mark.asyncio
@pytest.mark.parametrize("bodies", [3, 0])
async def test_plan_against_a_running_server_says_how_much_a_backfill_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bodies: int
) -> None:
    kept = BASE.replace('snapshot_every = "10s"', 'snapshot_every = "10s"\nretain_events = "7d"')
    new = tmp_path / "new.toml"
    new.write_text(kept + '\n[views.per_day]\nsql = "SELECT count(*) AS n FROM orders"\n')
    started = time.time()
    async with running(kept, tmp_path / "data") as (client, _):
        for n in range(bodies):  # a body: a log record
            body = orjson.dumps({"ts": 1_790_000_000_000 + n, "status": "paid", "amount": n})
            assert (await client.post("/v1/sources/orders/events", data=body)).status == 200
        url = str(client.make_url("")).rstrip("/")
        code = await asyncio.to_thread(main, ["plan", "--config", str(new), "--url", url])
    out = capsys.readouterr().out
    assert code == 2
    said = (
        f"fills from the events the server kept (retain_events) (up to {bodies} log records of the "
    )
    said += "HTTP sources since "
    assert said in out
    # since the log's oldest segment was written: this test's start, within its run
    since = datetime.fromisoformat(out.split(said, 1)[1].split(")", 1)[0])
    assert abs(since.timestamp() - started) < 60
