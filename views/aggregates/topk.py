"""top_k(x, k [, capacity]): the most frequent values, per pair a Space-Saving summary in arrays.

A pair keeps at most ``capacity`` (value code, count, error) entries. A batch is folded in as its
exact counts, summarised to ``capacity`` and merged with the pair's summary (the mergeable
Space-Saving of Cafaro et al.): counts over-estimate by at most n / capacity, and every value
occurring more than n / capacity times is kept. Exact while a pair has seen at most ``capacity``
distinct values. The merge is ``views.sketches.SpaceSaving.merge``'s, entry for entry, so states
equal the scalar summary's fed the same batches — done on the arrays (a few numpy calls per pair
and batch, the values looked up only where counts tie at the cut), in code space: ``true`` and
``1`` are two values, as everywhere in tallyd.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from views.aggregates.base import Aggregate, Batch, Buffers
from views.grouping import pack
from views.sketches import SpaceSaving, sort_key
from views.values import Values

Entries = tuple[np.ndarray, np.ndarray, np.ndarray]  # a summary: codes ascending, counts, errors


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
        self.fold_batches(batch, np.zeros(len(batch.group), np.int64))

    def fold_batches(self, batch: Batch, batch_of: np.ndarray) -> None:
        """Each batch's counts summarised and merged into its pairs, batch after batch, as
        ``fold`` of each in turn leaves them — the values coded and the entries stored once."""
        rows, values = batch.present()
        if values is None or not len(rows):
            return
        pairs = batch.pairs[batch.group[rows]]
        codes = self.dictionary.codes(values)
        which, pairs, codes = _sorted(batch_of[rows], pairs, codes)
        step = np.r_[True, (which[1:] != which[:-1]) | (pairs[1:] != pairs[:-1])]
        first = np.flatnonzero(step | np.r_[True, codes[1:] != codes[:-1]])  # each (b, p, c)
        counts = np.diff(np.r_[first, len(codes)])
        runs = np.flatnonzero(step[first])  # where each (batch, pair) begins among them
        updates: dict[int, Entries] = {}
        for lo, hi in zip(runs.tolist(), np.r_[runs[1:], len(first)].tolist(), strict=True):
            pair = int(pairs[first[lo]])
            mine = updates[pair] if pair in updates else self._entries(pair)
            theirs = self._cut(codes[first[lo:hi]], counts[lo:hi], np.zeros(hi - lo, np.int64))
            updates[pair] = self._merge(mine, theirs)
        self._store(updates)

    def _entries(self, pair: int) -> Entries:
        """A pair's stored summary: (codes ascending, counts, errors)."""
        lo, hi = np.searchsorted(self.pair, [pair, pair + 1])
        return self.code[lo:hi], self.count[lo:hi], self.error[lo:hi]

    def _merge(self, mine: Entries, theirs: Entries) -> Entries:
        """``views.sketches.SpaceSaving.merge`` on arrays, entry for entry: a value one summary
        lacks counts as that summary's floor (its least count when full, else 0), and the
        ``capacity`` entries ranked highest are kept. A few numpy calls whatever the summary's
        size: the scalar merge sorted all of a full summary's values for every batch, which a
        steady stream of one-event bodies paid per body (benchmarks/README.md)."""
        if not len(mine[0]):
            return theirs  # each of its values counts 0 more, nothing over the capacity
        (have, counts, errors), (codes, more, more_errors) = mine, theirs
        floor, their_floor = (
            int(entries[1].min()) if len(entries[0]) >= self.capacity else 0
            for entries in (mine, theirs)
        )
        at = np.searchsorted(have, codes)
        found = have[np.minimum(at, len(have) - 1)] == codes
        count = counts + their_floor  # a value ``theirs`` lacks: its floor
        error = errors + their_floor
        count[at[found]] += more[found] - their_floor
        error[at[found]] += more_errors[found] - their_floor
        new = ~found
        if new.any():  # a value ``mine`` lacks: its floor, placed in code order
            slots = at[new] + np.arange(np.count_nonzero(new))
            old = np.ones(len(have) + len(slots), bool)
            old[slots] = False
            merged = []
            for before, added in (
                (have, codes[new]),
                (count, more[new] + floor),
                (error, more_errors[new] + floor),
            ):
                out = np.empty(len(old), np.int64)
                out[old], out[slots] = before, added
                merged.append(out)
            codes, count, error = merged
        else:
            codes = have
        return self._cut(codes, count, error)

    def _cut(
        self, codes: np.ndarray, counts: np.ndarray, errors: np.ndarray, limit: int = 0
    ) -> Entries:
        """The ``limit`` (default: ``capacity``) entries ranked highest — by count, ties by
        the value's ``sort_key``, as the scalar summary sorts them — in their order."""
        limit = limit or self.capacity
        extra = len(codes) - limit
        if extra <= 0:
            return codes, counts, errors
        least = np.partition(counts, extra)[extra]  # the limit-th highest count
        kept = counts > least
        tied = np.flatnonzero(counts == least)
        room = limit - int(np.count_nonzero(kept))
        if room < len(tied):  # only the values tied at the cut are looked up and ranked
            tied = tied[_by_value(self.dictionary.lookup(codes[tied]))[:room]]
        kept[tied] = True
        return codes[kept], counts[kept], errors[kept]

    def summary(self, pair: int) -> SpaceSaving:
        """The scalar summary of one pair, for tests (a dict: ``true`` and ``1`` one key)."""
        lo, hi = np.searchsorted(self.pair, [pair, pair + 1])
        values = self.dictionary.lookup(self.code[lo:hi])
        sketch = SpaceSaving(self.capacity)
        sketch.counts = dict(zip(values, self.count[lo:hi].tolist(), strict=True))
        sketch.errors = dict(zip(values, self.error[lo:hi].tolist(), strict=True))
        sketch._rebuild_heap()
        return sketch

    def _store(self, updates: dict[int, Entries]) -> None:
        """Replace the entries of the updated pairs with their new summaries."""
        keep = ~np.isin(self.pair, np.fromiter(updates, np.int64, len(updates)))
        parts = [(self.pair[keep], self.code[keep], self.count[keep], self.error[keep])]
        for pair, (codes, counts, errors) in updates.items():
            parts.append((np.full(len(codes), pair, np.int64), codes, counts, errors))
        merged = [np.concatenate(column) for column in zip(*parts, strict=True)]
        order = np.lexsort((merged[1], merged[0]))
        self.pair, self.code, self.count, self.error = (column[order] for column in merged)

    def absorb(self, other: Aggregate, ids: np.ndarray, rows: np.ndarray) -> None:
        """Merged pair by pair, in order: Space-Saving's merge is what the scalar one does."""
        assert isinstance(other, TopK)
        updates: dict[int, Entries] = {}
        for pair, row in zip(ids.tolist(), rows.tolist(), strict=True):
            mine = updates[row] if row in updates else self._entries(row)
            updates[row] = self._merge(mine, self._recoded(other, pair))
        self._store(updates)

    def _recoded(self, other: TopK, pair: int) -> Entries:
        """``other``'s summary of ``pair`` in this aggregate's codes (its own when they share
        their values, as a view's parts do)."""
        codes, counts, errors = other._entries(pair)
        if other.dictionary is self.dictionary:
            return codes, counts, errors
        values = other.dictionary.lookup(codes)
        mine = np.array([self.dictionary.code(v) for v in values], np.int64)
        order = np.argsort(mine, kind="stable")
        return mine[order], counts[order], errors[order]

    def results(self, ids: np.ndarray) -> list[Any]:
        return [self._top(pair) for pair in ids.tolist()]

    def _top(self, pair: int) -> list[dict[str, Any]]:
        """``SpaceSaving.top(k)`` of the pair, from its arrays: a value per code (``true`` and
        ``1`` are two values; a summary's dict would take them for one key)."""
        codes, counts, _ = self._cut(*self._entries(pair), limit=self.k)
        ranked = sorted(
            zip(self.dictionary.lookup(codes), counts.tolist(), strict=True),
            key=lambda item: (-item[1], sort_key(item[0])),
        )
        return [{"value": value, "count": count} for value, count in ranked]

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


