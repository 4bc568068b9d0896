"""count(*) and count(x): the number of rows, or of non-null values, per pair (int64)."""

from __future__ import annotations

from typing import Any

import numpy as np

from views.aggregates.base import EXACT, Aggregate, Batch, Buffers, grow


class Count(Aggregate):
    kind = "count"
    sql_names = ("count",)
    sql_usage = "count(*), count(x)"
    result_type = "int"
    removable = True
    merges_exactly = True

    def __init__(self, values: Any = None, **params: Any) -> None:
        super().__init__(values, **params)
        self.n = np.zeros(0, np.int64)

    def resize(self, size: int) -> None:
        self.n = grow(self.n, size)
        self.size = max(self.size, size)

    def fold(self, batch: Batch) -> None:
        rows, _ = batch.present()
        added = np.bincount(batch.group[rows], minlength=len(batch.pairs))
        self.n[batch.pairs] += -added if batch.negate else added

    def absorb(self, other: Aggregate, ids: np.ndarray, rows: np.ndarray) -> None:
        assert isinstance(other, Count)
        np.add.at(self.n, rows, other.n[ids])

    def counts(self, ids: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.n[ids]
        return out

    def results(self, ids: np.ndarray) -> list[Any]:
        out: list[Any] = self.n[ids].tolist()
        return out

    def sort_values(self, ids: np.ndarray) -> np.ndarray | None:
        counts = self.n[ids]
        if len(counts) and int(np.abs(counts).max()) >= EXACT:
            return None
        out: np.ndarray = counts.astype(np.float64)
        return out

    def take(self, keep: np.ndarray) -> None:
        self.n = self.n[keep]
        self.size = len(keep)

    def buffers(self) -> Buffers:
        return {"n": self.n[: self.size]}

    def load(self, buffers: Buffers) -> None:
        self.n = np.array(buffers["n"], np.int64)
        self.size = len(self.n)
