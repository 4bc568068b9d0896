"""The per-event aggregates tallyd had before the columnar engine: one small object per (group,
bucket), fed one value at a time. Kept only as the test oracle the engine is compared with.

Exact aggregates use plain Python (ints, ``math.fsum`` over every value kept, ``sorted``); the
sketches use the scalar reference implementations in ``views.sketches``, fed the same way the
engine feeds its arrays (top_k: one exact summary per batch, merged — Space-Saving's mergeable
summary), so that the engine's sketch states must equal these exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from views.sketches import DDSketch, HyperLogLog, SpaceSaving, sort_key


def whole(x: Any) -> Any:
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    return x


def canonical(value: Any) -> Any:
    """1 and 1.0 are one SQL value, and 0.0 and -0.0; True is not 1 (typed keys)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return ("n", int(value))
    if isinstance(value, int | float):
        return ("n", value)
    return ("s", value)


class Oracle:
    kind = ""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def add(self, x: Any) -> None:
        raise NotImplementedError

    def can_remove(self, x: Any) -> bool:
        """Whether ``remove(x)`` would forget a value that is there (exact multisets check; a
        count or a sum can always take a value off)."""
        return True

    def remove(self, x: Any) -> None:
        raise NotImplementedError

    def end_batch(self) -> None:
        """A batch ends (top_k merges its batch summary here)."""

    def merge(self, other: Any) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError


class Count(Oracle):
    kind = "count"

    def __init__(self, **params: Any) -> None:
        self.n = 0

    def add(self, x: Any) -> None:
        self.n += 1

    def remove(self, x: Any) -> None:
        self.n -= 1

    def merge(self, other: Count) -> None:
        self.n += other.n

    def result(self) -> int:
        return self.n


class Sum(Oracle):
    """The values added and those taken off, kept: the exact sum is ``math.fsum`` of the added
    ones and the negated taken-off ones (ints exact), SQL NULL over no values."""

    kind = "sum"

    def __init__(self, **params: Any) -> None:
        self.terms: list[Any] = []
        self.n = 0

    def add(self, x: Any) -> None:
        self.terms.append(x)
        self.n += 1

    def remove(self, x: Any) -> None:
        self.terms.append(-x)
        self.n -= 1

    def merge(self, other: Sum) -> None:
        self.terms += other.terms
        self.n += other.n

    def total(self) -> Any:
        if all(isinstance(v, int) for v in self.terms):
            return sum(self.terms)
        return math.fsum(self.terms)

    def result(self) -> Any:
        if not self.n:
            return None
        total = self.total()
        if isinstance(total, float) and total.is_integer() and abs(total) >= 2**53:
            return int(total)  # a whole sum is answered as an exact integer, any size
        return whole(total)


class Avg(Sum):
    kind = "avg"

    def result(self) -> Any:
        if not self.n:
            return None
        if all(isinstance(v, int) for v in self.terms):
            return sum(self.terms) / self.n
        return math.fsum(self.terms) / self.n


class Min(Oracle):
    kind = "min"

    def __init__(self, **params: Any) -> None:
        self.value: Any = None

    def add(self, x: Any) -> None:
        if self.value is None or x < self.value:
            self.value = x

    def merge(self, other: Min) -> None:
        if other.value is not None:
            self.add(other.value)

    def result(self) -> Any:
        return whole(None if self.value is None else float(self.value))


class Max(Min):
    kind = "max"

    def add(self, x: Any) -> None:
        if self.value is None or x > self.value:
            self.value = x


class Multiset(Oracle):
    """Values with multiplicities: exact, removable (count_distinct; sorted min/max/percentile)."""

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.seen: Counter[Any] = Counter()
        self.original: dict[Any, Any] = {}

    def add(self, x: Any) -> None:
        key = canonical(x)
        self.seen[key] += 1
        self.original.setdefault(key, x)

    def can_remove(self, x: Any) -> bool:
        return self.seen[canonical(x)] > 0

    def remove(self, x: Any) -> None:
        key = canonical(x)
        self.seen[key] -= 1
        if not self.seen[key]:
            del self.seen[key]

    def merge(self, other: Multiset) -> None:
        self.seen.update(other.seen)
        for key, value in other.original.items():
            self.original.setdefault(key, value)

    def numbers(self) -> list[float]:
        return sorted(float(self.original[k]) for k, n in self.seen.items() for _ in range(n))


class CountDistinct(Multiset):
    kind = "count_distinct"

    def result(self) -> int:
        return sum(1 for n in self.seen.values() if n > 0)


class SortedMin(Multiset):
    kind = "sorted_min"

    def result(self) -> Any:
        values = self.numbers()
        return whole(values[0]) if values else None


class SortedMax(Multiset):
    kind = "sorted_max"

    def result(self) -> Any:
        values = self.numbers()
        return whole(values[-1]) if values else None


class SortedPercentile(Multiset):
    kind = "sorted_percentile"

    def result(self) -> Any:
        values = self.numbers()
        if not values:
            return None
        return whole(values[math.floor(self.params["q"] * (len(values) - 1))])


class ApproxCountDistinct(Oracle):
    kind = "approx_count_distinct"

    def __init__(self, **params: Any) -> None:
        self.sketch = HyperLogLog()

    def add(self, x: Any) -> None:
        self.sketch.add(x)

    def merge(self, other: ApproxCountDistinct) -> None:
        self.sketch.merge(other.sketch)

    def result(self) -> int:
        return self.sketch.estimate()


class ApproxPercentile(Oracle):
    kind = "approx_percentile"

    def __init__(self, **params: Any) -> None:
        self.q = params["q"]
        self.sketch = DDSketch()

    def add(self, x: Any) -> None:
        self.sketch.add(float(x))

    def merge(self, other: ApproxPercentile) -> None:
        self.sketch.merge(other.sketch)

    def result(self) -> Any:
        value = self.sketch.quantile(self.q)
        return None if value is None else float(value)


class TopK(Oracle):
    """Space-Saving fed as the engine feeds it: each batch's exact counts summarised to the
    capacity, then merged (Cafaro et al.'s mergeable summary)."""

    kind = "top_k"

    def __init__(self, **params: Any) -> None:
        self.k, self.capacity = params["k"], params["capacity"]
        self.sketch = SpaceSaving(self.capacity)
        self.batch: Counter[Any] = Counter()
        self.first: dict[Any, Any] = {}

    def add(self, x: Any) -> None:
        key = canonical(x)
        self.batch[key] += 1
        self.first.setdefault(key, x)

    def end_batch(self) -> None:
        if not self.batch:
            return
        ranked = sorted(
            ((self.first[k], n) for k, n in self.batch.items()),
            key=lambda vn: (-vn[1], sort_key(vn[0])),
        )[: self.capacity]
        summary = SpaceSaving.from_counts(self.capacity, dict(ranked))
        self.sketch.merge(summary)
        self.batch.clear()

    def merge(self, other: TopK) -> None:
        self.sketch.merge(other.sketch)

    def result(self) -> list[dict[str, Any]]:
        return self.sketch.top(self.k)


KINDS: dict[str, type[Oracle]] = {
    c.kind: c
    for c in (
        Count,
        Sum,
        Avg,
        Min,
        Max,
        CountDistinct,
        SortedMin,
        SortedMax,
        SortedPercentile,
        ApproxCountDistinct,
        ApproxPercentile,
        TopK,
    )
}
