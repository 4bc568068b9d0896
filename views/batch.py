"""A batch, column-wise: what every source turns its input into and every view folds in.

``Columns`` holds the event time (int64 epoch ms, never null) and each field the views of its
source read, one column per field, all of the batch's length; an absent field and a JSON null
are both NULL. A column is a ``Vec``: its kind, its data and a validity mask —

* ``number``: a float64 or int64 numpy array (integers stay int64 when every value is one);
* ``string``: a pyarrow string array (UTF-8 bytes, compared and hashed in C);
* ``bool``: a numpy bool array;
* ``object``: a numpy object array, for the rare field whose values mix types (a group key
  that is sometimes a number, sometimes a string): kept exactly, handled value by value;
* ``null``: no value at all in this batch.

``from_rows`` builds one from decoded events (the row decoder, replayed WAL records, tests); the
fast decoders build them straight from Arrow's JSON reader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
KINDS = ("number", "string", "bool", "object", "null")


@dataclass(frozen=True)
class Vec:
    kind: str
    data: Any  # np.ndarray | pa.Array | None, by kind
    valid: np.ndarray  # bool: True where the value is not NULL
    # what is derived from the column once and read by every view of the batch (``encoded``)
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.valid)

    def encoded(self) -> tuple[np.ndarray, pa.Array]:
        """A string column dictionary-encoded: (each row's index into the distinct strings, -1
        for NULL; the distinct strings). Done once per column: every view keyed or counting on
        the field reads the same codes."""
        found = self.derived.get("encoded")
        if found is None:
            encoded = self.data.dictionary_encode()
            index = np.asarray(encoded.indices.fill_null(0)).astype(np.int64)
            index[~self.valid] = -1
            index.flags.writeable = False  # shared by every view: read, never changed
            found = self.derived["encoded"] = (index, encoded.dictionary)
        out: tuple[np.ndarray, pa.Array] = found
        return out

    @staticmethod
    def nulls(n: int) -> Vec:
        return Vec("null", None, np.zeros(n, bool))

    def take(self, index: np.ndarray) -> Vec:
        if self.kind == "null":
            return Vec.nulls(len(index))
        if len(index) == len(self) and (not len(index) or (index[0] == 0 and _identity(index))):
            return self  # every row, in order: the common case of a view with no WHERE
        data = self.data.take(pa.array(index)) if self.kind == "string" else self.data[index]
        return Vec(self.kind, data, self.valid[index])

    def values(self) -> list[Any]:
        """As Python values, None for NULL (for late-event records and the row oracle)."""
        if self.kind == "null":
            return [None] * len(self)
        items = self.data.to_pylist() if self.kind == "string" else self.data.tolist()
        return [v if ok else None for v, ok in zip(items, self.valid.tolist(), strict=True)]


def _identity(index: np.ndarray) -> bool:
    return bool((np.diff(index) == 1).all())


def from_values(values: Sequence[Any]) -> Vec:
    """A column from Python values (None for NULL): the narrowest kind that holds them all."""
    n = len(values)
    valid = np.fromiter((v is not None for v in values), bool, n)
    present = [v for v in values if v is not None]
    if not present:
        return Vec.nulls(n)
    kinds = {_kind(v) for v in present}
    if kinds == {"string"}:
        return Vec("string", pa.array(values, pa.string()), valid)
    if kinds == {"bool"}:
        return Vec("bool", np.array([bool(v) for v in values], bool), valid)
    if kinds <= {"int", "float"}:
        if kinds == {"int"} and all(INT64_MIN <= v <= INT64_MAX for v in present):
            return Vec("number", np.array([v or 0 for v in values], np.int64), valid)
        return Vec("number", np.array([float(v or 0) for v in values], np.float64), valid)
    return objects(values)


def objects(values: Sequence[Any]) -> Vec:
    """A column holding ``values`` as they are (None for NULL): an "object" column."""
    data = np.empty(len(values), object)
    data[:] = values
    return Vec("object", data, np.array([v is not None for v in values], bool))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "other"


def from_arrow(array: pa.Array | pa.ChunkedArray) -> Vec:
    """A column from an Arrow array read by a JSON reader (int64, double, string, bool, null)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    valid = np.asarray(array.is_valid())
    kind = array.type
    if pa.types.is_null(kind):
        return Vec.nulls(len(array))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return Vec("string", array, valid)
    if pa.types.is_boolean(kind):
        return Vec("bool", np.asarray(array.fill_null(False)), valid)
    if pa.types.is_integer(kind):
        return Vec("number", np.asarray(array.fill_null(0)).astype(np.int64), valid)
    if pa.types.is_floating(kind):
        return Vec("number", np.asarray(array.fill_null(0.0)).astype(np.float64), valid)
    raise TypeError(f"no column kind for Arrow type {kind}")


