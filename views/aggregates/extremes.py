"""min(x) and max(x): a scalar each, and on change streams their exact, removable stand-ins."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from sortedcontainers import SortedList

from views.aggregates.base import Aggregate, Fold, Grouped, GroupKey, whole


class SortedMin(Aggregate):
    """Exact, removable min: a sorted multiset of the values (for change streams)."""

    kind = "sorted_min"
    shown = "min"
    result_type = "number"
    numeric_arg = True
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
    shown = "max"

    def result(self) -> Any:
        return self.values[-1] if self.values else None


class Min(Aggregate):
    kind = "min"
    sql_names = ("min",)
    sql_usage = "min"
    result_type = "number"
    numeric_arg = True
    stand_in = SortedMin
    columnar = True
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

    @classmethod
    def fold_columns(
        cls, values: pa.ChunkedArray | None, grouped: Grouped
    ) -> dict[GroupKey, Fold] | None:
        # The kind is also Arrow's name for the per-group reduction ("min" / "max").
        rows = grouped.aggregate({"__v": values}, [("__v", cls.kind)])
        column = f"__v_{cls.kind}"
        return {group: _adding(row[column]) for group, row in rows if row[column] is not None}


class Max(Min):
    kind = "max"
    sql_names = ("max",)
    sql_usage = "max"
    stand_in = SortedMax

    def add(self, x: float) -> None:
        if self.value is None or x > self.value:
            self.value = x


def _adding(v: Any) -> Fold:
    def fold(aggregate: Min) -> None:
        aggregate.add(v)

    return fold
