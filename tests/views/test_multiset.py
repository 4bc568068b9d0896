"""The exact multisets' arrays (views/aggregates/multiset.py) against a plain Counter: adding,
taking off, and asking how many of a (pair, value) there are — the question every retraction
of an exact aggregate asks first. Each test runs on a multiset of one level, and on ones that
keep recent entries beside the main ones (an exact distinct count's): merged into them at nearly
every settle (``recent=1``), or never (``recent`` beyond any test's entries)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from views.aggregates.multiset import Multiset

ENTRY = st.tuples(st.integers(0, 5), st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 3))
BATCH = st.lists(st.tuples(ENTRY, st.integers(-2, 3)), max_size=25)
LEVELS = pytest.mark.parametrize("recent", [0, 1, 10**9], ids=["one-level", "folded", "recent"])


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


@LEVELS
@settings(max_examples=300, deadline=None)
@given(st.lists(BATCH, max_size=6), st.lists(ENTRY, max_size=25))
def test_have_counts_what_was_added_and_not_taken_off(
    recent: int, batches: list[list[tuple[tuple[int, int], int]]], asked: list[tuple[int, int]]
) -> None:
    multiset, reference = Multiset(recent), Counter[tuple[int, int]]()
    for batch in batches:
        add(multiset, reference, batch)
        multiset.settle()  # as each apply ends
    known = list(reference)  # ask about what is there too, not only random entries
    questions = asked + known
    pairs = np.array([p for p, _ in questions], np.int64)
    keys = np.array([k for _, k in questions], np.int64)
    assert multiset.have(pairs, keys).tolist() == [reference[q] for q in questions]
    # the arrays themselves: one entry per (pair, key) held, sorted by pair then key, none at 0
    # (small keys take the packed merge, 64-bit ones the two-key sort)
    assert entries(multiset) == sorted((p, k, c) for (p, k), c in reference.items() if c)


@LEVELS
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(BATCH, st.booleans()), max_size=8))
def test_adds_queued_between_reads_leave_what_adding_them_in_turn_leaves(
    recent: int, steps: list[tuple[list[tuple[tuple[int, int], int]], bool]]
) -> None:
    """Adds wait for the next read (a change stream's adds and retractions merge in one sort):
    whenever a read comes — after one add or several, an entry reaching 0 in between or not —
    it sees exactly the entries held."""
    multiset, reference = Multiset(recent), Counter[tuple[int, int]]()
    for batch, read in steps:
        add(multiset, reference, batch)
        if read:
            held = sorted((p, k, c) for (p, k), c in reference.items() if c)
            assert entries(multiset) == held
            assert len(multiset) == len(held)


@LEVELS
def test_long_runs_merge_and_answer_like_a_counter(recent: int) -> None:
    """Thousands of values in a pair's run (a change stream's max over a busy minute): every
    add found in its run or put where it goes, every question answered, batch after batch."""
    rng = np.random.default_rng(15)
    multiset, reference = Multiset(recent), Counter[tuple[int, int]]()
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


def distinct_keys(reference: Counter[tuple[int, int]], pair: int) -> int:
    return sum(1 for (p, _), c in reference.items() if p == pair and c)


@LEVELS
@settings(max_examples=200, deadline=None)
@given(st.lists(BATCH, max_size=6), st.lists(st.integers(-1, 6), max_size=8))
def test_sizes_and_gathered_runs_count_what_is_held(
    recent: int, batches: list[list[tuple[tuple[int, int], int]]], ids: list[int]
) -> None:
    """An exact distinct count's answer (``sizes``: the keys each pair holds) and a rollup's
    read (``gathered``: pairs moved onto rows, merged where two land on one) see the recent
    entries as the main ones: a key added, one taken off to 0, one in both levels."""
    multiset, reference = Multiset(recent), Counter[tuple[int, int]]()
    for batch in batches:
        add(multiset, reference, batch)
        multiset.settle()
    asked = np.array(ids + [p for p, _ in reference], np.int64)
    assert multiset.sizes(asked).tolist() == [distinct_keys(reference, p) for p in asked.tolist()]
    rows = asked % 3  # several pairs onto one row
    rolled = Counter[tuple[int, int]]()
    for pair, row in zip(asked.tolist(), rows.tolist(), strict=True):
        for (p, k), c in reference.items():
            if p == pair:
                rolled[(row, k)] += c
    gathered = multiset.gathered(asked, rows)
    assert entries(gathered) == sorted((p, k, c) for (p, k), c in rolled.items() if c)


def test_reads_between_settles_leave_the_recent_entries_where_they_are() -> None:
    """Outside an apply, a read (a query on the loop, a snapshot in a worker thread at once)
    merges the recent entries into a copy, never into the main arrays: those are the same
    arrays, unchanged, after every kind of read."""
    multiset = Multiset(recent=10**9)
    multiset.add(np.array([0, 0, 1]), np.array([5, 7, 5]), np.array([2, 1, 1]))
    multiset.fold()  # main entries: (0, 5, 2), (0, 7, 1), (1, 5, 1)
    multiset.add(np.array([0, 1, 2]), np.array([5, 5, 9]), np.array([1, -1, 1]))
    multiset.settle()  # recent: (0, 5, +1), (1, 5, -1), (2, 9, +1)
    main = [level.array.copy() for level in multiset._levels]
    assert entries(multiset) == [(0, 5, 3), (0, 7, 1), (2, 9, 1)]
    assert multiset.sizes(np.array([0, 1, 2, 3])).tolist() == [2, 0, 1, 0]
    assert multiset.have(np.array([0, 1, 2]), np.array([5, 5, 9])).tolist() == [3, 0, 1]
    assert entries(multiset.gathered(np.array([0, 2]), np.array([0, 0]))) == [
        (0, 5, 3),
        (0, 7, 1),
        (0, 9, 1),
    ]
    for before, level in zip(main, multiset._levels, strict=True):
        assert level.array.tolist() == before.tolist()
    assert len(multiset._recent._key) == 3  # type: ignore[union-attr]
    multiset.fold()  # and merged into the main ones, they read the same
    assert [m.array.tolist() for m in multiset._levels] == [[0, 0, 2], [5, 7, 9], [3, 1, 1]]