@dataclass
class Columns:
    """The events of one batch, column-wise (see the module docstring)."""

    time: np.ndarray  # int64 epoch ms
    fields: dict[str, Vec] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time)

    def column(self, name: str) -> Vec:
        found = self.fields.get(name)
        return Vec.nulls(len(self)) if found is None else found

    def take(self, index: np.ndarray) -> Columns:
        return Columns(self.time[index], {k: v.take(index) for k, v in self.fields.items()})

    def rows(self, index: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Events as dicts, NULL fields left out (absent and null mean the same)."""
        chosen = np.arange(len(self)) if index is None else np.fromiter(index, np.int64)
        names = list(self.fields)
        columns = [self.fields[n].take(chosen).values() for n in names]
        out = []
        for i in range(len(chosen)):
            out.append({n: c[i] for n, c in zip(names, columns, strict=True) if c[i] is not None})
        return out


def from_rows(events: Sequence[dict[str, Any]], time_field: str, names: Iterable[str]) -> Columns:
    """Decoded events (time already epoch ms) as columns of the fields ``names``."""
    time = np.fromiter((e[time_field] for e in events), np.int64, len(events))
    fields = {name: from_values([e.get(name) for e in events]) for name in names}
    if time_field in fields:  # the time field as a number column too (WHERE ts > ...)
        fields[time_field] = Vec("number", time, np.ones(len(events), bool))
    return Columns(time, fields)


EXACT_INTEGERS = 2**53  # every integer up to this magnitude is exactly a float64


@dataclass
class Joined(Columns):
    """Several batches' columns as one (``concat``), whose events (``rows``: a view's late
    events) are read from each batch's own columns, so that where a number column widened from
    int64 to float64 a batch's ints are still ints there."""

    parts: Callable[[], Sequence[Columns]] = list  # each batch's own columns
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # where each ends

    def rows(self, index: Iterable[int] | None = None) -> list[dict[str, Any]]:
        chosen = np.arange(len(self)) if index is None else np.fromiter(index, np.int64)
        starts = self.ends - np.diff(self.ends, prepend=0)
        which = np.searchsorted(self.ends, chosen, "right")
        out: list[dict[str, Any]] = [{} for _ in range(len(chosen))]
        for batch in np.unique(which).tolist():
            at = np.flatnonzero(which == batch)
            events = self.parts()[batch].rows((chosen[at] - starts[batch]).tolist())
            for i, event in zip(at.tolist(), events, strict=True):
                out[i] = event
        return out


def concat(parts: Sequence[Columns]) -> tuple[Columns, set[str]] | None:
    """``parts`` as one batch, row after row, with the same values, kinds and NULLs each part
    has; and the fields whose number column had to widen (int64 in some part, float64 in
    another: the whole column is float64, every integer in it exact). None when a field's kinds
    differ otherwise (a string in one part, a number in another), or a widened integer is beyond
    2**53: no one column then holds what each part held."""
    names = list(dict.fromkeys(name for part in parts for name in part.fields))
    widened: set[str] = set()
    fields: dict[str, Vec] = {}
    for name in names:
        vecs = [part.column(name) for part in parts]
        joined = _joined(vecs, name, widened)
        if joined is None:
            return None
        fields[name] = joined
    return Columns(np.concatenate([part.time for part in parts]), fields), widened


def _joined(vecs: list[Vec], name: str, widened: set[str]) -> Vec | None:
    kinds = {v.kind for v in vecs} - {"null"}
    valid = np.concatenate([v.valid for v in vecs])
    if not kinds:
        return Vec.nulls(len(valid))
    if len(kinds) > 1:
        return None
    kind = kinds.pop()
    if kind == "string":
        types = {v.data.type for v in vecs if v.kind == "string"}
        if len(types) > 1:
            return None
        string = types.pop()
        arrays = [v.data if v.kind == "string" else pa.nulls(len(v), string) for v in vecs]
        return Vec("string", pa.concat_arrays(arrays), valid)
    if kind == "number":
        dtypes = {v.data.dtype for v in vecs if v.kind == "number"}
        if len(dtypes) > 1:
            ints = [v.data[v.valid] for v in vecs if v.kind == "number" and v.data.dtype != float]
            if any(((i > EXACT_INTEGERS) | (i < -EXACT_INTEGERS)).any() for i in ints):
                return None
            widened.add(name)
        dtype = np.float64 if len(dtypes) > 1 else dtypes.pop()
        arrays = [
            v.data.astype(dtype, copy=False) if v.kind == "number" else np.zeros(len(v), dtype)
            for v in vecs
        ]
        return Vec("number", np.concatenate(arrays), valid)
    fill: Any = False if kind == "bool" else None  # bool, or object (values of mixed types)
    dtype = bool if kind == "bool" else object
    data = [v.data if v.kind == kind else np.full(len(v), fill, dtype) for v in vecs]
    return Vec(kind, np.concatenate(data), valid)


def from_rows_joined(
    batches: Sequence[Sequence[dict[str, Any]]], time_field: str, names: Iterable[str]
) -> tuple[Columns, set[str]] | None:
    """``concat`` of each batch's ``from_rows``, built in one pass over all their events (a
    commit group of small bodies: one ``from_rows`` per body cost as much as their apply)."""
    flat = [event for batch in batches for event in batch]
    cols = from_rows(flat, time_field, names)
    sizes = np.array([len(batch) for batch in batches], np.int64)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    widened: set[str] = set()
    for name, vec in cols.fields.items():
        if vec.kind == "object":
            return None  # values of several types: which batch had which is not worth finding
        if vec.kind != "number" or vec.data.dtype != np.float64 or name == time_field:
            continue  # one kind in every batch that has a value: each batch's own
        floats = np.fromiter((type(e.get(name)) is float for e in flat), bool, len(flat))
        present, real = _per_batch(vec.valid, starts, ends), _per_batch(floats, starts, ends)
        if not ((present > 0) & (real == 0)).any():
            continue  # every batch with a value had a float: float64 in each of them too
        ints = vec.data[vec.valid & ~floats]
        if (np.abs(ints) >= EXACT_INTEGERS).any():
            return None  # an integer that may not be exactly the float it became
        widened.add(name)
    return cols, widened


def _per_batch(flags: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """How many of ``flags`` are set in each batch's rows."""
    total = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    out: np.ndarray = total[ends] - total[starts]
    return out
