"""min(x) and max(x) — one float64 per pair — and their exact, removable stand-ins for change
streams, which keep every value (a sorted multiset per pair) so that they can forget one."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from views.aggregates.base import Aggregate, Batch, Buffers, grow, whole
from views.aggregates.multiset import Exact, float_keys, key_floats
from views.batch import Vec


class SortedMin(Exact):
    """Exact, removable min: every value of the pair, with its multiplicity."""

    kind = "sorted_min"
    result_type = "number"
    numeric_arg = True
    removable = True
    shown = "min"

    def keys(self, values: Vec) -> np.ndarray:
        return float_keys(values.data)

    def _pick(self, start: int, end: int) -> int:
        """The entry of the run ``[start, end)`` holding the answer."""
        return start

    def results(self, ids: np.ndarray) -> list[Any]:
        start, end = self.set.runs(ids)
        out: list[Any] = []
        for lo, hi in zip(start.tolist(), end.tolist(), strict=True):
            if lo == hi:
                out.append(None)
                continue
            at = self._pick(lo, hi)
            out.append(whole(float(key_floats(self.set.key[at : at + 1])[0])))
        return out


class SortedMax(SortedMin):
    kind = "sorted_max"
    shown = "max"

    def _pick(self, start: int, end: int) -> int:
        return end - 1


class SortedPercentile(SortedMin):
    """Exact, removable lower quantile ``sorted(xs)[floor(q * (n - 1))]``."""

    kind = "sorted_percentile"
    shown = "approx_percentile"

    def _pick(self, start: int, end: int) -> int:
        counts = np.cumsum(self.set.count[start:end])
        rank = math.floor(self.params["q"] * (int(counts[-1]) - 1))
        return start + int(np.searchsorted(counts, rank, "right"))


class Min(Aggregate):
    kind = "min"
    sql_names = ("min",)
    sql_usage = "min"
    result_type = "number"
    numeric_arg = True
    stand_in = SortedMin
    _reduce: Any = np.fmin  # fmin/fmax skip the NaN that marks "no value yet"
    merges_exactly = True

    def __init__(self, values: Any = None, **params: Any) -> None:
        super().__init__(values, **params)
        self.value = np.zeros(0, np.float64)

    def resize(self, size: int) -> None:
        self.value = grow(self.value, size, np.nan)
        self.size = max(self.size, size)

    def fold(self, batch: Batch) -> None:
        rows, values = batch.present()
        if values is None or not len(rows):
            return
        type(self)._reduce.at(self.value, batch.pairs[batch.group[rows]], values.data)

    def absorb(self, other: Aggregate, ids: np.ndarray, rows: np.ndarray) -> None:
        assert isinstance(other, Min)
        type(self)._reduce.at(self.value, rows, other.value[ids])

    def results(self, ids: np.ndarray) -> list[Any]:
        return [None if v != v else whole(v) for v in self.value[ids].tolist()]

    def take(self, keep: np.ndarray) -> None:
        self.value = self.value[keep]
        self.size = len(keep)

    def buffers(self) -> Buffers:
        return {"value": self.value[: self.size]}

    def load(self, buffers: Buffers) -> None:
        self.value = np.array(buffers["value"], np.float64)
        self.size = len(self.value)


class Max(Min):
    kind = "max"
    sql_names = ("max",)
    sql_usage = "max"
    stand_in = SortedMax
    _reduce = np.fmax
