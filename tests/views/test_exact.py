"""Exact sums in arrays (views/exact.py) against ``math.fsum`` and ``fractions``: the correctly
rounded exact sum, whatever the values' magnitudes, the order and the batching."""

from __future__ import annotations

import contextlib
import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from views.exact import Sums

FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=64)
PRICES = st.decimals(min_value=-10_000, max_value=10_000, places=2).map(float)
INTS = st.integers(min_value=-(2**62), max_value=2**62)
VALUE = st.one_of(FLOATS, PRICES, INTS.map(float), st.sampled_from([0.0, -0.0, 5e-324, 1e308]))
BATCH = st.lists(st.tuples(st.integers(0, 3), VALUE), max_size=30)


def exact(values: list[float]) -> float | None:
    total = sum((Fraction(v) for v in values), Fraction(0))
    try:
        return float(total)  # Fraction -> float is correctly rounded
    except OverflowError:
        return None


@settings(max_examples=400, deadline=None)
@given(st.lists(BATCH, min_size=1, max_size=5))
def test_every_row_is_the_correctly_rounded_exact_sum(
    batches: list[list[tuple[int, float]]],
) -> None:
    sums = Sums(4)
    seen: list[list[float]] = [[] for _ in range(4)]
    for batch in batches:
        if batch:
            rows = np.array([r for r, _ in batch], np.int64)
            sums.add(rows, np.array([v for _, v in batch], np.float64))
        for row, value in batch:
            seen[row].append(value)
    got = sums.floats()
    for row in range(4):
        want = exact(seen[row])
        if want is not None and abs(want) < 1.7e308:
            assert got[row] == want, (seen[row], got[row], want)
            with contextlib.suppress(OverflowError):  # fsum's partials may overflow; ours not
                assert want == math.fsum(seen[row])


@settings(max_examples=200, deadline=None)
@given(BATCH, BATCH, st.lists(st.integers(0, 1), min_size=4, max_size=4))
def test_merging_rows_equals_adding_their_values_to_one(
    first: list[tuple[int, float]], second: list[tuple[int, float]], groups: list[int]
) -> None:
    a, b = Sums(4), Sums(2)
    for sums, batch in ((a, first), (b, second)):
        if batch:
            rows = np.array([r % len(sums) for r, _ in batch], np.int64)
            sums.add(rows, np.array([v for _, v in batch], np.float64))
    rolled = a.gather(np.arange(4), np.array(groups), 2)  # a rollup of a's four rows
    rolled.absorb(b, np.array([0, 1]))  # a merge with another part's rows
    for g in range(2):
        values = [v for r, v in first if groups[r] == g] + [v for r, v in second if r % 2 == g]
        want = exact(values)
        if want is not None and abs(want) < 1.7e308:
            assert rolled.floats()[g] == want


@given(st.lists(INTS, max_size=20), st.lists(INTS, max_size=20))
def test_integer_sums_are_exact_integers_and_removable(adds: list[int], removes: list[int]) -> None:
    sums = Sums(1)
    if adds:
        sums.add(np.zeros(len(adds), np.int64), np.array(adds, np.int64))
    if removes:
        sums.add(np.zeros(len(removes), np.int64), np.array(removes, np.int64), negate=True)
    assert sums.integers(np.array([0])) == [sum(adds) - sum(removes)]


def test_halfway_cases_round_to_even() -> None:
    big = 2.0**53
    for values in ([big, 1.0], [big, 1.0, 2.0**-60], [big, 3.0], [-big, -1.0], [big + 2, 1.0]):
        sums = Sums(1)
        sums.add(np.zeros(len(values), np.int64), np.array(values))
        assert sums.floats()[0] == math.fsum(values), values
