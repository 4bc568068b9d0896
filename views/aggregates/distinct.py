"""count_distinct(x) (exact: every value with its multiplicity, removable) and
approx_count_distinct(x) (HyperLogLog: exact below 256 values, 16 KiB of registers beyond).

The exact count keeps each pair's values as codes in the view's shared ``Values`` dictionary, in a
``Multiset`` (so a change stream can forget one). The sketch keeps, per pair, up to 256 64-bit
hashes (``views.hashing``: a fixed hash, so registers in snapshots stay meaningful), then a row of
16,384 registers — the scalar ``views.sketches.HyperLogLog``'s states exactly, in arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from views.aggregates.base import Aggregate, Batch, Buffers
from views.aggregates.multiset import Exact, Multiset
from views.batch import Vec
from views.grouping import distinct
from views.hashing import hash_bools, hash_floats, hash_ints, hash_strings, hash_value
from views.sketches import HyperLogLog, _ertl_estimate
from views.values import Values

_Q = np.uint64(HyperLogLog.Q)
_LOW = np.uint64((1 << HyperLogLog.Q) - 1)


class CountDistinct(Exact):
    kind = "count_distinct"
    sql_names = ("count_distinct",)
    sql_usage = "count_distinct(x), count(DISTINCT x)"
    result_type = "int"
    removable = True
    interned = True
    recent = 4096  # entries a settle leaves beside the main ones (``Multiset``)

    def __init__(self, values: Values | None = None, **params: Any) -> None:
        super().__init__(values if values is not None else Values(), **params)
        self.set = Multiset(self.recent)

    @property
    def dictionary(self) -> Values:
        assert self.values is not None
        return self.values

    def keys(self, values: Vec) -> np.ndarray:
        return self.dictionary.codes(values)

    def absorb(self, other: Aggregate, ids: np.ndarray, rows: np.ndarray) -> None:
        assert isinstance(other, CountDistinct)
        gathered = other.set.gathered(ids, rows)
        if other.values is not self.values:  # another dictionary (another view's state)
            values = other.dictionary.lookup(gathered.key)
            gathered.key = np.array([self.dictionary.code(v) for v in values], np.int64)
        self.set.absorb(gathered)

    def results(self, ids: np.ndarray) -> list[Any]:
        out: list[Any] = self.set.sizes(ids).tolist()
        return out

    def buffers(self) -> Buffers:
        pair, key, count = self.set.arrays()
        used, local = np.unique(key, return_inverse=True)
        return {
            "pair": pair,
            "key": local.astype(np.int64),
            "count": count,
            "values": self.dictionary.lookup(used),  # the values themselves: codes are local
            "size": self.size,
        }

    def load(self, buffers: Buffers) -> None:
        codes = np.array([self.dictionary.code(v) for v in buffers["values"]] or [0], np.int64)
        pair = np.array(buffers["pair"], np.int64)
        key = codes[np.array(buffers["key"], np.int64)]
        order = np.lexsort((key, pair))
        self.set = Multiset(self.recent)
        self.set.pair, self.set.key = pair[order], key[order]
        self.set.count = np.array(buffers["count"], np.int64)[order]
        self.size = int(buffers["size"])


def hashes(column: Vec) -> np.ndarray:
    """tallyd's value hash (``views.hashing``) of every valid value, as uint64."""
    valid = np.flatnonzero(column.valid)
    if column.kind == "string":  # each distinct string hashed once
        index, dictionary = column.encoded()
        out: np.ndarray = hash_strings(dictionary)[index[valid]]
        return out
    data = column.data[valid]
    if column.kind == "bool":
        return hash_bools(data)
    if column.kind == "object":
        return np.array([hash_value(v) for v in data.tolist()], np.uint64)
    return hash_ints(data) if data.dtype.kind in "iu" else hash_floats(data)


