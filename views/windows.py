"""Window maths: pure integer functions over epoch milliseconds, half-open ``[start, end)``.

Python's floor division makes these correct for negative timestamps too (before 1970).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def tumble_start(ts: int, size: int) -> int:
    """Start of the tumbling window of ``size`` ms that contains ``ts``."""
    return ts - ts % size


def tumble_starts(ts: npt.NDArray[np.int64], size: int) -> npt.NDArray[np.int64]:
    """``tumble_start`` of every element (numpy's ``%`` floors like Python's, so it agrees for
    negative timestamps too)."""
    return ts - ts % size


def hop_starts(ts: int, size: int, slide: int) -> list[int]:
    """Starts of every hopping window ``[s, s + size)`` (s a multiple of ``slide``) holding ``ts``.

    Newest first. There are ``ceil(size / slide)`` of them when ``slide`` divides ``size``.
    """
    last = ts - ts % slide
    starts = []
    start = last
    while start > ts - size:
        starts.append(start)
        start -= slide
    return starts


def align(start: int, size: int) -> int:
    """Re-bucket a window start onto a coarser grid of ``size`` ms (query-time rollups)."""
    return start - start % size


def hop_windows(
    ts: npt.NDArray[np.int64], size: int, slide: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every (row, window start) of hopping windows for a column of times: ``hop_starts`` of each
    element, flattened. Returns (the row each window belongs to, its start), newest first within
    a row. With ``slide`` dividing ``size``, every time falls in exactly ``size // slide``."""
    per = size // slide
    rows = np.repeat(np.arange(len(ts)), per)
    last = np.repeat(ts - ts % slide, per)
    starts = last - np.tile(np.arange(per, dtype=np.int64), len(ts)) * slide
    return rows, starts
