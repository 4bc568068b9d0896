"""sum(x) and avg(x), exact whatever the order, batching or merge tree.

Each pair's sum is kept exactly, as an integer times a power of two in int64 limbs
(``views.exact.Sums``), with the number of values beside it: integers stay exact integers, and a
float sum is the correctly rounded exact sum (what ``math.fsum`` gives), so replays, rollups and
restarts give bit-identical answers. SQL's sum over no values is NULL.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from views.aggregates.base import EXACT, Aggregate, Batch, Buffers, grow, whole
from views.exact import Sums


class Sum(Aggregate):
    kind = "sum"
    sql_names = ("sum",)
    sql_usage = "sum"
    result_type = "number"
    numeric_arg = True
    removable = True
    merges_exactly = True

    def __init__(self, values: Any = None, **params: Any) -> None:
        super().__init__(values, **params)
        self.sums = Sums()
        self.n = np.zeros(0, np.int64)
        # sum(x) and avg(x) of one view keep one state: the avg reads its sum's (``share``).
        self.owner: Sum | None = None

    def share(self, owner: Sum) -> None:
        """Read ``owner``'s state instead of keeping one (both fold the same values)."""
        self.owner = owner

    def _state(self) -> Sum:
        return self if self.owner is None else self.owner

    def resize(self, size: int) -> None:
        if self.owner is not None:
            return
        self.n = grow(self.n, size)
        if len(self.sums) < len(self.n):
            self.sums.grow(len(self.n))
        self.size = max(self.size, size)

    def fold(self, batch: Batch) -> None:
        if self.owner is not None:
            return  # the owner folds these very values
        rows, values = batch.present()
        if values is None or not len(rows):
            return
        group = batch.group[rows]
        counted = np.bincount(group, minlength=len(batch.pairs))
        self.n[batch.pairs] += -counted if batch.negate else counted
        used = np.flatnonzero(counted)  # only pairs that got a value: fewer rows to carry
        remap = np.full(len(batch.pairs), -1, np.int64)
        remap[used] = np.arange(len(used))
        self.sums.add_grouped(batch.pairs[used], remap[group], values.data, batch.negate)

    def absorb(self, other: Aggregate, ids: np.ndarray, rows: np.ndarray) -> None:
        assert isinstance(other, Sum)
        source = other._state()
        np.add.at(self.n, rows, source.n[ids])
        distinct, inverse = np.unique(rows, return_inverse=True)
        gathered = source.sums.gather(ids, inverse, len(distinct))
        self.sums.absorb(gathered, distinct)

    def totals(self, ids: np.ndarray) -> list[Any]:
        """Each pair's exact sum: an exact int when whole (any size), else the correctly
        rounded float; None over no values."""
        state = self._state()
        floats = state.sums.floats(ids)
        out: list[Any] = [whole(f) for f in floats.tolist()]
        big = np.flatnonzero(np.abs(floats) >= 2.0**53)
        if len(big):
            exact = state.sums.integers(ids[big])
            for i, value in zip(big.tolist(), exact, strict=True):
                if value is not None:
                    out[i] = value
        n = state.n[ids]
        return [None if k == 0 else v for v, k in zip(out, n.tolist(), strict=True)]

    def counts(self, ids: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._state().n[ids]
        return out

    def results(self, ids: np.ndarray) -> list[Any]:
        return self.totals(ids)

    def sort_values(self, ids: np.ndarray) -> np.ndarray | None:
        """The correctly rounded sums order as the answers do, while every one is below 2**53
        (above, an answer is the exact int, and two may round to one float)."""
        state = self._state()
        floats = state.sums.floats(ids)
        if len(floats) and not (np.abs(floats) < EXACT).all():
            return None
        return np.where(state.n[ids] == 0, np.nan, floats)

    def take(self, keep: np.ndarray) -> None:
        if self.owner is not None:
            return
        self.n = self.n[keep]
        self.sums.limbs = self.sums.limbs[keep]
        self.size = len(keep)

    def buffers(self) -> Buffers:
        if self.owner is not None:
            return {"shared": True}  # the owner's buffers hold it
        return {
            "n": self.n[: self.size],
            "limbs": self.sums.limbs[: self.size],
            "scale": self.sums.scale,
        }

    def load(self, buffers: Buffers) -> None:
        if self.owner is not None or buffers.get("shared"):
            return
        self.n = np.array(buffers["n"], np.int64)
        self.sums = Sums()
        # (pairs, limbs): the snapshot codec keeps the shape, (0, width) too for a part without
        # pairs, which a reshape to (0, -1) would refuse.
        self.sums.limbs = np.array(buffers["limbs"], np.int64)
        self.sums.scale = int(buffers["scale"])
        self.size = len(self.n)


class Avg(Sum):
    kind = "avg"
    sql_names = ("avg",)
    sql_usage = "avg"
    result_type = "float"

    def sort_values(self, ids: np.ndarray) -> np.ndarray | None:
        """Below 2**53 an answer's sum is that float (or the int equal to it), and one IEEE
        division by n is Python's ``total / n`` exactly."""
        sums = super().sort_values(ids)
        if sums is None:
            return None
        n = self.counts(ids).astype(np.float64)  # negative after unmatched retractions
        out: np.ndarray = np.divide(sums, n, out=np.full_like(sums, np.nan), where=n != 0)
        return out

    def results(self, ids: np.ndarray) -> list[Any]:
        out: list[Any] = []
        for total, n in zip(self.totals(ids), self.counts(ids).tolist(), strict=True):
            # An exact int divided by n is correctly rounded in Python; a float sum was.
            out.append(None if total is None or n == 0 else total / n)
        return out
