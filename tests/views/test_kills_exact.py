"""views/exact.py at the edges its hypothesis tests rarely reach: whole sums of fractions,
batches longer than one bincount chunk, sums past float64's range, subnormal totals, rows read
selectively, rows grown later. The reference is ``fractions.Fraction`` (exact) and Python's own
correctly rounded int and Fraction conversions.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from views.exact import PYTHON_ROWS, Sums, decompose, to_floats


def summed(rows: int, values: list[float], at: list[int] | None = None) -> Sums:
    sums = Sums(rows)
    where = np.array(at if at is not None else [0] * len(values), np.int64)
    sums.add(where, np.array(values, np.float64))
    return sums


def test_decompose_gives_an_exact_mantissa_and_exponent() -> None:
    rng = random.Random(1)
    values = [
        0.0,
        -0.0,
        1.0,
        -3.5,
        5e-324,
        1.7e308,
        0.1,
        *(rng.uniform(-1e6, 1e6) for _ in range(50)),
    ]
    m, e = decompose(np.array(values, np.float64))
    for value, mantissa, exponent in zip(values, m.tolist(), e.tolist(), strict=True):
        assert Fraction(mantissa) * Fraction(2) ** exponent == Fraction(value)
        assert abs(mantissa) < 2**53
        if value == 0:
            assert (mantissa, exponent) == (0, 0)
    ints = np.array([0, -7, 2**62], np.int64)
    m, e = decompose(ints)
    assert (m.tolist(), e.tolist()) == ([0, -7, 2**62], [0, 0, 0])
    assert decompose(np.array([3, 4], np.uint32))[0].dtype == np.int64


@pytest.mark.parametrize(
    ("values", "whole"),
    [
        ([0.5, 0.5], 1),
        ([-0.5, -0.5, -0.25, -0.75], -2),
        ([0.25], None),
        ([2.0**-60, 1.0], None),
        ([2.0**70, 2.0**70], 2**71),
        ([2.0**70, -(2.0**70), 3.0], 3),
        ([], 0),
    ],
)
def test_integers_gives_a_whole_sum_exactly_or_none(values: list[float], whole: int | None) -> None:
    sums = Sums(2)
    if values:
        sums.add(np.ones(len(values), np.int64), np.array(values, np.float64))
    assert sums.integers(np.array([1, 0])) == [whole, 0]


def test_a_batch_longer_than_a_chunk_is_exact() -> None:
    """More than 2**18 values at once: the pieces are summed a chunk at a time."""
    rng = random.Random(2)
    n = (1 << 18) + 1000
    values = [rng.choice([1.5, 2.0**40 + 0.25, -3.0, 2.0**-20]) for _ in range(n)]
    rows = [rng.randrange(3) for _ in range(n)]
    sums = summed(3, values, rows)
    for row in range(3):
        exact = sum(
            (Fraction(v) for v, r in zip(values, rows, strict=True) if r == row), Fraction(0)
        )
        assert sums.floats()[row] == float(exact)


def test_small_integers_longer_than_a_chunk_are_exact() -> None:
    """The same for whole values below 2**31 (``_add_small_integers``: one ``bincount`` a
    chunk): every chunk counted once, and a row only the first chunk touches keeps its sum."""
    rng = random.Random(4)
    n = (1 << 18) + 1000
    values = [rng.choice([1, 7, 2**30, -5]) for _ in range(n)]
    rows = [rng.randrange(2) for _ in range(n)]
    rows[10] = 2  # row 2: one value, in the first chunk only
    sums = summed(3, [float(v) for v in values], rows)
    expected = [sum(v for v, r in zip(values, rows, strict=True) if r == row) for row in range(3)]
    assert sums.integers(np.arange(3)) == expected


def test_sums_beyond_float64_read_as_infinities_and_back() -> None:
    sums = summed(3, [1.7e308, 1.7e308, -1.7e308, -1.7e308, -1.7e308, 1.0], [0, 0, 1, 1, 1, 2])
    assert sums.floats().tolist() == [math.inf, -math.inf, 1.0]
    sums.add(np.array([0, 1]), np.array([-1.7e308, 1.7e308]))  # back in range: exact again
    assert sums.floats().tolist() == [1.7e308, -3.4e308 + 1.7e308, 1.0]


def test_subnormal_totals_are_rounded_once() -> None:
    """Sums under 2**-1022 are rounded by Python's exact int division, not scaled twice."""
    tiny = [5e-324, 1e-310, -2.5e-320, 3e-315, 2.2250738585072014e-308]
    for cut in range(1, len(tiny) + 1):
        values = tiny[:cut]
        exact = sum((Fraction(v) for v in values), Fraction(0))
        assert summed(1, values).floats()[0] == float(exact), values
    # and a subnormal total reached from large values that cancel
    values = [1.0, 1e-310, -1.0]
    assert summed(1, values).floats()[0] == float(sum(map(Fraction, values), Fraction(0)))


