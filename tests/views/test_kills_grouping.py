"""views/grouping.py's contracts, where the engine's own tests leave a mutant alive
(docs/mutants.md): ``combos`` gives each row its index among the distinct (a, b) pairs — an
int64 index array, also for no rows — and agrees with plain Python on seeded data."""

from __future__ import annotations

import random

import numpy as np
import pytest

from views.grouping import combos, pack


def reference(a: list[int], b: list[int]) -> list[int]:
    """Plain Python: each row's index among the sorted distinct (a, b) pairs."""
    distinct = sorted(set(zip(a, b, strict=True)))
    at = {pair: i for i, pair in enumerate(distinct)}
    return [at[pair] for pair in zip(a, b, strict=True)]


def test_combos_of_no_rows_is_an_empty_index() -> None:
    out = combos(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert out.dtype == np.int64
    assert out.shape == (0,)
    assert np.arange(3)[out].tolist() == []  # usable to index with, as every caller does


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spread", [10, 2**40, 2**62], ids=["packed", "wide", "sorted"])
def test_combos_match_plain_python(seed: int, spread: int) -> None:
    rng = random.Random(seed)
    a = [rng.randrange(-spread, spread) for _ in range(300)]
    b = [rng.choice([rng.randrange(-spread, spread), 7]) for _ in range(300)]
    out = combos(np.array(a, np.int64), np.array(b, np.int64))
    assert out.tolist() == reference(a, b)


def test_pack_of_no_rows_is_no_codes() -> None:
    out = pack([np.zeros(0, np.int64), np.zeros(0, np.int64)])
    assert out is not None
    assert out.tolist() == []


def test_pack_refuses_columns_whose_ranges_do_not_fit_one_int64() -> None:
    """Two columns of 2**40 values each: 2**80 codes. Packed anyway, they would wrap around
    and two rows could share a code; refused, the caller sorts instead."""
    wide = np.array([0, 2**40 - 1], np.int64)
    assert pack([wide, wide]) is None
    assert pack([wide, np.array([0, 3], np.int64)]) is not None  # 2**42 codes: they fit


@pytest.mark.parametrize("seed", range(4))
def test_pack_keeps_the_rows_lexicographic_order(seed: int) -> None:
    rng = random.Random(seed)
    columns = [[rng.randrange(0, w) for _ in range(200)] for w in (5, 1000, 3)]
    out = pack([np.array(c, np.int64) for c in columns])
    assert out is not None
    rows = list(zip(*columns, strict=True))
    by_code = sorted(range(200), key=lambda i: (int(out[i]), i))
    assert [rows[i] for i in by_code] == sorted(rows)  # codes order as the rows do
    assert len(set(out.tolist())) == len(set(rows))  # one code per distinct row
