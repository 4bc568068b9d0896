"""approx_percentile(x, q) / pNN(x): a DDSketch per pair, in arrays (exact, removable stand-in:
``views.aggregates.extremes.SortedPercentile``).

Per pair: the count, the values in the zero band, the smallest and largest value, and the bins
of positive and of negative values (``Multiset``s keyed by bin). A value's bin is
``ceil(log|x| / log(gamma))``, the scalar sketch's own function (``views.sketches.DDSketch``):
computed with numpy, and again with Python's ``math.log`` for the few values that land within
rounding distance of a bin edge, so that every bin equals the scalar sketch's. A pair that has
more than ``MAX_BINS`` bins of one sign has its lowest ones folded into one, as the scalar sketch
does; answers are the scalar sketch's, within 1 % (relative) of the exact lower quantile.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from views.aggregates.base import Aggregate, Batch, Buffers, grow
from views.aggregates.extremes import SortedPercentile
from views.aggregates.multiset import Multiset
from views.grouping import distinct, group, pack
from views.sketches import DDSketch

__all__ = ["ApproxPercentile", "SortedPercentile"]
_EDGE = 1e-9  # how close to a whole number log|x|/log(gamma) must be to be checked in Python


def bins(magnitudes: np.ndarray) -> np.ndarray:
    """DDSketch's bin of each magnitude (> MIN_INDEXABLE), exactly as ``DDSketch._key``."""
    with np.errstate(divide="ignore"):
        ratio = np.log(magnitudes) / DDSketch.LOG_GAMMA
    out: np.ndarray = np.ceil(ratio).astype(np.int64)
    near = np.flatnonzero(np.abs(ratio - np.rint(ratio)) < _EDGE)
    for i in near.tolist():
        out[i] = math.ceil(math.log(float(magnitudes[i])) / DDSketch.LOG_GAMMA)
    return out


