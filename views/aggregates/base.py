"""The aggregate contract, and the facts every aggregate class declares about itself.

An aggregate instance holds the state of *every* (bucket, group) pair of one view partition, in
numpy arrays indexed by pair id (``views.state.Pairs``): no Python object per pair. Its contract
(checked for every class by ``tests/views/test_aggregate_contract.py`` and, end to end, against
the per-event oracle in ``tests/oracle``):

* ``resize(n)`` makes room for pair ids ``0..n-1`` (new pairs are empty);
* ``fold(batch)`` adds a batch's rows: ``batch.group[i]`` says which of ``batch.pairs`` row ``i``
  goes to; rows whose value is NULL are skipped (``count(*)`` has no value and counts every row);
  with ``batch.negate`` the rows are retracted instead (only ``removable`` classes);
* ``missing(batch)`` says, per row, whether retracting it would take off a value that is not
  there (exact multisets only; a count or a sum can always take a value off);
* ``absorb(other, ids, rows)`` merges ``other``'s pairs ``ids`` into this instance's ``rows``, in
  order: query-time rollups, merges across partitions and cross-node merges are all this;
* ``results(ids)`` are the JSON-able answers of pairs ``ids``;
* ``take(keep)`` keeps only pairs ``keep`` (renumbered 0..), after retention dropped many;
* ``buffers()`` / ``load(buffers)`` round-trip the state exactly, as arrays (snapshots).

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
* ``interned`` — whether its values are kept by code in a ``Values`` dictionary the view shares
  between its partitions (exact distinct counts, top-k), so codes mean the same in every part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from views.batch import Vec
from views.values import Values

Buffers = dict[str, Any]  # numpy arrays and small JSON-able values
EXACT = 2**53  # below it, every integer is a float64 exactly


def whole(x: Any) -> Any:
    """JSON has one number type: a whole float below 2**53 is answered as an integer, so a sum,
    min or max does not depend on whether events wrote ``12`` or ``12.0``."""
    if isinstance(x, float) and x.is_integer() and abs(x) < EXACT:
        return int(x)
    return x


@dataclass
class Batch:
    """One batch's rows for one aggregate (see the module docstring)."""

    pairs: np.ndarray  # distinct pair ids the rows go to
    group: np.ndarray  # per row: index into ``pairs``
    values: Vec | None  # the argument per row; None for count(*)
    negate: bool = False

    def present(self) -> tuple[np.ndarray, Vec | None]:
        """(rows with a value, their values): NULL rows are skipped, as SQL aggregates do."""
        if self.values is None:
            return np.arange(len(self.group)), None
        rows = np.flatnonzero(self.values.valid)
        return rows, self.values.take(rows)


class NotRemovable(TypeError):
    """Raised by ``fold(negate=True)`` on aggregates that cannot forget a value exactly."""


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
    interned: ClassVar[bool] = False
    # ``absorb`` of partial states leaves exactly the state folding their values would: hop
    # windows fold a batch once per slide-sized pane, then absorb panes into windows.
    merges_exactly: ClassVar[bool] = False
    # Folding rows in one batch leaves the state folding them in several, in order, would (not
    # top_k's: a batch is summarised whole, ``views.aggregates.topk``); where it does not,
    # ``fold_batches`` folds several at once as in turn.
    any_batching: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if own.get("abstract"):  # shared machinery of several aggregates, not one itself
            return
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

    def __init__(self, values: Values | None = None, **params: Any) -> None:
        self.values = values  # the shared dictionary of an ``interned`` class
        self.params = params
        self.size = 0

    def empty(self, size: int) -> Aggregate:
        """A new, empty instance of the same kind, parameters and dictionary, ``size`` pairs."""
        fresh = type(self)(self.values, **self.params)
        fresh.resize(size)
        return fresh

    def resize(self, size: int) -> None:
        raise NotImplementedError

    def fold(self, batch: Batch) -> None:
        raise NotImplementedError

    def missing(self, batch: Batch) -> np.ndarray:
        return np.zeros(len(batch.group), bool)

    def settle(self) -> None:
        """Finish the batch's folds: the end of a view's apply (an exact multiset merges the
        adds it queued, so a query after the batch does not)."""

    def absorb(self, other: Aggregate, ids: np.ndarray, rows: np.ndarray) -> None:
        raise NotImplementedError

    def results(self, ids: np.ndarray) -> list[Any]:
        raise NotImplementedError

    def sort_values(self, ids: np.ndarray) -> np.ndarray | None:
        """The results of ``ids`` as float64 (NaN where a result is null), when they order
        exactly as ``results`` do under ``sort_key``: what ``order_by`` sorts in numpy. None
        (the default): the answers are sorted as Python values."""
        return None

    def take(self, keep: np.ndarray) -> None:
        raise NotImplementedError

    def fold_batches(self, batch: Batch, batch_of: np.ndarray) -> None:
        """``fold`` of consecutive batches' rows in turn (``batch_of``: each row's batch, in
        ascending order): what an aggregate without ``any_batching`` must have."""
        raise NotImplementedError

    def buffers(self) -> Buffers:
        raise NotImplementedError

    def load(self, buffers: Buffers) -> None:
        raise NotImplementedError

    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers().values() if isinstance(b, np.ndarray))


def grow(array: np.ndarray, size: int, fill: Any = 0) -> np.ndarray:
    """``array`` with room for ``size`` entries along its first axis (new ones ``fill``, the
    dtype kept), growing by at least half (and to 16 entries at least), so that a part adding
    pairs one batch at a time copies each pair's state O(1) times on average; an array long
    enough already is returned as it is. ``Aggregate.size`` tracks the length in use."""
    if len(array) >= size:
        return array
    capacity = max(size, len(array) + len(array) // 2, 16)
    out = np.full((capacity, *array.shape[1:]), fill, array.dtype)
    out[: len(array)] = array
    return out
