"""top_k's summaries merged on arrays (``views/aggregates/topk.py``) against the scalar
Space-Saving of ``views/sketches.py`` fed the same batches (``tests/oracle/aggregates.py``):
entry for entry — codes, counts, errors — on seeded random batches whose counts tie at the
capacity's cut, where the order of values decides what is kept."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from tests.oracle.aggregates import TopK as OracleTop
from views.aggregates import Batch, TopK
from views.aggregates.topk import _by_value, _sorted
from views.batch import from_values
from views.sketches import SpaceSaving, sort_key
from views.values import Values

# Few values, so counts tie often at the cut, where the values' order decides what is kept
# (``_by_value``): numbers and strings (1 and 1.0 one value; NULLs skipped); strings only
# (Arrow sorts them: non-ASCII, upper before lower case); integers only (numpy sorts them).
POOLS: dict[str, list[Any]] = {
    "mixed": [*"abcdefgh", 0, 1, 1.0, 2.5, -3, "1", None],
    "strings": ["a", "B", "é", "e", "ü", "日本", "z", "Zebra", "a b", "", "\U0001f600", None],
    "ints": [0, 1, -1, 7, 2**40, -(2**40), 12, 5, None],
}


def batches(rng: random.Random, groups: int, pool: list[Any]) -> list[list[tuple[int, Any]]]:
    """Random (group, value) rows in batches of 1 to 30, skewed towards a few values."""
    weights = [rng.random() ** 3 for _ in pool]
    return [
        [(rng.randrange(groups), rng.choices(pool, weights)[0]) for _ in range(rng.randint(1, 30))]
        for _ in range(rng.randint(3, 25))
    ]


def fold(aggregate: TopK, run: list[list[tuple[int, Any]]], groups: int) -> None:
    """``run``'s batches folded in turn: one ``fold``, or several in one ``fold_batches``."""
    rows = [row for batch in run for row in batch]
    aggregate.resize(groups)
    values = from_values([value for _, value in rows])
    group = np.array([g for g, _ in rows], np.int64)
    batch = Batch(np.arange(groups), group, values)
    if len(run) == 1:
        aggregate.fold(batch)
        return
    ends = np.cumsum([len(b) for b in run])
    aggregate.fold_batches(batch, np.searchsorted(ends, np.arange(len(rows)), "right"))


def fed(oracles: list[OracleTop], run: list[list[tuple[int, Any]]]) -> None:
    for batch in run:
        for group, value in batch:
            if value is not None:
                oracles[group].add(value)
        for oracle in oracles:
            oracle.end_batch()


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("seed", range(12))
def test_a_summary_is_the_scalar_summary_fed_the_same_batches(seed: int, pool: str) -> None:
    """Every batch, folded alone or a few at once, leaves each group's summary the scalar
    one's, entry for entry; the answers are its ``top(k)``."""
    rng = random.Random(seed)
    capacity = rng.choice([1, 2, 3, 5, 8, 20])
    k = rng.randint(1, capacity)
    groups = rng.choice([1, 3])
    aggregate = TopK(Values(), k=k, capacity=capacity)
    oracles = [OracleTop(k=k, capacity=capacity) for _ in range(groups)]
    pending = batches(rng, groups, POOLS[pool])
    while pending:
        taken = rng.randint(1, 4)
        run, pending = pending[:taken], pending[taken:]
        fold(aggregate, run, groups)
        fed(oracles, run)
        for group, oracle in enumerate(oracles):
            assert aggregate.summary(group).to_state() == oracle.sketch.to_state(), group
    assert aggregate.results(np.arange(groups)) == [o.result() for o in oracles]


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("seed", range(15))
def test_parts_merged_are_the_scalar_merge(seed: int, shared: bool) -> None:
    """``absorb`` (a query over several parts, rollups): each part's summary merged in turn,
    as ``SpaceSaving.merge`` does — from a part sharing the values' codes (a view's parts) or
    with codes of its own (``shared`` False)."""
    rng = random.Random(seed)
    capacity = rng.choice([2, 3, 5, 8])
    values = Values()
    parts = [TopK(values if shared else Values(), k=2, capacity=capacity) for _ in range(3)]
    oracles = [OracleTop(k=2, capacity=capacity) for _ in parts]
    for part, oracle in zip(parts, oracles, strict=True):
        for batch in batches(rng, 1, POOLS["mixed"]):
            fold(part, [batch], 1)
            fed([oracle], [batch])
    merged = TopK(values, k=2, capacity=capacity)
    merged.resize(1)
    expected = SpaceSaving(capacity)
    for part, oracle in zip(parts, oracles, strict=True):
        merged.absorb(part, np.array([0]), np.array([0]))
        expected.merge(oracle.sketch)
        assert merged.summary(0).to_state() == expected.to_state()


def test_true_and_1_are_counted_apart() -> None:
    """A ``scalar`` field's ``true`` and ``1`` are two values (``views.values``): the answer
    counts each — a summary kept as a dict took them for one key and answered ``true`` with
    ``1``'s count."""
    aggregate = TopK(Values(), k=3, capacity=10)
    fold(aggregate, [[(0, v) for v in [True, 1, 1, "1", True, True]]], 1)
    assert aggregate.results(np.array([0])) == [
        [{"value": True, "count": 3}, {"value": 1, "count": 2}, {"value": "1", "count": 1}]
    ]


@pytest.mark.parametrize(
    "values",
    [
        ["b", "a", "B", "é", "e", "日本", "\U0001f600", "", "a b", "ab"],
        [3, -1, 0, 2**62, -(2**63), 7],
        [3, 2**64 - 1, 2**63, 0],  # beyond int64: in a column of mixed types (objects)
        ["b", 1, 2.5, True, "a", False, 0],
    ],
)
def test_tied_values_are_ranked_as_sort_key_ranks_them(values: list[Any]) -> None:
    """``_by_value`` — Arrow for strings, numpy for integers, ``sort_key`` for the rest — is
    ``sort_key``'s order."""
    expected = sorted(range(len(values)), key=lambda i: sort_key(values[i]))
    assert _by_value(values).tolist() == expected


@pytest.mark.parametrize("highs", [(4, 7, 50), (4, 7, 2**58)])
def test_columns_sorted_together_are_sorted_tuples(highs: tuple[int, int, int]) -> None:
    """``_sorted``: by a packed code when the columns' ranges fit one, by ``np.lexsort`` when
    they do not (a column up to 2**58); the first two columns tie often, so each decides."""
    rng = np.random.default_rng(highs[2])
    keys = [rng.integers(0, high, 500) for high in highs]
    got = list(zip(*(column.tolist() for column in _sorted(*keys)), strict=True))
    assert got == sorted(zip(*(column.tolist() for column in keys), strict=True))


def test_an_empty_summary_from_a_part_of_its_own_merges_as_nothing() -> None:
    """A pair with no entries, absorbed from a part with its own codes (``_recoded``), adds
    nothing — and leaves the arrays integer codes for the pairs merged after it."""
    target = TopK(Values(), k=2, capacity=3)
    target.resize(2)
    other = TopK(Values(), k=2, capacity=3)
    fold(other, [[(0, "a"), (0, "b"), (0, "a")]], 2)  # group 1: no rows, no entries
    target.absorb(other, np.array([1, 0]), np.array([0, 1]))
    assert target.results(np.array([0, 1])) == [
        [],
        [{"value": "a", "count": 2}, {"value": "b", "count": 1}],
    ]
