"""Values <-> dense integer codes, for the aggregates that keep values themselves (exact distinct
counts, top-k): their state holds codes in int64 arrays, and one ``Values`` per view aggregate
holds each distinct value once, shared by every partition (a code means the same everywhere).

Equal SQL values get one code: ``1``, ``1.0`` and ``-0.0 + 1`` are one number, ``0.0`` and
``-0.0`` one zero; ``"1"`` is a string and ``true`` a boolean, never the number 1. A column is
coded at C speed where it can be: Arrow dictionary-encodes a string column, numpy finds a number
column's distinct values; only the batch's *distinct* values are looked up here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from views.batch import Vec


def canonical(value: Any) -> Any:
    """The one representative of a value's SQL class (whole floats as ints, -0.0 as 0)."""
    if isinstance(value, float) and value.is_integer() and -(2**63) <= value < 2**63:
        return int(value)
    return value


class Values:
    def __init__(self) -> None:
        self.values: list[Any] = []  # code -> value
        # One dict per kind: in Python True == 1, so a bool must never find a number's code.
        self.numbers: dict[Any, int] = {}
        self.strings: dict[str, int] = {}
        self.bools: dict[bool, int] = {}

    def __len__(self) -> int:
        return len(self.values)

    def _table(self, value: Any) -> dict[Any, int]:
        if isinstance(value, bool):
            return self.bools
        if isinstance(value, str):
            return self.strings
        return self.numbers

    def code(self, value: Any) -> int:
        value = canonical(value)
        table = self._table(value)
        found = table.get(value)
        if found is None:
            found = table[value] = len(self.values)
            self.values.append(value)
        return found

    def codes(self, column: Vec) -> np.ndarray:
        """The code of every value of ``column`` (-1 for NULL), interning new values."""
        out = np.full(len(column), -1, np.int64)
        if column.kind == "null":
            return out
        valid = column.valid
        if column.kind == "string":
            index, dictionary = column.encoded()
            table = np.array(self._string_codes(dictionary.to_pylist()) or [0], np.int64)
            out[valid] = table[index[valid]]
            return out
        if column.kind == "object":
            for i in np.flatnonzero(valid).tolist():
                out[i] = self.code(column.data[i])
            return out
        data = column.data[valid]
        if column.kind == "number" and data.dtype.kind == "f":
            data = data + 0.0  # -0.0 + 0.0 is 0.0: one zero
        distinct, inverse = np.unique(data, return_inverse=True)
        table = np.array([self.code(v) for v in distinct.tolist()] or [0], np.int64)
        out[valid] = table[inverse]
        return out

    def _string_codes(self, strings: list[str]) -> list[int]:
        """``code`` of each string: one dict lookup each (a batch's distinct strings are mostly
        known), interning only those that are not."""
        found: list[int | None] = list(map(self.strings.get, strings))
        return [self.code(s) if c is None else c for s, c in zip(strings, found, strict=True)]

    def lookup(self, codes: np.ndarray) -> list[Any]:
        values = self.values
        return [values[c] for c in codes.tolist()]

    def column(self, codes: np.ndarray) -> pa.Array:
        """The values of ``codes`` as an Arrow array when they share a type (else a list)."""
        return pa.array(self.lookup(codes))
