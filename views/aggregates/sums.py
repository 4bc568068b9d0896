"""sum(x) and avg(x), exact whatever the order, batching or merge tree.

Integers are kept as Python ints and floats as Shewchuk's non-overlapping partials (what
``math.fsum`` uses), so a sum is the correctly rounded sum of its inputs — replays, rollups and
restarts give bit-identical answers.

Column-wise, float sums are exact too: every float is split into an integer mantissa and an
exponent, the mantissas are summed as integers per (group, exponent) and the group's exact total is
handed to ``Sum`` as Shewchuk partials, so the answer is the correctly rounded sum, as on the row
path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from views.aggregates.base import Aggregate, Fold, Grouped, GroupKey, whole

_MANTISSA = 53
_LOW_BITS = 26


def _grow(partials: list[float], x: float) -> None:
    """Add ``x`` to Shewchuk partials in place, exactly (Python's ``msum`` recipe)."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    partials[i:] = (
        [x] if x else []
    )  # a zero partial adds nothing; dropping it keeps state canonical


class Sum(Aggregate):
    kind = "sum"
    sql_names = ("sum",)
    sql_usage = "sum"
    result_type = "number"
    numeric_arg = True
    removable = True
    columnar = True
    __slots__ = ("floats", "integer", "n")

    def __init__(self) -> None:
        self.integer = 0
        self.floats: list[float] = []
        self.n = 0  # values seen, so that sum over no values is NULL as in SQL

    def add(self, x: int | float) -> None:
        self.n += 1
        if isinstance(x, int):
            self.integer += x
        else:
            _grow(self.floats, x)

    def remove(self, x: int | float) -> None:
        self.n -= 1
        if isinstance(x, int):
            self.integer -= x
        else:
            _grow(self.floats, -x)

    def merge(self, other: Sum) -> None:
        self.n += other.n
        self.integer += other.integer
        for partial in other.floats:
            _grow(self.floats, partial)

    def total(self) -> int | float:
        if not any(self.floats):
            return self.integer
        return math.fsum([*self.floats, self.integer]) if self.integer else math.fsum(self.floats)

    def result(self) -> int | float | None:
        return whole(self.total()) if self.n else None

    def to_state(self) -> list[Any]:
        return [self.n, str(self.integer), list(self.floats)]

    def load(self, state: Any) -> None:
        self.n, self.integer, self.floats = (
            int(state[0]),
            int(state[1]),
            [float(f) for f in state[2]],
        )

    @classmethod
    def restore(cls, state: Any, params: dict[str, Any]) -> Sum:
        aggregate = cls.__new__(cls)
        aggregate.load(state)
        return aggregate

    @classmethod
    def fold_columns(
        cls, values: pa.ChunkedArray | None, grouped: Grouped
    ) -> dict[GroupKey, Fold] | None:
        assert values is not None  # only count(*) has no argument
        if pa.types.is_integer(values.type):
            return _integer_sums(values, grouped)
        return _float_sums(values, grouped)


class Avg(Sum):
    kind = "avg"
    sql_names = ("avg",)
    sql_usage = "avg"
    result_type = "float"

    def result(self) -> float | None:
        if not self.n:
            return None
        if not any(self.floats):
            return self.integer / self.n
        return self.total() / self.n


def _integer_sums(values: pa.ChunkedArray, grouped: Grouped) -> dict[GroupKey, Fold] | None:
    arr = values.to_numpy(zero_copy_only=False)
    present = arr[~np.isnan(arr)] if arr.dtype.kind == "f" else arr
    if present.size and int(np.abs(present).max()) * len(present) >= 1 << 62:
        return None  # could overflow int64: let Python ints do it
    rows = grouped.aggregate({"__v": values}, [("__v", "sum"), ("__v", "count")])
    return {
        group: _adding(row["__v_count"], int(row["__v_sum"]), [])
        for group, row in rows
        if row["__v_count"]
    }


def _float_sums(values: pa.ChunkedArray, grouped: Grouped) -> dict[GroupKey, Fold] | None:
    """Exact per (group, exponent) integer mantissa sums, turned into each group's partials."""
    filled = pc.fill_null(values, 0.0).to_numpy()
    hi, lo, exp = _split_floats(filled)
    valid = pc.is_valid(values)
    extra = {
        "__hi": pa.array(hi),
        "__lo": pa.array(lo),
        "__by_e": pa.array(exp),
        "__n": pc.cast(valid, pa.int64()),
    }
    totals: dict[GroupKey, list[Any]] = {}
    for group, row in grouped.aggregate(extra, [("__hi", "sum"), ("__lo", "sum"), ("__n", "sum")]):
        n = row["__n_sum"]
        entry = totals.setdefault(group, [0, []])
        entry[0] += n
        if n:
            entry[1].append(
                (row["__by_e"] - _MANTISSA, (row["__hi_sum"] << _LOW_BITS) + row["__lo_sum"])
            )
    out: dict[GroupKey, Fold] = {}
    for group, (n, terms) in totals.items():
        if not n:
            continue
        low = min(e for e, _ in terms)
        total = sum(m << (e - low) for e, m in terms)
        try:
            partials = dyadic_partials(total, low)
        except OverflowError:
            return None
        out[group] = _adding(n, 0, partials)
    return out


def _split_floats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = (hi * 2**26 + lo) * 2**(e - 53) exactly, with small integer hi, lo."""
    fraction, exponent = np.frexp(values)
    mantissa = np.ldexp(fraction, _MANTISSA).astype(np.int64)
    return mantissa >> _LOW_BITS, mantissa & ((1 << _LOW_BITS) - 1), exponent.astype(np.int64)


def dyadic_partials(n: int, k: int) -> list[float]:
    """Non-overlapping floats (smallest first) summing exactly to ``n * 2**k``."""
    out: list[float] = []
    while n:
        f = math.ldexp(float(n), k)
        fraction, e = math.frexp(f)
        m, scale = int(math.ldexp(fraction, _MANTISSA)), e - _MANTISSA  # f == m * 2**scale
        if scale >= k:
            n -= m << (scale - k)
        else:
            n, k = (n << (k - scale)) - m, scale
        out.append(f)
    return out[::-1]


def _adding(n: int, integer: int, partials: list[float]) -> Fold:
    def fold(aggregate: Sum) -> None:
        aggregate.n += n
        aggregate.integer += integer
        for p in partials:
            _grow(aggregate.floats, p)

    return fold
