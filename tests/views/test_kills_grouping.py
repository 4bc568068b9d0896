"""views/grouping.py's contracts, where the engine's own tests leave a mutant alive
(docs/mutants.md): ``combos`` gives each row its index among the distinct (a, b) pairs — an
int64 index array, also for no rows — and agrees with plain Python on seeded data."""

from __future__ import annotations

import random

import numpy as np
import pytest

from views.grouping import combos


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
