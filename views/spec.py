"""Frozen, validated definitions. Parsing lives in ``views.sql`` and ``views.config``; code that
runs views trusts these objects and never re-validates them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from views import aggregates as agg
from views.expr import Value
from views.predicates import Predicate

# Every aggregate a view may use; everything else about them is read from their class attributes.
KINDS: tuple[type[agg.Aggregate], ...] = (
    agg.Count,
    agg.Sum,
    agg.Avg,
    agg.Min,
    agg.Max,
    agg.CountDistinct,
    agg.ApproxCountDistinct,
    agg.ApproxPercentile,
    agg.TopK,
    agg.SortedMin,
    agg.SortedMax,
    agg.SortedPercentile,
)
AGGREGATES: dict[str, type[agg.Aggregate]] = {cls.kind: cls for cls in KINDS}
# The view SQL's function names (count(DISTINCT x) and pNN(x) are spelled out in views.sql).
SQL_NAMES: dict[str, type[agg.Aggregate]] = {name: cls for cls in KINDS for name in cls.sql_names}


@dataclass(frozen=True)
class SourceSpec:
    name: str
    time_field: str
    declared: dict[str, str] = field(default_factory=dict)
    # Filled in by config loading: union of every view's requirements and the declared types.
    schema: dict[str, str] = field(default_factory=dict)
    kind: str = "http"  # http | kafka | file
    format: str = "json"  # json | debezium (kafka) ; ndjson | csv (file)
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific, validated by config

    @property
    def retracting(self) -> bool:
        """Change streams send retractions: only exactly removable aggregates are allowed."""
        return self.format == "debezium"

    @property
    def logged(self) -> bool:
        """HTTP events go through tallyd's own WAL; Kafka and files are their own logs."""
        return self.kind == "http"


@dataclass(frozen=True)
class WindowSpec:
    name: str
    kind: Literal["tumble", "hop"]
    size: int
    slide: int


@dataclass(frozen=True)
class AggSpec:
    name: str
    kind: str
    sql: str
    arg: Value | None  # None for count(*)
    params: dict[str, Any] = field(default_factory=dict)
    arg_field: str | None = (
        None  # the argument when it is a bare field (the columnar path reads it)
    )

    @property
    def cls(self) -> type[agg.Aggregate]:
        return AGGREGATES[self.kind]

    def new(self) -> agg.Aggregate:
        return AGGREGATES[self.kind](**self.params)

    def from_state(self, state: Any) -> agg.Aggregate:
        aggregate = self.new()
        aggregate.load(state)
        return aggregate


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    role: Literal["key", "window", "aggregate"]
    aggregate: str | None = None
    sql: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "role": self.role}
        if self.aggregate is not None:
            out["aggregate"] = self.aggregate
        if self.sql is not None:
            out["sql"] = self.sql
        return out


@dataclass(frozen=True)
class ViewSpec:
    name: str
    source: str
    sql: str
    fingerprint: str  # hash of the normalised SQL: a snapshot made for other SQL is not reused
    keys: tuple[str, ...]  # group-key fields, in SELECT order
    window: WindowSpec | None
    aggs: tuple[AggSpec, ...]
    columns: tuple[Column, ...]
    where: Predicate | None
    where_fields: tuple[str, ...]  # the fields the WHERE clause reads
    requirements: dict[str, str]
    retention: int | None = None
    grace: int = 0
    max_groups: int = 100_000
    retracting: bool = False  # then aggs ends with a hidden row count (groups vanish at zero)
    computed: frozenset[str] = frozenset()  # fields read by arithmetic (``views.expr.Fields``)
    big_numbers: bool = False  # a number in its SQL beyond 2**53 (not exactly a float64)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)