class ApproxPercentile(Aggregate):
    kind = "approx_percentile"
    sql_names = ("approx_percentile",)
    sql_arity = (2,)
    sql_usage = "approx_percentile(x, q), p50..p99(x)"
    result_type = "float"
    numeric_arg = True
    stand_in = SortedPercentile

    def __init__(self, values: Any = None, **params: Any) -> None:
        super().__init__(values, **params)
        self.count = np.zeros(0, np.int64)
        self.zeros = np.zeros(0, np.int64)
        self.low = np.zeros(0, np.float64)
        self.high = np.zeros(0, np.float64)
        self.positive = Multiset()
        self.negative = Multiset()

    @classmethod
    def sql_params(cls, numbers: list[float]) -> dict[str, Any]:
        (q,) = numbers
        if not 0 <= q <= 1:
            raise ValueError("the quantile must be between 0 and 1")
        return {"q": float(q)}

    def resize(self, size: int) -> None:
        self.count = grow(self.count, size)
        self.zeros = grow(self.zeros, size)
        self.low = grow(self.low, size, np.inf)
        self.high = grow(self.high, size, -np.inf)
        self.size = max(self.size, size)

    def fold(self, batch: Batch) -> None:
        rows, values = batch.present()
        if values is None or not len(rows):
            return
        x = values.data.astype(np.float64)
        g = batch.group[rows]
        size = len(batch.pairs)
        low, high = np.full(size, np.inf), np.full(size, -np.inf)
        np.fmin.at(low, g, x)
        np.fmax.at(high, g, x)
        self.count[batch.pairs] += np.bincount(g, minlength=size)
        np.fmin.at(self.low, batch.pairs, low)
        np.fmax.at(self.high, batch.pairs, high)
        positive, negative = x > DDSketch.MIN_INDEXABLE, x < -DDSketch.MIN_INDEXABLE
        self.zeros[batch.pairs] += np.bincount(g[~positive & ~negative], minlength=size)
        for store, mask, sign in ((self.positive, positive, 1), (self.negative, negative, -1)):
            if mask.any():
                self._bin(store, batch.pairs, g[mask], bins(sign * x[mask]))
        self._collapse(batch.pairs)

    @staticmethod
    def _bin(store: Multiset, pairs: np.ndarray, g: np.ndarray, keys: np.ndarray) -> None:
        """Count the batch's values per (pair, bin) first (a table lookup, no sort), then add
        only those counts to the store."""
        low = int(keys.min())
        packed = pack([g, keys - low])
        # Always packs: a store's bins span about 37,000 (magnitudes from MIN_INDEXABLE to
        # 1.8e308 at 1 %), and a batch has far fewer than 2**62 / 37,000 pairs.
        assert packed is not None
        _, first, inverse = group(packed, first=True)
        counts = np.bincount(inverse)
        store.add(pairs[g[first]], keys[first], counts)

    def _collapse(self, ids: np.ndarray) -> None:
        """Fold the lowest bins of a pair with more than MAX_BINS into the lowest bin kept
        (rare). ``ids`` are distinct. Each pair's run is found afresh: folding one pair's bins
        moves the entries of the pairs after it (not their number)."""
        for store in (self.positive, self.negative):
            start, end = store.runs(ids)
            for pair in ids[end - start > DDSketch.MAX_BINS].tolist():
                (lo,), (hi,) = store.runs(np.array([pair]))
                excess = int(hi - lo) - DDSketch.MAX_BINS
                keys, counts = store.key[lo : lo + excess + 1], store.count[lo : lo + excess]
                moved = np.append(-counts, counts.sum())  # off the lowest bins, onto the next
                store.add(np.full(excess + 1, pair), keys.copy(), moved)

    def settle(self) -> None:
        self.positive.settle()
        self.negative.settle()

    def absorb(self, other: Aggregate, ids: np.ndarray, rows: np.ndarray) -> None:
        assert isinstance(other, ApproxPercentile)
        np.add.at(self.count, rows, other.count[ids])
        np.add.at(self.zeros, rows, other.zeros[ids])
        np.fmin.at(self.low, rows, other.low[ids])
        np.fmax.at(self.high, rows, other.high[ids])
        self.positive.absorb(other.positive.gathered(ids, rows))
        self.negative.absorb(other.negative.gathered(ids, rows))
        self._collapse(distinct(rows))

    def sketch(self, pair: int) -> DDSketch:
        """The scalar sketch of one pair (answers, and tests comparing states)."""
        sketch = DDSketch()
        sketch.count, sketch.zeros = int(self.count[pair]), int(self.zeros[pair])
        if sketch.count:
            sketch.low, sketch.high = float(self.low[pair]), float(self.high[pair])
        for store, target in ((self.positive, sketch.positive), (self.negative, sketch.negative)):
            lo, hi = (int(v[0]) for v in store.runs(np.array([pair])))
            target.update(zip(store.key[lo:hi].tolist(), store.count[lo:hi].tolist(), strict=True))
        return sketch

    def results(self, ids: np.ndarray) -> list[Any]:
        out: list[Any] = []
        for pair in ids.tolist():
            value = self.sketch(pair).quantile(self.params["q"])
            out.append(None if value is None else float(value))
        return out

    def take(self, keep: np.ndarray) -> None:
        for name in ("count", "zeros", "low", "high"):
            setattr(self, name, getattr(self, name)[keep])
        self.positive.take(keep, self.size)
        self.negative.take(keep, self.size)
        self.size = len(keep)

    def buffers(self) -> Buffers:
        out: Buffers = {n: getattr(self, n)[: self.size] for n in ("count", "zeros", "low", "high")}
        for name, store in (("pos", self.positive), ("neg", self.negative)):
            out |= {f"{name}_pair": store.pair, f"{name}_key": store.key, f"{name}_n": store.count}
        return out

    def load(self, buffers: Buffers) -> None:
        self.count = np.array(buffers["count"], np.int64)
        self.zeros = np.array(buffers["zeros"], np.int64)
        self.low = np.array(buffers["low"], np.float64)
        self.high = np.array(buffers["high"], np.float64)
        for name, store in (("pos", self.positive), ("neg", self.negative)):
            store.pair = np.array(buffers[f"{name}_pair"], np.int64)
            store.key = np.array(buffers[f"{name}_key"], np.int64)
            store.count = np.array(buffers[f"{name}_n"], np.int64)
        self.size = len(self.count)
