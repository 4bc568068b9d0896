"""Grouping by integer codes (views/grouping.py) against plain Python: distinct codes, each row's
group, and (a, b) pairs packed into one code — on dense ranges (a lookup table) and on ranges
as wide as int64 (a sort, or no packing at all)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from views.grouping import combos, distinct, group, pack_pair

INTS = st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 40)


@settings(max_examples=300, deadline=None)
@given(st.lists(INTS, max_size=40))
def test_group_finds_the_distinct_codes_and_each_rows_index(values: list[int]) -> None:
    codes = np.array(values, np.int64)
    found, first, inverse = group(codes, first=True)
    expected = sorted(set(values))
    assert found.tolist() == expected == distinct(codes).tolist()
    assert [expected[i] for i in inverse.tolist()] == values
    assert first.tolist() == [values.index(v) for v in expected]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(INTS, INTS), min_size=1, max_size=40))
def test_pairs_pack_in_their_order_or_not_at_all(rows: list[tuple[int, int]]) -> None:
    a = np.array([x for x, _ in rows], np.int64)
    b = np.array([y for _, y in rows], np.int64)
    packed = pack_pair(a, b)
    a_span = max(a.tolist()) - min(a.tolist()) + 1
    b_span = max(b.tolist()) - min(b.tolist()) + 1
    assert (packed is None) == (a_span * b_span >= 1 << 62)
    if packed is not None:
        code, a_low, b_low, width = packed
        assert (code // width + a_low).tolist() == a.tolist()
        assert (code % width + b_low).tolist() == b.tolist()
        for (i, x), (j, y) in zip(enumerate(rows), enumerate(rows[1:], 1), strict=False):
            assert (code[i] < code[j]) == (x < y)  # tuples compare as the codes do
    order = sorted(set(rows))
    assert [order[i] for i in combos(a, b).tolist()] == rows