def test_rows_can_be_read_selectively_and_grown_later() -> None:
    sums = summed(2, [0.1, 0.2, 0.3], [0, 1, 1])
    assert sums.floats(np.array([1])).tolist() == [float(Fraction(0.2) + Fraction(0.3))]
    sums.grow(5)
    assert len(sums) == 5
    assert sums.floats().tolist()[2:] == [0.0, 0.0, 0.0]
    sums.grow(3)  # never shrinks
    assert len(sums) == 5
    sums.add(np.array([4]), np.array([2.5]))
    assert sums.floats().tolist() == [0.1, float(Fraction(0.2) + Fraction(0.3)), 0.0, 0.0, 2.5]
    sums.grow(6)  # one row more
    assert len(sums) == 6
    sums.add(np.array([5]), np.array([-1.0]))
    assert sums.floats().tolist()[4:] == [2.5, -1.0]


def test_zeros_add_nothing_not_even_a_limb() -> None:
    """A zero decomposes as 0 * 2**0: it must not count in the range the limbs are fitted to.
    2**31 - 0.5 at scale -1 reaches bit 32, one limb; an exponent 0 would make it two."""
    sums = Sums(1)
    sums.add(np.array([0, 0, 0]), np.array([2.0**31 - 0.5, 0.0, -0.0]))
    assert (sums.limbs.shape[1], sums.scale) == (1, -1)
    assert sums.floats().tolist() == [2.0**31 - 0.5]


@pytest.mark.parametrize(
    "value",
    [
        lambda rng: round(rng.uniform(0, 500), 2),  # prices with cents
        lambda rng: rng.lognormvariate(3, 1),  # latencies
        lambda rng: -round(rng.uniform(0, 500), 2),  # refunds
    ],
    ids=["prices", "latencies", "refunds"],
)
def test_typical_sums_stay_within_four_limbs(value: Any) -> None:
    """The module's promise: prices with cents and latencies need 3-4 limbs, 24-32 bytes a sum.
    Each value finer than the sums so far rescales them (exact); a rescale gives the shift's carry
    room in one more limb, and must not keep it when no sum needs it: they grew a limb a
    rescale (six for prices with cents)."""
    rng = random.Random(5)
    sums = Sums(4)
    exact = [Fraction(0)] * 4
    for _ in range(50):
        values = [value(rng) for _ in range(1000)]
        rows = [rng.randrange(4) for _ in range(1000)]
        sums.add(np.array(rows, np.int64), np.array(values, np.float64))
        for row, x in zip(rows, values, strict=True):
            exact[row] += Fraction(x)
    assert sums.limbs.shape[1] <= 4
    assert sums.floats().tolist() == [float(x) for x in exact]


def test_subtracting_what_was_added_leaves_zero() -> None:
    rng = random.Random(3)
    values = [rng.uniform(-1e9, 1e9) * 10 ** rng.randrange(-30, 30) for _ in range(300)]
    rows = np.array([i % 4 for i in range(300)], np.int64)
    sums = summed(4, values, rows.tolist())
    sums.add(rows, np.array(values), negate=True)
    assert sums.floats().tolist() == [0.0] * 4
    assert sums.integers(np.arange(4)) == [0] * 4


def test_merging_sums_of_different_scales_and_widths() -> None:
    fine = summed(2, [2.0**-900, 1.0, 3.0], [0, 0, 1])
    coarse = summed(3, [2.0**900, -(2.0**900), 7.0, 2.0**1000], [0, 0, 1, 2])
    coarse.absorb(fine, np.array([2, 0]))
    expected = [
        Fraction(3.0),
        Fraction(7.0),
        Fraction(2.0**1000) + Fraction(2.0**-900) + Fraction(1.0),
    ]
    assert coarse.floats().tolist() == [float(x) for x in expected]
    rolled = coarse.gather(np.array([0, 1, 2, 0]), np.array([0, 0, 1, 1]), 2)
    assert rolled.floats().tolist() == [
        float(expected[0] + expected[1]),
        float(expected[2] + expected[0]),
    ]


