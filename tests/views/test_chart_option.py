"""The ``chart`` view option: what the dashboard plots, declared or defaulted, checked at load
time with the file, the view and the field named, and listed by ``GET /v1/views``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from api.demo import EXAMPLE
from tests.helpers import running
from views.config import ConfigError, load, parse

HEADER = '[sources.orders]\ntime = "ts"\n'
WINDOWED = "SELECT tumble(ts, '1 minute') AS m, {aggs} FROM orders GROUP BY m"


def charts(aggs: str, option: str = "", sql: str = WINDOWED) -> dict[str, str | None]:
    text = f'{HEADER}[views.v]\nsql = "{sql.format(aggs=aggs)}"\n{option}'
    return parse(tomllib.loads(text), "c.toml").charts


@pytest.mark.parametrize(
    ("aggs", "expected"),
    [
        ("count(*) AS requests, p95(latency) AS p95, max(latency) AS slowest", "p95"),
        ("count(*) AS n, count(x) AS xs", "n"),  # counts only: the first count
        ("top_k(p, 3) AS top, count(*) AS n", "n"),  # a list is never plotted
        ("count(*) AS n, count_distinct(u) AS users", "users"),  # distinct counts are a metric
        ("top_k(p, 3) AS top", None),
    ],
)
def test_the_default_is_the_first_aggregate_that_is_not_a_count(
    aggs: str, expected: str | None
) -> None:
    assert charts(aggs) == {"v": expected}


def test_a_declared_chart_and_views_without_a_window() -> None:
    aggs = "count(*) AS n, sum(a) AS revenue, avg(a) AS avg_amount"
    assert charts(aggs, 'chart = "avg_amount"\n') == {"v": "avg_amount"}
    assert charts(aggs, 'chart = "n"\n') == {"v": "n"}
    totals = "SELECT {aggs} FROM orders"
    assert charts(aggs, sql=totals) == {"v": None}  # all-time totals: a table, no chart


@pytest.mark.parametrize(
    ("aggs", "option", "message"),
    [
        ("count(*) AS n", 'chart = "revenue"', "'revenue' is not an aggregate column"),
        ("count(*) AS n, top_k(p, 3) AS top", 'chart = "top"', "this view's: n"),
        ("count(*) AS n", 'chart = "m"', "'m' is not an aggregate column"),  # the window
        ("count(*) AS n", "chart = 3", "3 is not an aggregate column"),
    ],
)
def test_a_bad_chart_names_file_view_and_field(
    tmp_path: Path, aggs: str, option: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'{HEADER}[views.v1]\nsql = "{WINDOWED.format(aggs=aggs)}"\n{option}\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: view 'v1': field 'chart': "), text
    assert message in text, text


def test_a_chart_on_a_view_without_a_window_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'{HEADER}[views.v1]\nsql = "SELECT count(*) AS n FROM orders"\nchart = "n"\n')
    with pytest.raises(ConfigError, match="field 'chart': only views with a time window"):
        load(path)


def test_the_demo_charts_what_its_views_are_about() -> None:
    assert load(EXAMPLE).charts == {
        "revenue_by_country": "revenue",
        "latency_by_device": "p50",
        "buyers_by_country_hourly": "buyers",
        "top_products": None,
        "order_status": None,
    }


@pytest.mark.asyncio
async def test_the_view_list_says_what_each_view_charts(tmp_path: Path) -> None:
    config = f'{HEADER}[views.v]\nsql = "{WINDOWED.format(aggs="count(*) AS n, sum(a) AS s")}"\n'
    config += '[views.t]\nsql = "SELECT count(*) AS n FROM orders"\n'
    async with running(config, tmp_path) as (client, _):
        listed = await (await client.get("/v1/views")).json()
        assert {v["name"]: v["chart"] for v in listed["views"]} == {"v": "s", "t": None}
