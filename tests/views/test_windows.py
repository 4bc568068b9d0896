"""Window maths as properties (Hypothesis), including negative timestamps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from views.durations import format_duration, parse_duration
from views.windows import align, hop_starts, tumble_start, tumble_starts

times = st.integers(min_value=-(10**13), max_value=10**13)
sizes = st.integers(min_value=1, max_value=10**9)


@given(times, sizes)
def test_tumble_window_contains_its_timestamp(ts: int, size: int) -> None:
    start = tumble_start(ts, size)
    assert start <= ts < start + size
    assert start % size == 0


@given(st.lists(times, max_size=50), sizes)
def test_tumble_starts_is_tumble_start_per_element(ts: list[int], size: int) -> None:
    # The column path and the row path must put every event in the same window.
    got = tumble_starts(np.array(ts, dtype=np.int64), size)
    assert got.tolist() == [tumble_start(t, size) for t in ts]


@given(times, st.integers(1, 10**6), st.integers(1, 50))
def test_hop_windows_are_exactly_those_containing_ts(ts: int, slide: int, factor: int) -> None:
    size = slide * factor
    starts = hop_starts(ts, size, slide)
    assert len(starts) == factor
    assert all(s <= ts < s + size and s % slide == 0 for s in starts)
    # the neighbours on either side do not contain ts
    assert not (min(starts) - slide <= ts < min(starts) - slide + size)
    assert max(starts) + slide > ts


@given(times, sizes, st.integers(1, 100))
def test_align_is_coarser_tumble(ts: int, size: int, factor: int) -> None:
    assert align(tumble_start(ts, size), size * factor) == tumble_start(ts, size * factor)


@given(st.integers(1, 10**12))
def test_duration_round_trip(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms


def test_duration_spellings() -> None:
    assert parse_duration("1 minute") == parse_duration("1m") == 60_000
    assert parse_duration("7d") == 604_800_000
    for bad in ("1 month", "0s", "-1s", "soon", "1.5h"):
        with pytest.raises(ValueError, match=r"not a duration|longer than zero"):
            parse_duration(bad)