@pytest.mark.parametrize("sign", [1, -1])
def test_merged_lowest_limbs_that_carry_exactly_into_a_new_limb(sign: int) -> None:
    """Two parts' sums of 2**31 each (one limb each) merge into 2**32: the low limb is 0 after
    the carry and the new top limb holds it all — it is the value, not room to trim away."""
    half = sign * 2**30
    mine, theirs = summed(1, [half, half]), summed(1, [half, half])
    assert mine.limbs.shape[1] == 1  # a whole int64 limb holds 2**31 without a carry
    mine.absorb(theirs, np.array([0]))
    assert mine.integers(np.array([0])) == [sign * 2**32]
    assert mine.floats().tolist() == [float(sign * 2**32)]


def test_sums_stay_as_wide_as_their_values_however_often_they_absorb() -> None:
    """Each merge gives a carry room in one more limb; what no sum needs is trimmed again, so a
    part's sums do not grow a limb a rollup (memory, snapshots)."""
    small = summed(2, [3.0, -5.0], [0, 1])
    big = summed(2, [2.0**100, 1.0], [0, 1])
    widths = (small.limbs.shape[1], big.limbs.shape[1])
    expected = [Fraction(3), Fraction(-5)]
    wide = [Fraction(2**100), Fraction(1)]
    for i in range(20):
        small.absorb(summed(2, [3.0, -5.0], [0, 1]), np.array([0, 1]))
        big.absorb(summed(1, [float(i)]), np.array([1]))
        expected = [expected[0] + 3, expected[1] - 5]
        wide[1] += i
    assert (small.limbs.shape[1], big.limbs.shape[1]) == widths == (1, 4)
    assert small.integers(np.arange(2)) == expected
    assert big.integers(np.arange(2)) == wide


def test_to_floats_reads_limbs_as_documented() -> None:
    """Row value: sum(limbs[k] * 2**(32 k)) * 2**scale, all limbs but the top in [0, 2**32)."""
    rng = random.Random(4)
    rows = []
    for _ in range(300):
        high = rng.randrange(7)  # limbs from here up are 0 (or, for a negative, all ones)
        low = [rng.randrange(1 << 32) for _ in range(5)]
        negative = rng.random() < 0.5
        for k in range(high, 5):
            low[k] = (1 << 32) - 1 if negative else 0
        top = rng.choice([-1] if negative else [0, 1, rng.randrange(1 << 31)])
        rows.append([*low, top])
    assert len(rows) >= PYTHON_ROWS  # all at once: the vectorised path; seven at a time: Python's
    for scale in (-1100, -64, -1, 0, 5, 700):
        got = to_floats(np.array(rows, np.int64), scale).tolist()
        few = [
            v for i in range(0, len(rows), 7) for v in to_floats(np.array(rows[i : i + 7]), scale)
        ]
        assert few == got
        for row, value in zip(rows, got, strict=True):
            exact = (
                Fraction(sum(limb << (32 * k) for k, limb in enumerate(row))) * Fraction(2) ** scale
            )
            try:
                want = float(exact)
            except OverflowError:
                want = math.copysign(math.inf, exact)
            assert value == want, (row, scale)