class ApproxCountDistinct(Aggregate):
    kind = "approx_count_distinct"
    sql_names = ("approx_count_distinct",)
    sql_usage = "approx_count_distinct(x)"
    result_type = "int"
    recent = 4096  # hashes a settle leaves beside the main ones (``Multiset``)

    def __init__(self, values: Any = None, **params: Any) -> None:
        super().__init__(values, **params)
        self.sparse = Multiset(self.recent)  # (pair, hash as int64) of pairs still exact
        self.dense = np.zeros(0, np.int64)  # per pair: its register row, -1 while sparse
        self.registers = np.zeros((0, HyperLogLog.M), np.uint8)

    def resize(self, size: int) -> None:
        if len(self.dense) < size:
            more = max(size, len(self.dense) + len(self.dense) // 2, 16) - len(self.dense)
            self.dense = np.concatenate([self.dense, np.full(more, -1, np.int64)])
        self.size = max(self.size, size)

    def fold(self, batch: Batch) -> None:
        rows, values = batch.present()
        if values is None or not len(rows):
            return
        self._insert(batch.pairs[batch.group[rows]], hashes(values))

    def settle(self) -> None:
        self.sparse.settle()

    def _insert(self, pairs: np.ndarray, h: np.ndarray) -> None:
        dense = self.dense[pairs] >= 0
        if dense.any():
            self._raise(self.dense[pairs[dense]], h[dense])
        if not dense.all():
            sparse = ~dense
            self.sparse.add(
                pairs[sparse], h[sparse].view(np.int64), np.ones(int(sparse.sum()), np.int64)
            )
            self._densify(distinct(pairs[sparse]))

    def _raise(self, rows: np.ndarray, h: np.ndarray) -> None:
        index = (h >> _Q).astype(np.intp)
        rest = (h & _LOW).astype(np.float64)  # < 2**50: exact
        rank = (HyperLogLog.Q + 1 - np.frexp(rest)[1]).astype(np.uint8)
        np.maximum.at(self.registers, (rows, index), rank)

    def _densify(self, pairs: np.ndarray) -> None:
        """Pairs among ``pairs`` past ``SPARSE_MAX`` hashes get a register row each, raised by
        every hash they hold, and their hashes leave the sparse multiset."""
        over = pairs[self.sparse.sizes(pairs) > HyperLogLog.SPARSE_MAX]
        if len(over):
            self._make_dense(over)

    def _make_dense(self, pairs: np.ndarray) -> None:
        """A register row for each of ``pairs`` (distinct, sparse), raised by their hashes."""
        first = len(self.registers)
        self.registers = np.vstack(
            [self.registers, np.zeros((len(pairs), HyperLogLog.M), np.uint8)]
        )
        self.dense[pairs] = first + np.arange(len(pairs))
        held = self.sparse.gathered(pairs, np.arange(len(pairs)))
        of, keys, counts = held.pair, held.key, held.count
        if len(of):
            self._raise(first + of, keys.view(np.uint64))
            self.sparse.add(pairs[of], keys, -counts)  # taken off: none left of these pairs

    def absorb(self, other: Aggregate, ids: np.ndarray, rows: np.ndarray) -> None:
        assert isinstance(other, ApproxCountDistinct)
        theirs = other.dense[ids]
        for j in np.flatnonzero(theirs >= 0).tolist():  # dense into dense: register maxima
            row = int(rows[j])
            if self.dense[row] < 0:
                self._make_dense(np.array([row]))
            mine = self.registers[self.dense[row]]
            np.maximum(mine, other.registers[theirs[j]], out=mine)
        sparse = np.flatnonzero(theirs < 0)
        if len(sparse):
            gathered = other.sparse.gathered(ids[sparse], rows[sparse])
            self._insert(gathered.pair, gathered.key.view(np.uint64))

    def sketch(self, pair: int) -> HyperLogLog:
        """The scalar sketch of one pair (tests compare states)."""
        sketch = HyperLogLog()
        if self.dense[pair] >= 0:
            sketch.sparse, sketch.dense = (
                None,
                bytearray(self.registers[self.dense[pair]].tobytes()),
            )
        else:
            held = self.sparse.gathered(np.array([pair]), np.array([0]))
            sketch.sparse = set(held.key.view(np.uint64).tolist())
        return sketch

    def results(self, ids: np.ndarray) -> list[Any]:
        sizes = self.sparse.sizes(ids)
        out: list[Any] = []
        for pair, size in zip(ids.tolist(), sizes.tolist(), strict=True):
            row = int(self.dense[pair])
            if row < 0:
                out.append(size)
            else:
                registers = bytearray(self.registers[row].tobytes())
                out.append(round(_ertl_estimate(registers, HyperLogLog.M, HyperLogLog.Q)))
        return out

    def take(self, keep: np.ndarray) -> None:
        self.sparse.take(keep, self.size)
        rows = self.dense[keep]
        used = rows[rows >= 0]
        renumber = np.full(len(self.registers) + 1, -1, np.int64)  # +1: index 0 when none
        renumber[used] = np.arange(len(used))
        self.registers = self.registers[used]
        self.dense = np.where(rows >= 0, renumber[np.maximum(rows, 0)], -1)
        self.size = len(keep)

    def buffers(self) -> Buffers:
        pair, key, _ = self.sparse.arrays()
        return {
            "pair": pair,
            "hash": key,
            "dense": self.dense[: self.size],
            "registers": self.registers,
        }

    def load(self, buffers: Buffers) -> None:
        self.sparse = Multiset(self.recent)
        self.sparse.pair = np.array(buffers["pair"], np.int64)
        self.sparse.key = np.array(buffers["hash"], np.int64)
        self.sparse.count = np.ones(len(self.sparse.pair), np.int64)
        self.dense = np.array(buffers["dense"], np.int64)
        self.registers = np.array(buffers["registers"], np.uint8).reshape(-1, HyperLogLog.M)
        self.size = len(self.dense)
