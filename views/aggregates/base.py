"""The aggregate contract, and the facts every aggregate class declares about itself.

The contract every class keeps (checked for all of them by tests/views/test_aggregate_contract.py):

* ``add(x)`` folds in one non-null value (the view skips SQL NULLs before calling it, except for
  ``count(*)`` which receives ``True`` for every row);
* ``merge(other)`` folds in another instance's state without aliasing it, so merge(a, b) equals
  feeding both streams to one instance — this is what query-time rollups are built on;
* ``result()`` is the JSON-able answer; ``to_state()`` / ``from_state()`` round-trip exactly;
* ``remove(x)`` exists only where undo is exact (``removable = True``): count, sum, avg,
  count_distinct, and the SortedList-backed min/max/percentile used for change streams. Min/max as
  a scalar and the approximate sketches cannot forget a value.

Besides its state, a class declares everything the rest of the engine needs to know about it, so
that adding an aggregate means writing one class and listing it in ``views.spec.KINDS``:

* ``kind`` — its name in specs and snapshots; ``shown`` — the name a view's schema reports (a
  stand-in reports the name it stands in for);
* ``sql_names`` — the function names that call it in view SQL, ``sql_arity`` — how many arguments
  it takes there, ``sql_usage`` — how the "not a supported aggregate" message spells it, and
  ``sql_params`` — its constructor parameters from the literal arguments after the first;
* ``result_type`` — the schema type of its answer; ``numeric_arg`` — whether its argument must be
  a number;
* ``removable`` and ``stand_in`` — on a change stream a class that cannot forget a value is
  replaced by its ``stand_in`` (an exact, removable twin), or refused if it has none;
* ``columnar`` and ``fold_columns`` — how a whole batch folds in column-wise (``views.columns``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

GroupKey = tuple[int, tuple[Any, ...]]  # (window start, group key) of a batch's group
Fold = Callable[[Any], None]  # folds one group's share of a batch into that group's aggregate


class Grouped(Protocol):
    """A batch grouped by (window start, group key): what a columnar fold reads. ``views.columns``
    provides it; the folds only say which figures they need per group."""

    def aggregate(
        self, extra: dict[str, Any], aggregations: list[Any]
    ) -> list[tuple[GroupKey, dict[str, Any]]]:
        """Arrow's ``group_by(...).aggregate(aggregations)`` over the group columns plus
        ``extra`` columns; extra columns named ``__by*`` are grouped by too. One row dict per
        result row, with the group it belongs to."""
        ...

    def value_counts(
        self, values: pa.ChunkedArray
    ) -> Iterable[tuple[GroupKey, list[Any], list[int]]]:
        """Per group: its distinct non-null values and how often each occurs."""
        ...


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
    # Facts about one class, never inherited (a subclass is another aggregate): when a class does
    # not declare them, ``__init_subclass__`` sets "not callable from SQL", "shown as its own
    # kind" and "no stand-in" rather than letting Max answer to "min" or retract with SortedMin.
    sql_names: ClassVar[tuple[str, ...]] = ()
    sql_usage: ClassVar[str] = ""
    shown: ClassVar[str]
    stand_in: ClassVar[type[Aggregate] | None] = None
    # Facts a subclass may share with its parent (Avg with Sum, Max with Min).
    sql_arity: ClassVar[tuple[int, ...]] = (1,)
    result_type: ClassVar[str]  # int | number | float | array
    numeric_arg: ClassVar[bool] = False
    removable: ClassVar[bool] = False
    columnar: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "kind" not in own or not hasattr(cls, "result_type"):
            raise TypeError(f"aggregate {cls.__name__} must declare its kind and result_type")
        if "sql_names" not in own:
            cls.sql_names = ()
        if "sql_usage" not in own:
            cls.sql_usage = ""
        if "shown" not in own:
            cls.shown = cls.kind
        if "stand_in" not in own:
            cls.stand_in = None

    @classmethod
    def sql_params(cls, numbers: list[float]) -> dict[str, Any]:
        """Constructor parameters from the call's literal arguments after the first (as many as
        ``sql_arity`` allows); ValueError says what is wrong with them."""
        return {}

    @classmethod
    def fold_columns(
        cls, values: pa.ChunkedArray | None, grouped: Grouped
    ) -> dict[GroupKey, Fold] | None:
        """Per group of the batch, the function that folds that group's ``values`` (the argument
        column, None for ``count(*)``; never all null) into its aggregate. Pure: it changes no
        state, so refusing (None: the batch must take the row path) is free. Only classes with
        ``columnar = True`` are asked."""
        return None

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
