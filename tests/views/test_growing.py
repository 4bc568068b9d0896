"""Arrays that change at their ends in place (views/growing.py), and the structures kept in them:
a part's pair index (views/state.py ``Pairs``) and exact sums absorbed row by row
(views/exact.py ``Sums.absorb``) — each against a plain-Python reference, over seeded random
operations that append, insert in the middle, drop prefixes and drop anywhere."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from views.exact import BITS, Sums
from views.growing import Growing
from views.state import Pairs

OPERATION = st.one_of(
    st.tuples(st.just("append"), st.lists(st.integers(-9, 9), max_size=40)),
    st.tuples(st.just("tail"), st.integers(0, 60), st.lists(st.integers(-9, 9), max_size=40)),
    st.tuples(st.just("drop"), st.integers(0, 60)),
    st.tuples(st.just("set"), st.lists(st.integers(-9, 9), max_size=20)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(OPERATION, max_size=40))
def test_a_growing_array_holds_what_a_list_given_the_same_changes_holds(
    operations: list[tuple],  # type: ignore[type-arg]
) -> None:
    growing, reference = Growing(np.zeros(0, np.int64)), list[int]()
    for operation in operations:
        kind = operation[0]
        if kind == "append":
            growing.append(np.array(operation[1], np.int64))
            reference += operation[1]
        elif kind == "tail":
            at = min(operation[1], len(reference))
            growing.replace_tail(at, np.array(operation[2], np.int64))
            reference[at:] = operation[2]
        elif kind == "drop":
            count = min(operation[1], len(reference))
            growing.drop_front(count)
            del reference[:count]
        else:
            growing.set(np.array(operation[1], np.int64))
            reference = list(operation[1])
        assert growing.array.tolist() == reference
        assert len(growing) == len(reference)
        assert growing.nbytes >= growing.array.nbytes


def test_appends_and_prefix_drops_copy_each_entry_a_bounded_number_of_times() -> None:
    """A retention window's life: a bucket appended, the oldest dropped, 10,000 times. The
    buffer stays within a small multiple of the entries kept (its dropped room is reused)."""
    growing = Growing(np.zeros(0, np.int64))
    kept = 500
    for i in range(10_000):
        growing.append(np.arange(i * 10, i * 10 + 10, dtype=np.int64))
        if len(growing) > kept:
            growing.drop_front(len(growing) - kept)
    assert growing.array.tolist() == list(range(100_000 - kept, 100_000))
    assert growing.nbytes <= 3 * kept * 8


# -- the pair index ------------------------------------------------------------------------------


class ReferencePairs:
    """Pairs as a dict: id -> (bucket start, slot), and which ids are alive."""

    def __init__(self) -> None:
        self.of: dict[int, tuple[int, int]] = {}
        self.alive: set[int] = set()

    def find_or_add(self, pairs: list[tuple[int, int]]) -> list[int]:
        known = {self.of[i]: i for i in self.alive}
        out = []
        for pair in pairs:
            if pair not in known:
                known[pair] = len(self.of)
                self.of[len(self.of)] = pair
                self.alive.add(known[pair])
            out.append(known[pair])
        return out

    def sorted_alive(self) -> list[int]:
        return sorted(self.alive, key=lambda i: self.of[i])


@pytest.mark.parametrize("seed", range(6))
def test_the_pair_index_matches_a_dict_through_appends_inserts_and_drops(seed: int) -> None:
    rng = random.Random(seed)
    step = 60_000
    pairs, reference = Pairs(step), ReferencePairs()
    newest = 1000
    for _ in range(150):
        draw = rng.random()
        if draw < 0.6:  # a batch: mostly the newest buckets, sometimes older ones (late events)
            newest += rng.randrange(3)
            batch = set()
            for _ in range(rng.randrange(1, 30)):
                back = rng.randrange(3) if rng.random() < 0.9 else rng.randrange(40)
                batch.add(((newest - back) * step, rng.randrange(50)))
            wanted = sorted(batch)
            starts = np.array([s for s, _ in wanted], np.int64)
            slots = np.array([k for _, k in wanted], np.int64)
            given_out = len(reference.of)
            ids, new = pairs.find_or_add(starts, slots)
            assert ids.tolist() == reference.find_or_add(wanted)
            assert new == len(reference.of) - given_out
            assert len(pairs) == len(reference.of)
        elif draw < 0.8:  # retention: every pair of a bucket before some start (a prefix)
            cut = (newest - rng.randrange(5, 30)) * step
            dropped = pairs.before(cut)
            assert sorted(dropped.tolist()) == sorted(
                i for i in reference.alive if reference.of[i][0] < cut
            )
            pairs.drop(dropped)
            reference.alive -= set(dropped.tolist())
        elif draw < 0.95 and reference.alive:  # a retracted group: any pairs, maybe twice
            chosen = rng.sample(sorted(reference.alive), rng.randrange(1, 4))
            pairs.drop(np.array(chosen + chosen[:1], np.int64))
            reference.alive -= set(chosen)
        else:  # renumbering, as a part does when over half of its ids are dead
            keep = pairs.compact(force=True)
            if keep is not None:
                reference.of = {new: reference.of[old] for new, old in enumerate(keep.tolist())}
                old_alive = set(reference.alive)
                reference.alive = {new for new, old in enumerate(keep.tolist()) if old in old_alive}
        order = reference.sorted_alive()
        assert pairs.ids.tolist() == order
        assert pairs.codes.tolist() == sorted(pairs.codes.tolist())
        assert pairs.count == len(order)
        every = np.array(order, np.int64)
        assert pairs.starts(every).tolist() == [reference.of[i][0] for i in order]
        assert pairs.slots(every).tolist() == [reference.of[i][1] for i in order]
        asked = [reference.of[i] for i in order] + [(0, 0), ((newest + 5) * step, 1)]
        found = pairs.find(
            np.array([s for s, _ in asked], np.int64), np.array([k for _, k in asked], np.int64)
        )
        assert found.tolist() == [*order, -1, -1]
        low, high = (newest - 10) * step, (newest - 2) * step
        assert pairs.between(low, high).tolist() == [
            i for i in order if low <= reference.of[i][0] < high
        ]


# -- exact sums absorbed into some of their rows -------------------------------------------------

VALUE = st.one_of(
    st.integers(-(2**40), 2**40).map(float),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([2.0**90, -(2.0**90), 0.125, 5e-324, 3.0]),
)


def held(sums: Sums) -> list[Fraction]:
    """Each row's value as its limbs say: sum(limbs[k] * 2**(32 k)) * 2**scale."""
    scale = Fraction(2) ** sums.scale
    return [
        sum((Fraction(limb) * 2 ** (BITS * k) for k, limb in enumerate(row)), Fraction(0)) * scale
        for row in sums.limbs.tolist()
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sets(st.integers(0, 5), min_size=1), st.lists(VALUE, min_size=6, max_size=6)),
        min_size=1,
        max_size=8,
    )
)
def test_absorbing_into_some_rows_adds_exactly_there_and_nowhere_else(
    rounds: list[tuple[set[int], list[float]]],
) -> None:
    """A hop view absorbs its panes into the windows they fall in: some of the rows, at every
    batch. Rows left out keep their sums; the others gain the absorbed ones exactly, however
    their scales and widths differ."""
    sums, reference = Sums(6), [Fraction(0)] * 6
    for rows, values in rounds:
        chosen = sorted(rows)
        other = Sums(len(chosen))
        other.add(np.arange(len(chosen)), np.array(values[: len(chosen)], np.float64))
        sums.absorb(other, np.array(chosen, np.int64))
        for j, row in enumerate(chosen):
            reference[row] += Fraction(values[j])
        assert held(sums) == reference
        # Normalized: every limb but the top in [0, 2**32), so the readers read it as written.
        assert ((sums.limbs[:, :-1] >= 0) & (sums.limbs[:, :-1] < 2**BITS)).all()
