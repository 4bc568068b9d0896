"""The error bounds stated in views/sketches.py, checked against exact answers on seeded data."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from views.sketches import DDSketch, HyperLogLog, SpaceSaving


@pytest.mark.parametrize("n", [10, 256, 257, 1_000, 20_000, 200_000])
def test_hyperloglog_within_stated_bound(n: int) -> None:
    parts = [HyperLogLog() for _ in range(3)]
    for i in range(n):
        parts[i % 3].add(f"user-{i}")
        parts[(i + 1) % 3].add(f"user-{i}")  # overlap: merging must not double count
    merged = HyperLogLog()
    for part in parts:
        merged.merge(part)
    estimate = merged.estimate()
    if n <= 256:
        assert estimate == n
    else:
        assert abs(estimate - n) <= 0.025 * n, (estimate, n)


def test_hyperloglog_is_deterministic_across_types() -> None:
    a, b = HyperLogLog(), HyperLogLog()
    a.add(1)
    b.add(1.0)
    assert a.to_state() == b.to_state()


@pytest.mark.parametrize("seed", range(3))
def test_ddsketch_relative_error(seed: int) -> None:
    rng = random.Random(seed)
    xs = [rng.lognormvariate(0, 3) * rng.choice([1, 1, 1, -1]) for _ in range(20_000)]
    xs += [0.0] * 50
    sketch = DDSketch()
    for x in xs:
        sketch.add(x)
    ordered = sorted(xs)
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
        exact = ordered[math.floor(q * (len(xs) - 1))]
        got = sketch.quantile(q)
        assert got is not None
        assert abs(got - exact) <= 0.01 * abs(exact) + 1e-12, (q, got, exact)


def test_space_saving_guarantee_when_over_capacity() -> None:
    rng = random.Random(5)
    xs = [f"p{int(rng.paretovariate(1.0))}" for _ in range(50_000)]
    capacity = 100
    halves = [SpaceSaving(capacity), SpaceSaving(capacity)]
    for i, x in enumerate(xs):
        halves[i % 2].add(x)
    halves[0].merge(halves[1])
    summary = halves[0]
    true = Counter(xs)
    assert len(true) > capacity  # the interesting case: it had to evict
    bound = len(xs) / capacity * 2  # two merged summaries: errors add up
    for value, count in summary.counts.items():
        assert isinstance(value, str)
        assert true[value] <= count <= true[value] + bound
    for value, count in true.items():
        if count > bound:
            assert value in summary.counts


def test_hyperloglog_estimate_follows_later_adds_and_merges() -> None:
    sketch, other = HyperLogLog(), HyperLogLog()
    for i in range(5_000):
        sketch.add(i)
    first = sketch.estimate()
    for i in range(5_000, 10_000):
        sketch.add(i)
    assert abs(sketch.estimate() - 10_000) <= 250 < abs(first - 10_000)
    for i in range(10_000, 30_000):
        other.add(i)
    sketch.merge(other)
    assert abs(sketch.estimate() - 30_000) <= 750