def _by_value(values: list[Any]) -> np.ndarray:
    """The positions of ``values`` (distinct) in ``sort_key``'s order. Strings are sorted by
    Arrow (UTF-8's byte order is the code points', Python's), integers by numpy: the values
    tied at a full summary's cut are often most of it (user ids, each seen once or twice), and
    ranking them one ``sort_key`` call each cost ~4 ms a merge. Anything else by ``sort_key``
    (no string here is one UTF-8 cannot hold: string columns are Arrow's, and JSON's readers
    refuse a lone surrogate)."""
    try:  # Arrow refuses anything but a string at once: cheaper than checking each first
        strings = pa.array(values, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    else:
        return np.asarray(pc.sort_indices(strings), np.int64)
    if all(type(value) is int for value in values):  # not bools: sort_key ranks them apart
        try:
            return np.argsort(np.array(values, np.int64), kind="stable")
        except OverflowError:  # from 2**63 (JSON's unsigned 64-bit integers)
            pass
    return np.array(sorted(range(len(values)), key=lambda i: sort_key(values[i])), np.int64)


def _sorted(*keys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Non-negative int64 columns sorted together, by the first, then the next...: their packed
    code (``views.grouping.pack``) sorted and taken apart again where it fits — one sort of one
    column, ~3x cheaper than ``np.lexsort`` of three for a 50,000-row batch — else
    ``np.lexsort``."""
    packed = pack(list(keys))
    if packed is None:
        order = np.lexsort(keys[::-1])
        return tuple(key[order] for key in keys)
    packed.sort()
    out = []
    for key in keys[:0:-1]:  # the last key is the lowest digit
        width = int(key.max(initial=0)) + 1
        out.append(packed % width)
        packed = packed // width
    return (packed, *out[::-1])
