"""The exact multisets' arrays (views/aggregates/multiset.py) against a plain Counter: adding,
taking off, and asking how many of a (pair, value) there are — the question every retraction
of an exact aggregate asks first."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from views.aggregates.multiset import Multiset

ENTRY = st.tuples(st.integers(0, 5), st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 3))
BATCH = st.lists(st.tuples(ENTRY, st.integers(-2, 3)), max_size=25)


def add(
    multiset: Multiset,
    reference: Counter[tuple[int, int]],
    batch: list[tuple[tuple[int, int], int]],
) -> None:
    if batch:
        pairs = np.array([p for (p, _), _ in batch], np.int64)
        keys = np.array([k for (_, k), _ in batch], np.int64)
        multiset.add(pairs, keys, np.array([c for _, c in batch], np.int64))
    for entry, count in batch:
        reference[entry] += count


def entries(multiset: Multiset) -> list[tuple[int, int, int]]:
    arrays = (multiset.pair, multiset.key, multiset.count)
    return list(zip(*(a.tolist() for a in arrays), strict=True))


@settings(max_examples=300, deadline=None)
@given(st.lists(BATCH, max_size=6), st.lists(ENTRY, max_size=25))
def test_have_counts_what_was_added_and_not_taken_off(
    batches: list[list[tuple[tuple[int, int], int]]], asked: list[tuple[int, int]]
) -> None:
    multiset, reference = Multiset(), Counter[tuple[int, int]]()
    for batch in batches:
        add(multiset, reference, batch)
    known = list(reference)  # ask about what is there too, not only random entries
    questions = asked + known
    pairs = np.array([p for p, _ in questions], np.int64)
    keys = np.array([k for _, k in questions], np.int64)
    assert multiset.have(pairs, keys).tolist() == [reference[q] for q in questions]
    # the arrays themselves: one entry per (pair, key) held, sorted by pair then key, none at 0
    # (small keys take the packed merge, 64-bit ones the two-key sort)
    assert entries(multiset) == sorted((p, k, c) for (p, k), c in reference.items() if c)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(BATCH, st.booleans()), max_size=8))
def test_adds_queued_between_reads_leave_what_adding_them_in_turn_leaves(
    steps: list[tuple[list[tuple[tuple[int, int], int]], bool]],
) -> None:
    """Adds wait for the next read (a change stream's adds and retractions merge in one sort):
    whenever a read comes — after one add or several, an entry reaching 0 in between or not —
    it sees exactly the entries held."""
    multiset, reference = Multiset(), Counter[tuple[int, int]]()
    for batch, read in steps:
        add(multiset, reference, batch)
        if read:
            held = sorted((p, k, c) for (p, k), c in reference.items() if c)
            assert entries(multiset) == held
            assert len(multiset) == len(held)


def test_long_runs_merge_and_answer_like_a_counter() -> None:
    """Thousands of values in a pair's run (a change stream's max over a busy minute): every
    add found in its run or put where it goes, every question answered, batch after batch."""
    rng = np.random.default_rng(15)
    multiset, reference = Multiset(), Counter[tuple[int, int]]()
    for _ in range(12):
        pairs = rng.integers(0, 7, 4_000)
        keys = rng.integers(-3_000, 3_000, 4_000) * 1_000_003  # beyond packing, like float bits
        counts = rng.integers(-1, 3, 4_000)
        multiset.add(pairs, keys, counts)
        for p, k, c in zip(pairs.tolist(), keys.tolist(), counts.tolist(), strict=True):
            reference[(p, k)] += c
        others = zip(rng.integers(-1, 8, 500).tolist(), keys[:500].tolist(), strict=True)
        asked = [*reference, *others]
        got = multiset.have(
            np.array([p for p, _ in asked], np.int64), np.array([k for _, k in asked], np.int64)
        )
        assert got.tolist() == [reference.get(q, 0) for q in asked]
        assert entries(multiset) == sorted((p, k, c) for (p, k), c in reference.items() if c)
