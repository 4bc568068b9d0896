"""Aggregates: small mergeable state machines, one class each.

The contract every class keeps (checked for all of them by tests/views/test_aggregate_contract.py):

* ``add(x)`` folds in one non-null value (the view skips SQL NULLs before calling it, except for
  ``count(*)`` which receives ``True`` for every row);
* ``merge(other)`` folds in another instance's state without aliasing it, so merge(a, b) equals
  feeding both streams to one instance — this is what query-time rollups are built on;
* ``result()`` is the JSON-able answer; ``to_state()`` / ``from_state()`` round-trip exactly;
* ``remove(x)`` exists only where undo is exact (``removable = True``): count, sum, avg,
  count_distinct, and the SortedList-backed min/max/percentile used for change streams. Min/max as
  a scalar and the approximate sketches cannot forget a value.

``Sum`` is exact: integers are kept as Python ints and floats as Shewchuk's non-overlapping
partials (what ``math.fsum`` uses), so a sum is the correctly rounded sum of its inputs whatever the
order, batching or merge tree — replays, rollups and restarts give bit-identical answers.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from sortedcontainers import SortedList

from views.sketches import DDSketch, HyperLogLog, Scalar, SpaceSaving, sort_key


def whole(x: Any) -> Any:
    """JSON has one number type: a whole float below 2**53 is answered as an integer, so a sum,
    min or max does not depend on whether events wrote ``12`` or ``12.0``, or on whether a batch
    was read row by row or column-wise (where a column with any decimal is all floats)."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    return x


class NotRemovable(TypeError):
    """Raised by ``remove`` on aggregates that cannot forget a value exactly."""


class Aggregate:
    kind: ClassVar[str]
    removable: ClassVar[bool] = False

    def add(self, x: Any) -> None:
        raise NotImplementedError

    def remove(self, x: Any) -> None:
        raise NotRemovable(f"{self.kind} cannot remove a value exactly")

    def merge(self, other: Any) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError

    def to_state(self) -> Any:
        raise NotImplementedError

    def load(self, state: Any) -> None:
        raise NotImplementedError

    @classmethod
    def restore(cls, state: Any, params: dict[str, Any]) -> Aggregate:
        """A new instance from ``to_state`` output (restores call this millions of times: the
        plain aggregates override it to skip ``__init__``)."""
        aggregate = cls(**params)
        aggregate.load(state)
        return aggregate


class Count(Aggregate):
    kind = "count"
    removable = True
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def add(self, x: Any) -> None:
        self.n += 1

    def remove(self, x: Any) -> None:
        self.n -= 1

    def merge(self, other: Count) -> None:
        self.n += other.n

    def result(self) -> int:
        return self.n

    def to_state(self) -> int:
        return self.n

    def load(self, state: Any) -> None:
        self.n = int(state)

    @classmethod
    def restore(cls, state: Any, params: dict[str, Any]) -> Count:
        aggregate = cls.__new__(cls)
        aggregate.n = int(state)
        return aggregate


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
    removable = True
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


class Avg(Sum):
    kind = "avg"

    def result(self) -> float | None:
        if not self.n:
            return None
        if not any(self.floats):
            return self.integer / self.n
        return self.total() / self.n


class Min(Aggregate):
    kind = "min"
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float | None = None

    def add(self, x: float) -> None:
        if self.value is None or x < self.value:
            self.value = x

    def merge(self, other: Min) -> None:
        if other.value is not None:
            self.add(other.value)

    def result(self) -> float | None:
        value: float | None = whole(self.value)
        return value

    def to_state(self) -> float | None:
        return self.value

    def load(self, state: Any) -> None:
        self.value = state

    @classmethod
    def restore(cls, state: Any, params: dict[str, Any]) -> Min:
        aggregate = cls.__new__(cls)
        aggregate.value = state
        return aggregate


class Max(Min):
    kind = "max"

    def add(self, x: float) -> None:
        if self.value is None or x > self.value:
            self.value = x


class CountDistinct(Aggregate):
    """Exact distinct count: a multiset of the values, so it is removable too."""

    kind = "count_distinct"
    removable = True
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


class ApproxCountDistinct(Aggregate):
    kind = "approx_count_distinct"
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


class ApproxPercentile(Aggregate):
    kind = "approx_percentile"
    __slots__ = ("q", "sketch")

    def __init__(self, q: float) -> None:
        self.q = q
        self.sketch = DDSketch()

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


class TopK(Aggregate):
    kind = "top_k"
    __slots__ = ("k", "sketch")

    def __init__(self, k: int, capacity: int) -> None:
        self.k = k
        self.sketch = SpaceSaving(capacity)

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


class SortedMin(Aggregate):
    """Exact, removable min: a sorted multiset of the values (for change streams)."""

    kind = "sorted_min"
    removable = True
    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: SortedList[Any] = SortedList()

    def add(self, x: float) -> None:
        self.values.add(x)

    def remove(self, x: float) -> None:
        self.values.remove(x)  # ValueError if absent: the caller counts it as unmatched

    def merge(self, other: SortedMin) -> None:
        self.values.update(other.values)

    def result(self) -> Any:
        return self.values[0] if self.values else None

    def to_state(self) -> list[Any]:
        return list(self.values)

    def load(self, state: Any) -> None:
        self.values = SortedList(state)


class SortedMax(SortedMin):
    kind = "sorted_max"

    def result(self) -> Any:
        return self.values[-1] if self.values else None


class SortedPercentile(SortedMin):
    """Exact, removable lower quantile ``sorted(xs)[floor(q * (n - 1))]``."""

    kind = "sorted_percentile"
    __slots__ = ("q",)

    def __init__(self, q: float) -> None:
        super().__init__()
        self.q = q

    def result(self) -> Any:
        if not self.values:
            return None
        return self.values[math.floor(self.q * (len(self.values) - 1))]
