"""approx_percentile(x, q) / pNN(x) (DDSketch), and its exact, removable stand-in."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from views.aggregates.base import Aggregate, Fold, Grouped, GroupKey
from views.aggregates.extremes import SortedMin
from views.sketches import DDSketch


class SortedPercentile(SortedMin):
    """Exact, removable lower quantile ``sorted(xs)[floor(q * (n - 1))]``."""

    kind = "sorted_percentile"
    shown = "approx_percentile"
    __slots__ = ("q",)

    def __init__(self, q: float) -> None:
        super().__init__()
        self.q = q

    def result(self) -> Any:
        if not self.values:
            return None
        return self.values[math.floor(self.q * (len(self.values) - 1))]


class ApproxPercentile(Aggregate):
    kind = "approx_percentile"
    sql_names = ("approx_percentile",)
    sql_arity = (2,)
    sql_usage = "approx_percentile(x, q), p50..p99(x)"
    result_type = "float"
    numeric_arg = True
    stand_in = SortedPercentile
    columnar = True
    __slots__ = ("q", "sketch")

    def __init__(self, q: float) -> None:
        self.q = q
        self.sketch = DDSketch()

    @classmethod
    def sql_params(cls, numbers: list[float]) -> dict[str, Any]:
        (q,) = numbers
        if not 0 <= q <= 1:
            raise ValueError("the quantile must be between 0 and 1")
        return {"q": float(q)}

    def add(self, x: float) -> None:
        self.sketch.add(x)

    def merge(self, other: ApproxPercentile) -> None:
        self.sketch.merge(other.sketch)

    def result(self) -> float | None:
        value = self.sketch.quantile(self.q)  # may be an extreme, as it arrived (int or float)
        return None if value is None else float(value)

    def to_state(self) -> dict[str, Any]:
        return self.sketch.to_state()

    def load(self, state: Any) -> None:
        self.sketch = DDSketch.from_state(state)

    @classmethod
    def fold_columns(
        cls, values: pa.ChunkedArray | None, grouped: Grouped
    ) -> dict[GroupKey, Fold] | None:
        """Each group's share as a DDSketch with the same bins the row path would fill (the bin
        keys come from DDSketch's own scalar function), merged in when applied."""
        assert values is not None  # only count(*) has no argument
        return {group: _merging(sketch) for group, sketch in _sketches(values, grouped).items()}


def _sketches(values: pa.ChunkedArray, grouped: Grouped) -> dict[GroupKey, DDSketch]:
    """Per group, a DDSketch of its values, filled from Arrow's per (group, sign, bin) figures."""
    filled = pc.fill_null(pc.cast(values, pa.float64()), 0.0).to_numpy()
    sign = np.where(
        filled > DDSketch.MIN_INDEXABLE, 1, np.where(filled < -DDSketch.MIN_INDEXABLE, -1, 0)
    )
    extra = {"__v": values, "__by_s": pa.array(sign), "__by_k": pa.array(_dd_keys(filled))}
    sketches: dict[GroupKey, DDSketch] = {}
    for group, row in grouped.aggregate(extra, [("__v", "count"), ("__v", "min"), ("__v", "max")]):
        n = row["__v_count"]
        if not n:
            continue
        sketch = sketches.get(group)
        if sketch is None:
            sketch = sketches[group] = DDSketch()
        sketch.count += n
        sketch.low = min(sketch.low, row["__v_min"])
        sketch.high = max(sketch.high, row["__v_max"])
        s, k = row["__by_s"], row["__by_k"]
        if s == 0:
            sketch.zeros += n
        else:
            store = sketch.positive if s > 0 else sketch.negative
            store[k] = store.get(k, 0) + n
    return sketches


def _dd_keys(values: np.ndarray) -> np.ndarray:
    """DDSketch bin per value, by DDSketch's own scalar function (once per distinct value);
    zero band -> 0 with sign 0 in the sign column."""
    distinct, inverse = np.unique(values, return_inverse=True)
    sketch = DDSketch()
    keys = np.array(
        [
            sketch._key(abs(float(v))) if abs(v) > DDSketch.MIN_INDEXABLE else 0
            for v in distinct.tolist()
        ],
        dtype=np.int64,
    )
    return keys[inverse]


def _merging(sketch: DDSketch) -> Fold:
    def fold(aggregate: ApproxPercentile) -> None:
        aggregate.sketch.merge(sketch)

    return fold
