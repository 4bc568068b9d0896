"""Exact multisets of values per pair, in arrays: the state of exact distinct counts and of the
removable min / max / percentiles that change streams use.

Entries are (pair, key, count), sorted by pair then key, so a pair's values are one contiguous,
sorted run: its smallest is the run's first key, its largest the last, its q-quantile found by a
cumulative count. A key is an int64 that orders like the value: a value's code in the view's
``Values`` (distinct counts: no order needed), or a float's order-preserving bits (min / max /
percentiles). A batch is sorted alone, then each of its (pair, key)s is found among the entries
by a binary search inside its pair's run: a merge moves the entries after the first place one
lands at (``views.growing``; none, for a new bucket's pairs, numbered last), never a sort. The
values of a distinct count land anywhere among long-lived pairs (a shop's users, all time; the
products of each of a million users): its batches go to a small multiset of recent entries
first, merged into the main ones now and then.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from views.aggregates.base import Aggregate, Batch, Buffers
from views.batch import Vec
from views.grouping import group, pack_pair
from views.growing import Growing

_FLIP = np.int64(0x7FFFFFFFFFFFFFFF)


def float_keys(values: np.ndarray) -> np.ndarray:
    """int64 keys ordering like the floats (-0.0 is 0.0): negative floats' bits are flipped."""
    bits = (np.asarray(values, np.float64) + 0.0).view(np.int64)
    return np.where(bits < 0, bits ^ _FLIP, bits)


def key_floats(keys: np.ndarray) -> np.ndarray:
    bits = np.where(keys < 0, keys ^ _FLIP, keys)
    out: np.ndarray = bits.view(np.float64)
    return out


