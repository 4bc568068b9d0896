"""count_distinct(x) (exact, a multiset) and approx_count_distinct(x) (HyperLogLog)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from views.aggregates.base import Aggregate, Fold, Grouped, GroupKey
from views.sketches import HyperLogLog, Scalar, hash64, sort_key


class CountDistinct(Aggregate):
    """Exact distinct count: a multiset of the values, so it is removable too."""

    kind = "count_distinct"
    sql_names = ("count_distinct",)
    sql_usage = "count_distinct"
    result_type = "int"
    removable = True
    columnar = True
    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: dict[Scalar, int] = {}

    def add(self, x: Scalar) -> None:
        self.seen[x] = self.seen.get(x, 0) + 1

    def remove(self, x: Scalar) -> None:
        left = self.seen[x] - 1
        if left:
            self.seen[x] = left
        else:
            del self.seen[x]

    def merge(self, other: CountDistinct) -> None:
        if not self.seen:
            self.seen = dict(other.seen)  # C-level copy: the common case in query-time merges
            return
        # Overwrite in C, then add back the counts of the values both sides had.
        both = {v: self.seen[v] for v in self.seen.keys() & other.seen.keys()}
        self.seen.update(other.seen)
        for value, n in both.items():
            self.seen[value] += n

    def result(self) -> int:
        return len(self.seen)

    def to_state(self) -> list[list[Any]]:
        return [[v, self.seen[v]] for v in sorted(self.seen, key=sort_key)]

    def load(self, state: Any) -> None:
        self.seen = {v: int(n) for v, n in state}

    @classmethod
    def fold_columns(
        cls, values: pa.ChunkedArray | None, grouped: Grouped
    ) -> dict[GroupKey, Fold] | None:
        return {group: _counting(vs, ns) for group, vs, ns in grouped.value_counts(values)}


def _counting(values: list[Any], counts: list[int]) -> Fold:
    def fold(aggregate: CountDistinct) -> None:
        seen = aggregate.seen
        if not seen:
            aggregate.seen = dict(zip(values, counts, strict=True))
            return
        for v, n in zip(values, counts, strict=True):
            seen[v] = seen.get(v, 0) + n

    return fold


class ApproxCountDistinct(Aggregate):
    kind = "approx_count_distinct"
    sql_names = ("approx_count_distinct",)
    sql_usage = "approx_count_distinct"
    result_type = "int"
    columnar = True
    __slots__ = ("sketch",)

    def __init__(self) -> None:
        self.sketch = HyperLogLog()

    def add(self, x: Scalar) -> None:
        self.sketch.add(x)

    def merge(self, other: ApproxCountDistinct) -> None:
        self.sketch.merge(other.sketch)

    def result(self) -> int:
        return self.sketch.estimate()

    def to_state(self) -> dict[str, Any]:
        return self.sketch.to_state()

    def load(self, state: Any) -> None:
        self.sketch = HyperLogLog.from_state(state)

    @classmethod
    def fold_columns(
        cls, values: pa.ChunkedArray | None, grouped: Grouped
    ) -> dict[GroupKey, Fold] | None:
        # Hashing is the costly part: done here, in the pure half, not when the folds are applied.
        return {group: _hashing(HASHES.many(vs)) for group, vs, _ in grouped.value_counts(values)}


def _hashing(hashes: list[int]) -> Fold:
    def fold(aggregate: ApproxCountDistinct) -> None:
        aggregate.sketch.add_hashes(hashes)

    return fold


class _Hashes:
    """value -> 64-bit hash, remembered: a hot value (a returning user) is hashed once."""

    LIMIT = 2_000_000

    def __init__(self) -> None:
        self.known: dict[Any, int] = {}

    def many(self, values: list[Any]) -> list[int]:
        if values and isinstance(values[0], bool):
            # True == 1 and False == 0 as dict keys, but they hash apart: never remembered, or
            # an integer column would reuse a boolean's hash. (One column: one type.)
            return [hash64(v) for v in values]
        known = self.known
        hashes = list(map(known.get, values))
        if None in hashes:
            if len(known) >= self.LIMIT:
                known.clear()
            for i, h in enumerate(hashes):
                if h is None:
                    v = values[i]
                    hashes[i] = known[v] = hash64(v)
        return hashes  # type: ignore[return-value]


HASHES = _Hashes()
