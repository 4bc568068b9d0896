"""An array that changes at its ends in place: the state structures that gain entries mostly at
their end and lose them mostly at their start.

A part's pair index (``views.state.Pairs``) and a multiset's entries
(``views.aggregates.multiset.Multiset``) are sorted by pair, and pairs are numbered in arrival
order: a batch's new pairs — the newest buckets' — go at the end, and retention drops the oldest
at the start. A plain numpy array pays a copy of every entry for each such change, O(state) a
batch: a view of ~400k pairs applied 4,500-event batches (a Kafka fetch's part) at a third of the
rate of 50,000-event ones (benchmarks/README.md). ``Growing`` keeps spare room after its entries
and drops a prefix by moving its start, so a change costs what it changes: the entries appended,
or those from the first place an insert lands at.

``array`` is a view of the buffer, valid until the next change: a change rewrites the buffer
in place (an insert from its place on, a move of the entries back to the buffer's start).
Whatever reads state outside an apply holds the committer's step meanwhile (snapshots, part
files, a cluster peer's state) or is done before the next apply (queries are answered on the
event loop, between batches).
"""

from __future__ import annotations

import numpy as np


class Growing:
    """A 1-d array with room to grow after its end and a start that moves on as a prefix is
    dropped. The buffer grows by half when full (each entry is copied O(1) times on average),
    or moves its entries back to its start when over half of it is dropped room."""

    def __init__(self, array: np.ndarray) -> None:
        self._buffer = array
        self._start = 0
        self._end = len(array)

    @property
    def array(self) -> np.ndarray:
        return self._buffer[self._start : self._end]

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def nbytes(self) -> int:
        """The buffer's bytes: the entries, the spare room and the dropped prefix."""
        return int(self._buffer.nbytes)

    def set(self, array: np.ndarray) -> None:
        """Replace every entry (a new array: views of the old buffer keep reading it)."""
        self._buffer, self._start, self._end = array, 0, len(array)

    def append(self, values: np.ndarray) -> None:
        self.replace_tail(len(self), values)

    def drop_front(self, count: int) -> None:
        """Forget the first ``count`` entries."""
        assert 0 <= count <= len(self)
        self._start += count

    def replace_tail(self, at: int, values: np.ndarray) -> None:
        """Entries from ``at`` on become ``values``: the first ``at`` stay where they are."""
        assert 0 <= at <= len(self)
        size = at + len(values)
        if self._start + size > len(self._buffer):
            kept = self._buffer[self._start : self._start + at]
            if self._start * 2 >= len(self._buffer) and size <= len(self._buffer):
                self._buffer[:at] = kept  # over half is dropped room: move back, no allocation
            else:
                capacity = max(size + size // 2, 16)
                buffer = np.empty(capacity, self._buffer.dtype)
                buffer[:at] = kept
                self._buffer = buffer
            self._start = 0
        self._buffer[self._start + at : self._start + size] = values
        self._end = self._start + size
