"""Filters on every key of string-typed keys are answered by lookups; same rows as a scan."""

from __future__ import annotations

import random
from typing import Any

import pytest

from views.config import parse
from views.query import Query, all_rows, run
from views.registry import Batch, Registry

SQL = "SELECT a, b, tumble(ts, '1 minute') AS m, count(*) AS n FROM s GROUP BY a, b, m"


def registry(declared: bool) -> Registry:
    source: dict[str, Any] = {"time": "ts"}
    if declared:
        source["fields"] = {"a": "string", "b": "string"}
    config = parse({"sources": {"s": source}, "views": {"v": {"sql": SQL}}})
    reg = Registry(config.sources, config.views)
    rng = random.Random(5)
    events = [
        {
            "ts": 1_790_000_000_000 + rng.randrange(600_000),
            "a": rng.choice(["x", "y", "null", None, "z"]),
            "b": rng.choice(["1", "2", None]),
        }
        for _ in range(3000)
    ]
    reg.apply(Batch("s", events, 1))
    return reg


@pytest.mark.parametrize(
    "filters",
    [
        {"a": {"x"}, "b": {"1"}},
        {"a": {"null"}, "b": {"1", "2"}},  # "null" matches NULL and the string "null"
        {"a": {"x", "y", "nope"}, "b": {"null"}},
        {"a": {"x"}},  # not every key filtered: a scan
    ],
)
def test_lookup_answers_equal_the_scan_and_a_plain_reference(filters: dict[str, set[str]]) -> None:
    declared, scalar = registry(True), registry(False)
    query = Query(filters={k: frozenset(v) for k, v in filters.items()}, limit=10_000)
    fast = run(declared.views["v"], query).rows
    slow = run(scalar.views["v"], query).rows  # "scalar" keys: always scanned
    assert fast == slow
    expected = {}
    for (start, key), (n,) in all_rows(declared.views["v"]).items():
        texts = ["null" if v is None else v for v in key]
        if all(texts[i] in filters[n] for i, n in enumerate("ab") if n in filters):
            expected[(start, key)] = n
    assert len(fast) == len(expected) > 0
    assert {(r[2], (r[0], r[1])): r[3] for r in fast} == {
        (s, k): n for (s, k), n in expected.items()
    }


def test_a_lookup_on_a_view_before_its_first_event_answers_no_rows() -> None:
    """No key interned yet: a filter on every key finds no slots (and does not fail)."""
    source: dict[str, Any] = {"time": "ts", "fields": {"a": "string", "b": "string"}}
    config = parse({"sources": {"s": source}, "views": {"v": {"sql": SQL}}})
    view = Registry(config.sources, config.views).views["v"]
    query = Query(filters={"a": frozenset({"x"}), "b": frozenset({"1"})})
    assert run(view, query).rows == []
