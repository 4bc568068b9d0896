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


WHOLE = st.one_of(
    st.integers(-(2**31) + 1, 2**31 - 1).map(float),
    st.integers(-1000, 1000).map(float),
    st.sampled_from([0.0, -0.0, 2.0**31 - 1, -(2.0**31) + 1]),
)
WHOLE_BATCH = st.tuples(
    st.lists(st.tuples(st.integers(0, 3), WHOLE), max_size=30), st.booleans(), st.booleans()
)


class _General(Sums):
    """The general path only (decompose, 32-bit pieces): the reference of the one-bincount
    path for whole values below 2**31."""

    def _add_small_integers(self, *args: object) -> bool:
        return False


@settings(max_examples=300, deadline=None)
@given(st.lists(WHOLE_BATCH, min_size=1, max_size=6), st.sampled_from([0.25, 0.1, 3e9]))
def test_whole_values_take_one_bincount_and_leave_the_same_state(
    batches: list[tuple[list[tuple[int, float]], bool, bool]], other: float
) -> None:
    """Whole values (as floats or int64, negated or not), then a fraction or a value past
    2**31 (the general path again): the same scale and sums as the general path's, each the
    exact one."""
    fast, general = Sums(4), _General(4)
    seen: list[list[Fraction]] = [[] for _ in range(4)]
    for batch, as_ints, negate in batches:
        if not batch:
            continue
        rows = np.array([r for r, _ in batch], np.int64)
        values = np.array([v for _, v in batch], np.float64)
        if as_ints:
            values = values.astype(np.int64)
        for sums in (fast, general):
            sums.add(rows, values, negate=negate)
        for row, value in batch:
            seen[row].append(-Fraction(value) if negate else Fraction(value))
    for sums in (fast, general):
        sums.add(np.array([1]), np.array([other]))
    seen[1].append(Fraction(other))
    assert fast.scale == general.scale  # 0 while every value is whole
    rows = np.arange(4)
    assert fast.integers(rows) == general.integers(rows)
    got = fast.floats()
    for row in range(4):
        total = sum(seen[row], Fraction(0))
        assert got[row] == float(total)
        assert fast.integers(np.array([row]))[0] == (total if total.denominator == 1 else None)
