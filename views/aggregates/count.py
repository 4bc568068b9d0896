"""count(*) and count(x): the number of rows, or of non-null values."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from views.aggregates.base import Aggregate, Fold, Grouped, GroupKey


class Count(Aggregate):
    kind = "count"
    sql_names = ("count",)
    sql_usage = "count(*), count(x)"
    result_type = "int"
    removable = True
    columnar = True
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

    @classmethod
    def fold_columns(
        cls, values: pa.ChunkedArray | None, grouped: Grouped
    ) -> dict[GroupKey, Fold] | None:
        if values is None:  # count(*)
            rows = grouped.aggregate({}, [([], "count_all")])
            return {group: _adding(row["count_all"]) for group, row in rows}
        rows = grouped.aggregate({"__v": values}, [("__v", "count")])
        return {group: _adding(row["__v_count"]) for group, row in rows if row["__v_count"]}


def _adding(n: int) -> Fold:
    def fold(aggregate: Count) -> None:
        aggregate.n += n

    return fold