def test_to_floats_rounds_up_a_tie_broken_only_by_the_lowest_dropped_bits() -> None:
    """2**64 + 2049 and 2**65 + 4098: the bits past a float64's 53 read as exactly half, but a
    lower bit that is dropped (bit 0, then bit 1) makes them more than half, so they round up —
    on the vectorised path (many rows at once) as in Python's own int-to-float."""
    rows = [[(1 << 11) | 1, 0, 1], [(1 << 12) | 2, 0, 2]] * (PYTHON_ROWS // 2 + 1)
    got = to_floats(np.array(rows, np.int64), 0).tolist()
    assert got[:2] == [float(2**64 + 2049), float(2**65 + 4098)]
    assert got[:2] == [2.0**64 + 4096, 2.0**65 + 8192]  # up, not to the even neighbour below
    assert len(set(got)) == 2


def _limbs(total: int, width: int) -> list[int]:
    """``total`` as ``width`` normalized 32-bit limbs (the last one signed)."""
    out = []
    for _ in range(width - 1):
        out.append(total & 0xFFFFFFFF)
        total >>= 32
    return [*out, total]


def test_to_floats_reads_a_tie_broken_by_any_limb_below_the_three_it_keeps() -> None:
    """The vectorised conversion keeps a sum's top three limbs (96 bits) and reads every limb
    below them as one sticky bit: a half-way value is more than half when any lower limb holds a
    bit, wherever it is (the lowest limb, one between, a limb of value 1), and exactly half
    (to even) when none does — as Python's own int-to-float says, for each sign."""
    half = (1 << 159) | (1 << 106)  # 2**159 and half its ulp (2**107): five limbs, top = 4
    totals = [half + 1, half + (1 << 40), half + (5 << 32), half, half + (1 << 64)]
    totals += [-t for t in totals]
    width = 6
    rows = [_limbs(t, width) for t in totals] * (PYTHON_ROWS // len(totals) + 1)
    got = to_floats(np.array(rows, np.int64), 0).tolist()[: len(totals)]
    assert got == [float(t) for t in totals]
    assert got[:4] == [2.0**159 + 2.0**107] * 3 + [2.0**159]  # the premise: up, up, up, even


def test_to_floats_rounds_a_subnormal_sum_once_and_an_overflow_to_infinity() -> None:
    """Below 2**-1022 a float has fewer than 53 bits: rounding to 53 and then to those would
    round twice. 2**-1030 * (1 + 2**-44 + a run of ones just under its half-ulp): rounded once
    (Python's int division) it goes down; rounded to 53 bits first, the run carries into an
    exact half that goes up. And a sum past float64's range is infinite, as it reads, without a
    warning. On the vectorised path, for each sign."""
    scale = -1100
    twice = (1 << 70) | (1 << 26) | ((1 << 25) - 1)  # value = twice * 2**-1100, about 2**-1030
    huge = 1 << 1030  # past float64's range (2**1024), at scale 0
    totals = [twice, -twice]
    rows = [_limbs(t, 4) for t in totals] * (PYTHON_ROWS // 2 + 1)
    got = to_floats(np.array(rows, np.int64), scale).tolist()[:2]
    want = [t / (1 << -scale) for t in totals]
    assert got == want
    assert want[0] < float(np.ldexp(np.float64(twice), scale))  # the premise: twice is wrong
    wide = [_limbs(t, 34) for t in (huge, -huge)] * (PYTHON_ROWS // 2 + 1)
    assert to_floats(np.array(wide, np.int64), 0).tolist()[:2] == [math.inf, -math.inf]


def test_integers_from_2_31_up_are_summed_exactly_through_the_engine() -> None:
    """``Sums._add_small_integers`` adds whole values below 2**31 in one float64 ``bincount``
    (a chunk's total stays below 2**53); larger ones take the exact path. Integers just above
    the bound, and far above it, many to a group: every sum equal to Python's."""
    from views.config import parse
    from views.query import all_rows
    from views.registry import Batch, Registry

    sql = "SELECT k, sum(n) AS total FROM s GROUP BY k"
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": sql}}})
    registry = Registry(config.sources, config.views)
    rng = random.Random(11)
    # A batch's largest value decides its path: one batch of values from 2**31 to 2**49, one
    # with larger ones too.
    batches = [[2**31, 2**31 + 1, 3**30 + 7, 2**48 + 1, 5], [2**31 + 3, 2**52 - 3, 2**60 + 1]]
    events: list[dict[str, Any]] = []
    for position, choices in enumerate(batches, start=1):
        batch = [
            {"ts": 1_790_000_000_000, "k": rng.choice("ab"), "n": rng.choice(choices)}
            for _ in range(3000)
        ]
        registry.apply(Batch("s", batch, position))
        events += batch
    expected: dict[str, int] = {}
    for event in events:
        expected[event["k"]] = expected.get(event["k"], 0) + event["n"]
    got = {key[0]: row[0] for (_, key), row in all_rows(registry.views["v"]).items()}
    assert got == expected
    assert all(isinstance(total, int) for total in got.values())
