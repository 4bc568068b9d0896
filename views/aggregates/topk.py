"""top_k(x, k [, capacity]): the most frequent values, per pair a Space-Saving summary in arrays.

A pair keeps at most ``capacity`` (value code, count, error) entries. A batch is folded in as its
exact counts, summarised to ``capacity`` and merged with the pair's summary (the mergeable
Space-Saving of Cafaro et al.): counts over-estimate by at most n / capacity, and every value
occurring more than n / capacity times is kept. Exact while a pair has seen at most ``capacity``
distinct values. The merge is ``views.sketches.SpaceSaving.merge``'s, entry for entry, so states
equal the scalar summary's fed the same batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from views.aggregates.base import Aggregate, Batch, Buffers
from views.sketches import SpaceSaving, sort_key
from views.values import Values


class TopK(Aggregate):
    kind = "top_k"
    sql_names = ("top_k",)
    sql_arity = (2, 3)
    sql_usage = "top_k(x, k)"
    result_type = "array"
    interned = True
    any_batching = False  # each batch's counts are summarised to ``capacity`` before the merge

    def __init__(self, values: Values | None = None, **params: Any) -> None:
        super().__init__(values if values is not None else Values(), **params)
        self.k, self.capacity = int(params["k"]), int(params["capacity"])
        self.pair = np.zeros(0, np.int64)  # entries sorted by pair, then code
        self.code = np.zeros(0, np.int64)
        self.count = np.zeros(0, np.int64)
        self.error = np.zeros(0, np.int64)

    @property
    def dictionary(self) -> Values:
        assert self.values is not None
        return self.values

    @classmethod
    def sql_params(cls, numbers: list[float]) -> dict[str, Any]:
        k = numbers[0]
        capacity = numbers[1] if len(numbers) == 2 else 100 * k  # k >= 1, checked below
        if k != int(k) or not 1 <= k <= 1000:
            raise ValueError("k must be a whole number from 1 to 1000")
        if capacity != int(capacity) or not k <= capacity <= 100_000:
            raise ValueError("capacity must be a whole number from k to 100000")
        return {"k": int(k), "capacity": int(capacity)}

    def resize(self, size: int) -> None:
        self.size = max(self.size, size)

    def fold(self, batch: Batch) -> None:
        rows, values = batch.present()
        if values is None or not len(rows):
            return
        pairs = batch.pairs[batch.group[rows]]
        codes = self.dictionary.codes(values)
        packed = np.unique((pairs << 32) | codes, return_counts=True)
        keys, counts = packed
        batch_pairs, batch_codes = keys >> 32, keys & 0xFFFFFFFF
        starts = np.flatnonzero(np.r_[True, batch_pairs[1:] != batch_pairs[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        updates = {}
        for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
            pair = int(batch_pairs[lo])
            summary = self._summary(batch_codes[lo:hi], counts[lo:hi])
            mine = self.summary(pair)
            mine.merge(summary)
            updates[pair] = mine
        self._store(updates)

    def fold_batches(self, batch: Batch, batch_of: np.ndarray) -> None:
        """Each batch's counts summarised and merged into its pairs, batch after batch, as
        ``fold`` of each in turn leaves them — the values coded and the entries stored once."""
        rows, values = batch.present()
        if values is None or not len(rows):
            return
        pairs = batch.pairs[batch.group[rows]]
        codes = self.dictionary.codes(values)
        which = batch_of[rows]
        order = np.lexsort((codes, pairs, which))
        which, pairs, codes = which[order], pairs[order], codes[order]
        step = np.r_[True, (which[1:] != which[:-1]) | (pairs[1:] != pairs[:-1])]
        first = np.flatnonzero(step | np.r_[True, codes[1:] != codes[:-1]])  # each (b, p, c)
        counts = np.diff(np.r_[first, len(codes)])
        runs = np.flatnonzero(step[first])  # where each (batch, pair) begins among them
        updates: dict[int, SpaceSaving] = {}
        for lo, hi in zip(runs.tolist(), np.r_[runs[1:], len(first)].tolist(), strict=True):
            pair = int(pairs[first[lo]])
            mine = updates[pair] if pair in updates else self.summary(pair)
            mine.merge(self._summary(codes[first[lo:hi]], counts[lo:hi]))
            updates[pair] = mine
        self._store(updates)

    def _summary(self, codes: np.ndarray, counts: np.ndarray) -> SpaceSaving:
        """A batch's exact counts, cut to the capacity (highest first, ties by value)."""
        values = self.dictionary.lookup(codes)
        ranked = sorted(zip(values, counts.tolist(), strict=True), key=_rank)[: self.capacity]
        return SpaceSaving.from_counts(self.capacity, dict(ranked))

    def summary(self, pair: int) -> SpaceSaving:
        """The scalar summary of one pair (merges, answers, tests)."""
        lo, hi = np.searchsorted(self.pair, [pair, pair + 1])
        values = self.dictionary.lookup(self.code[lo:hi])
        sketch = SpaceSaving(self.capacity)
        sketch.counts = dict(zip(values, self.count[lo:hi].tolist(), strict=True))
        sketch.errors = dict(zip(values, self.error[lo:hi].tolist(), strict=True))
        sketch._rebuild_heap()
        return sketch

    def _store(self, updates: dict[int, SpaceSaving]) -> None:
        """Replace the entries of the updated pairs with their new summaries."""
        keep = ~np.isin(self.pair, np.fromiter(updates, np.int64, len(updates)))
        parts = [(self.pair[keep], self.code[keep], self.count[keep], self.error[keep])]
        for pair, sketch in updates.items():
            items = list(sketch.counts.items())
            codes = np.array([self.dictionary.code(v) for v, _ in items], np.int64)
            parts.append(
                (
                    np.full(len(items), pair, np.int64),
                    codes,
                    np.array([n for _, n in items], np.int64),
                    np.array([sketch.errors[v] for v, _ in items], np.int64),
                )
            )
        merged = [np.concatenate(column) for column in zip(*parts, strict=True)]
        order = np.lexsort((merged[1], merged[0]))
        self.pair, self.code, self.count, self.error = (column[order] for column in merged)

    def absorb(self, other: Aggregate, ids: np.ndarray, rows: np.ndarray) -> None:
        """Merged pair by pair, in order: Space-Saving's merge is what the scalar one does."""
        assert isinstance(other, TopK)
        updates: dict[int, SpaceSaving] = {}
        for pair, row in zip(ids.tolist(), rows.tolist(), strict=True):
            mine = updates.get(row) or self.summary(row)
            mine.merge(other.summary(pair))
            updates[row] = mine
        self._store(updates)

    def results(self, ids: np.ndarray) -> list[Any]:
        return [self.summary(pair).top(self.k) for pair in ids.tolist()]

    def take(self, keep: np.ndarray) -> None:
        renumber = np.full(self.size, -1, np.int64)
        renumber[keep] = np.arange(len(keep))
        new = renumber[self.pair]
        alive = new >= 0
        order = np.lexsort((self.code[alive], new[alive]))
        self.pair = new[alive][order]
        self.code, self.count, self.error = (
            a[alive][order] for a in (self.code, self.count, self.error)
        )
        self.size = len(keep)

    def buffers(self) -> Buffers:
        used, local = np.unique(self.code, return_inverse=True)
        return {
            "pair": self.pair,
            "code": local.astype(np.int64),
            "count": self.count,
            "error": self.error,
            "values": self.dictionary.lookup(used),
            "size": self.size,
        }

    def load(self, buffers: Buffers) -> None:
        codes = np.array([self.dictionary.code(v) for v in buffers["values"]] or [0], np.int64)
        pair = np.array(buffers["pair"], np.int64)
        code = codes[np.array(buffers["code"], np.int64)]
        order = np.lexsort((code, pair))
        self.pair, self.code = pair[order], code[order]
        self.count = np.array(buffers["count"], np.int64)[order]
        self.error = np.array(buffers["error"], np.int64)[order]
        self.size = int(buffers["size"])


def _rank(item: tuple[Any, int]) -> tuple[int, tuple[int, Any]]:
    return (-item[1], sort_key(item[0]))