class _Entries:
    """One of a ``Multiset``'s entry arrays (``pair``, ``key``, ``count``): read, it is merged
    with the queued adds first (and with the recent entries, into a copy); replaced, nothing may
    be queued (read it, then replace it)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.index = ("pair", "key", "count").index(name)

    def __get__(self, multiset: Multiset, owner: type | None = None) -> np.ndarray:
        return multiset.arrays()[self.index]

    def __set__(self, multiset: Multiset, value: np.ndarray) -> None:
        assert not multiset._queued, "read (settle) before replacing entries"
        multiset.fold()
        multiset._levels[self.index].set(value)


class Multiset:
    """Adds are queued and merged in at the next read (``settle``): a batch that adds and then
    takes off — a change stream's — is merged once, not per call. Every read of ``pair``,
    ``key``, ``count`` sees the merged entries. Whatever holds a multiset
    settles it at the end of a view's apply (``Aggregate.settle``), so a read outside an apply
    — a query on the loop, a snapshot's encoding in a worker thread — never merges, only reads.

    With ``recent`` (an exact distinct count's values, a HyperLogLog's sparse hashes), a settle
    merges the adds into a second, small multiset of recent entries (their counts added to the
    main entries': negative takes off), and those into the main entries only once they
    outnumber ``recent`` and a 64th of them. A merge into the main entries moves every entry
    after the first place an add lands at — nearly all of them when the adds land among
    long-lived pairs (a shop's users, all time; a million users' products): one merge per
    ``settle``, a server of small bodies paid O(state) for each commit group (~15-25 ms at 1-2M
    entries). The recent ones are read with the main ones where a question is asked (``have``,
    ``sizes``, ``gathered``) and merged into a copy for the whole arrays (a snapshot's), never
    in place outside a ``settle``."""

    pair = _Entries()
    key = _Entries()
    count = _Entries()

    def __init__(self, recent: int = 0) -> None:
        self._pair = Growing(np.zeros(0, np.int64))
        self._key = Growing(np.zeros(0, np.int64))
        self._count = Growing(np.zeros(0, np.int64))
        self._levels = (self._pair, self._key, self._count)
        self._queued: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._bound = recent
        self._recent = Multiset() if recent else None

    def __len__(self) -> int:
        return len(self.pair)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The entries (pair, key, count), the recent ones merged in: the main arrays themselves
        when none is recent, else a merged copy (the main entries stay as they are)."""
        self.settle()
        main = (self._pair.array, self._key.array, self._count.array)
        if not self._recent_entries():
            return main
        return self._merge(*self._recent_arrays(), in_place=False)

    def _recent_entries(self) -> int:
        return len(self._recent._key) if self._recent is not None else 0

    def _recent_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self._recent is not None
        return self._recent._pair.array, self._recent._key.array, self._recent._count.array

    def runs(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) of each pair's run of entries (in ``pair``, ``key``, ``count``)."""
        pair = self.pair
        return np.searchsorted(pair, ids, "left"), np.searchsorted(pair, ids, "right")

    def _runs(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) of each pair's run of the main entries."""
        pair = self._pair.array
        return np.searchsorted(pair, ids, "left"), np.searchsorted(pair, ids, "right")

    def have(self, pairs: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """How many of each (pair, key) there are now (0 if none)."""
        self.settle()
        out = self._have(pairs, keys)
        if self._recent_entries():
            assert self._recent is not None
            out += self._recent.have(pairs, keys)
        return out

    def _have(self, pairs: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """How many of each (pair, key) the main entries hold."""
        out = np.zeros(len(pairs), np.int64)
        at, same = self._find(pairs, keys)
        out[same] = self._count.array[at[same]]
        return out

    def sizes(self, ids: np.ndarray) -> np.ndarray:
        """How many entries each pair has (distinct keys held): its run's length, and of its
        recent entries (none at 0), one more for each key the main entries lack, one fewer for
        each they bring to 0."""
        self.settle()
        start, end = self._runs(ids)
        out: np.ndarray = end - start
        if self._recent_entries():
            assert self._recent is not None
            of, index = _members(*self._recent._runs(ids))
            pairs, keys, counts = (a[index] for a in self._recent_arrays())
            held = self._have(pairs, keys)
            change = (held == 0).astype(np.int64) - ((held != 0) & (held + counts == 0))
            out += np.bincount(of, weights=change, minlength=len(ids)).astype(np.int64)
        return out

    def _find(self, pairs: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(where each (pair, key) is or would go in the main entries, whether it is there): a
        binary search for each key inside its pair's run of entries (sorted by key), every
        question at once — a step per halving of the longest run, each over the questions
        only: the entries are never sorted or copied, however many a pair holds."""
        pair, key = self._pair.array, self._key.array
        low, high = self._runs(pairs)
        last = len(key) - 1
        if last < 0:
            return low, np.zeros(len(pairs), bool)
        while (searching := low < high).any():
            mid = (low + high) // 2
            below = searching & (key[np.minimum(mid, last)] < keys)
            low = np.where(below, mid + 1, low)
            high = np.where(searching & ~below, mid, high)
        at = np.minimum(low, last)  # the run's first entry with a key >= the question's
        return low, (low <= last) & (pair[at] == pairs) & (key[at] == keys)

    def add(self, pairs: np.ndarray, keys: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts`` (negative: take off) of each (pair, key); entries that reach 0 go.
        Queued until the next read: the sum of the adds is what adding them in turn leaves."""
        if len(pairs):
            self._queued.append((pairs, keys, counts))

    def settle(self) -> None:
        """Merge the queued adds in: summed per (pair, key) among themselves (sorted: only the
        adds), then into the main entries (``_merge``) — or, with ``recent``, into the recent
        ones, and those into the main ones once there are more than ``recent`` and a 64th of
        the main ones: each entry moved O(64) times on average, not once per settle."""
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        if self._recent is not None:
            self._recent._queued += queued
            self._recent.settle()
            if self._recent_entries() > max(self._bound, len(self._key) // 64):
                self.fold()
            return
        if len(queued) == 1:
            pairs, keys, counts = queued[0]
        else:
            pairs, keys, counts = (np.concatenate(c) for c in zip(*queued, strict=True))
        self._merge(*_summed(pairs, keys, counts), in_place=True)

    def fold(self) -> None:
        """Merge the recent entries into the main ones."""
        self.settle()
        if self._recent_entries():
            self._merge(*self._recent_arrays(), in_place=True)
            self._recent = Multiset()

    def _merge(
        self, pairs: np.ndarray, keys: np.ndarray, counts: np.ndarray, in_place: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The main entries with distinct (pair, key)s added, in (pair, key) order: each found
        among the entries (``_find``), added to its entry or inserted where it goes. No entry is
        sorted again, and only those from the first place an entry is inserted at or leaves
        (its count 0) move — in place, or (not ``in_place``) in a copy, the main entries kept."""
        at, same = self._find(pairs, keys)
        count = self._count.array if in_place else self._count.array.copy()
        hit = at[same]
        count[hit] += counts[same]  # distinct (pair, key)s: distinct entries
        new = ~same  # in (pair, key) order, so their places never decrease
        places = np.concatenate([at[new], hit[count[hit] == 0]])
        if not len(places):
            return self._pair.array, self._key.array, count
        first = int(places.min())
        where = at[new] - first
        pair = np.insert(self._pair.array[first:], where, pairs[new])
        key = np.insert(self._key.array[first:], where, keys[new])
        tail = np.insert(count[first:], where, counts[new])
        keep = tail != 0
        tails = (pair[keep], key[keep], tail[keep])
        if in_place:
            for entries, values in zip(self._levels, tails, strict=True):
                entries.replace_tail(first, values)
            return self._pair.array, self._key.array, self._count.array
        heads = (self._pair.array[:first], self._key.array[:first], count[:first])
        merged = (np.concatenate([head, values]) for head, values in zip(heads, tails, strict=True))
        out_pair, out_key, out_count = merged
        return out_pair, out_key, out_count

    def take(self, keep: np.ndarray, size: int) -> None:
        """Keep the entries of pairs ``keep``, renumbered to their index in ``keep``."""
        self.fold()
        renumber = np.full(size, -1, np.int64)
        renumber[keep] = np.arange(len(keep))
        new = renumber[self.pair]
        alive = new >= 0
        order = np.argsort(new[alive], kind="stable")
        self.pair = new[alive][order]
        self.key = self.key[alive][order]
        self.count = self.count[alive][order]

    def gathered(self, ids: np.ndarray, rows: np.ndarray) -> Multiset:
        """The entries of pairs ``ids``, each moved to pair ``rows[j]`` (merged when several
        land on one row): what a rollup or a merge of partitions reads."""
        self.settle()
        out = Multiset()
        levels = [self] if not self._recent_entries() else [self, self._recent]
        for level in levels:
            assert level is not None
            of, index = _members(*level._runs(ids))
            out.add(rows[of], level._key.array[index], level._count.array[index])
        return out

    def absorb(self, other: Multiset) -> None:
        self.add(other.pair, other.key, other.count)


def _members(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries of the runs ``[start, end)``: (each one's run, its index), run after run."""
    lengths = end - start
    of = np.repeat(np.arange(len(start)), lengths)
    index = np.repeat(start - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    return of, index


def _summed(
    pair: np.ndarray, key: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries summed per (pair, key), in (pair, key) order. Codes and bins pack into one
    int64 and group without a two-key sort; 64-bit hashes are sorted on both keys."""
    packed = pack_pair(pair, key)
    if packed is not None:
        code, pair_low, key_low, width = packed
        codes, _, inverse = group(code)
        # counts are far below 2**53: exact as float64 weights
        total = np.bincount(inverse, weights=count, minlength=len(codes)).astype(np.int64)
        return codes // width + pair_low, codes % width + key_low, total
    order = np.lexsort((key, pair))
    pair, key, count = pair[order], key[order], count[order]
    first = np.ones(len(pair), bool)
    first[1:] = (pair[1:] != pair[:-1]) | (key[1:] != key[:-1])
    starts = np.flatnonzero(first)
    return pair[starts], key[starts], np.add.reduceat(count, starts)


def repeat_rank(pairs: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For each entry, how many equal (pair, key) entries come before it in the batch."""
    order = np.lexsort((keys, pairs))
    p, k = pairs[order], keys[order]
    first = np.ones(len(p), bool)
    first[1:] = (p[1:] != p[:-1]) | (k[1:] != k[:-1])
    index = np.arange(len(p))
    run_start = np.maximum.accumulate(np.where(first, index, 0))
    rank = np.empty(len(p), np.int64)
    rank[order] = index - run_start
    return rank


class Exact(Aggregate):
    """An aggregate whose state is a ``Multiset`` per pair: every value, exactly, so that a change
    stream can take one off. Subclasses say how a value becomes a key (``keys``)."""

    abstract = True
    merges_exactly = True

    def __init__(self, values: Any = None, **params: Any) -> None:
        super().__init__(values, **params)
        self.set = Multiset()

    def keys(self, values: Vec) -> np.ndarray:
        raise NotImplementedError

    def resize(self, size: int) -> None:
        self.size = max(self.size, size)

    def entries(self, batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(the rows with a value, their pairs, their values' keys)."""
        rows, values = batch.present()
        assert values is not None, "an exact multiset aggregates a value: it has an argument"
        return rows, batch.pairs[batch.group[rows]], self.keys(values)

    def fold(self, batch: Batch) -> None:
        _, pairs, keys = self.entries(batch)
        self.set.add(pairs, keys, np.full(len(pairs), -1 if batch.negate else 1, np.int64))

    def settle(self) -> None:
        self.set.settle()

    def missing(self, batch: Batch) -> np.ndarray:
        """Rows whose value the pair does not hold (as often as the batch takes it off)."""
        out = np.zeros(len(batch.group), bool)
        rows, pairs, keys = self.entries(batch)
        if len(rows):  # the n-th removal needs n of them
            out[rows] = repeat_rank(pairs, keys) >= self.set.have(pairs, keys)
        return out

    def absorb(self, other: Aggregate, ids: np.ndarray, rows: np.ndarray) -> None:
        assert isinstance(other, Exact)
        self.set.absorb(other.set.gathered(ids, rows))

    def take(self, keep: np.ndarray) -> None:
        self.set.take(keep, self.size)
        self.size = len(keep)

    def buffers(self) -> Buffers:
        return {
            "pair": self.set.pair,
            "key": self.set.key,
            "count": self.set.count,
            "size": self.size,
        }

    def load(self, buffers: Buffers) -> None:
        self.set = Multiset()
        self.set.pair = np.array(buffers["pair"], np.int64)
        self.set.key = np.array(buffers["key"], np.int64)
        self.set.count = np.array(buffers["count"], np.int64)
        self.size = int(buffers["size"])
