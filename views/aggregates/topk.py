"""top_k(x, k [, capacity]): the most frequent values (Space-Saving)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from views.aggregates.base import Aggregate, Fold, Grouped, GroupKey
from views.sketches import Scalar, SpaceSaving, sort_key


class TopK(Aggregate):
    kind = "top_k"
    sql_names = ("top_k",)
    sql_arity = (2, 3)
    sql_usage = "top_k(x, k)"
    result_type = "array"
    columnar = True
    __slots__ = ("k", "sketch")

    def __init__(self, k: int, capacity: int) -> None:
        self.k = k
        self.sketch = SpaceSaving(capacity)

    @classmethod
    def sql_params(cls, numbers: list[float]) -> dict[str, Any]:
        k = numbers[0]
        capacity = numbers[1] if len(numbers) == 2 else max(100 * k, 100)
        if k != int(k) or not 1 <= k <= 1000:
            raise ValueError("k must be a whole number from 1 to 1000")
        if capacity != int(capacity) or not k <= capacity <= 100_000:
            raise ValueError("capacity must be a whole number from k to 100000")
        return {"k": int(k), "capacity": int(capacity)}

    def add(self, x: Scalar) -> None:
        self.sketch.add(x)

    def merge(self, other: TopK) -> None:
        self.sketch.merge(other.sketch)

    def result(self) -> list[dict[str, Any]]:
        return self.sketch.top(self.k)

    def to_state(self) -> dict[str, Any]:
        return self.sketch.to_state()

    def load(self, state: Any) -> None:
        self.sketch = SpaceSaving.from_state(state)

    @classmethod
    def fold_columns(
        cls, values: pa.ChunkedArray | None, grouped: Grouped
    ) -> dict[GroupKey, Fold] | None:
        """The batch's exact counts per group, merged in as a summary (Cafaro et al.): within
        the row path's error bound, but not always its state once values get evicted."""
        return {
            group: _merging(dict(zip(vs, ns, strict=True)))
            for group, vs, ns in grouped.value_counts(values)
        }


def _merging(counts: dict[Any, int]) -> Fold:
    def fold(aggregate: TopK) -> None:
        capacity = aggregate.sketch.capacity
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], sort_key(kv[0])))[:capacity]
        summary = SpaceSaving(capacity)
        summary.counts = dict(ranked)
        summary.errors = dict.fromkeys(summary.counts, 0)
        summary._rebuild_heap()
        if not aggregate.sketch.counts:
            aggregate.sketch = summary
        else:
            aggregate.sketch.merge(summary)

    return fold
