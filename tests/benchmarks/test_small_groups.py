"""benchmarks/small_groups.py runs and reports every view it promises (a tiny run)."""

from __future__ import annotations

import re

import pytest

from benchmarks import small_groups


def test_every_view_alone_the_extra_ones_and_all_are_timed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    small_groups.main(["--warm", "50000", "--groups", "2", "--group", "3", "--events", "1", "2"])
    out = capsys.readouterr().out
    views = [
        "revenue",
        "latency",
        "buyers",
        "top_products",
        "top_buyers",
        "distinct_buyers",
        "user_biggest",
        "user_products",
    ]
    views += ["user_products_approx", "all"]
    for view in views:
        assert re.search(rf"50,000 a body {view} +[\d,]+ events/s", out), view
        for size in (1, 2):
            assert re.search(rf"{size} a body  {view} +\d+\.\d\d ms a group +[\d,]+ ", out), view
    assert out.count("50,000 a body") == len(views)  # the large bodies' rate: once per view


def test_views_asked_for_are_the_only_ones_timed(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--warm", "50000", "--groups", "1", "--group", "2", "--events", "1"]
    small_groups.main([*argv, "--views", "distinct_buyers"])
    out = capsys.readouterr().out
    assert re.findall(r"a body +(\w+) ", out) == ["distinct_buyers", "distinct_buyers"]
    with pytest.raises(SystemExit):
        small_groups.main([*argv, "--views", "nothing"])
    assert "no view nothing" in capsys.readouterr().err
