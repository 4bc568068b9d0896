"""Where a view's state lives: group keys interned to dense integer *slots*, and a sorted index of
the (bucket, slot) *pairs* a partition holds, each with a pair id that addresses the aggregates'
arrays (``views/aggregates/``).

``Keys`` is one per view: every partition shares its slots, so a key has the same slot in every
part and merging parts (a query, a rollup) merges by slot. A part's snapshot carries the key
tuples of the slots it uses, so a process that loads it interns them into its own ``Keys``.

``Pairs`` is one per part. A pair's *code* packs its bucket number (the window start divided by
the view's step) and its slot into one int64, bucket first, so the sorted codes are in time order
— a time range is one ``searchsorted``, retention drops a prefix — and then in slot order. Pair
ids are given out in arrival order and never move until ``compact`` (after retention dropped
many), so the aggregates' arrays grow at their end and are never shuffled by an insert.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat
from typing import Any

import numpy as np

from views.aggregates.base import whole
from views.batch import Vec
from views.grouping import group, pack
from views.growing import Growing

Key = tuple[Any, ...]


def typed(value: Any) -> tuple[str, Any]:
    """A value with its type, so True and 1 (equal in Python) stay apart."""
    return (
        type(value).__name__
        if not isinstance(value, int | float) or isinstance(value, bool)
        else "number",
        value,
    )


class Keys:
    """Group-key tuples <-> slots (dense ints, given out in arrival order), and per key column
    the slots holding each value (key filters find their slots without reading every key)."""

    def __init__(self) -> None:
        self.slot_of: dict[Key, int] = {}
        self.keys: list[Key] = []
        self.by_value: list[dict[tuple[str, Any], list[int]]] = []

    def __len__(self) -> int:
        return len(self.keys)

    def intern(self, key: Key) -> int:
        slot = self.slot_of.get(key)
        if slot is None:
            slot = self.slot_of[key] = len(self.keys)
            self.keys.append(key)
            while len(self.by_value) < len(key):
                self.by_value.append({})
            for index, value in zip(self.by_value, key, strict=False):
                index.setdefault(typed(value), []).append(slot)
        return slot

    def with_value(self, column: int, value: Any) -> list[int]:
        """Slots whose key holds ``value`` in key column ``column``."""
        if column >= len(self.by_value):
            return []
        return self.by_value[column].get(typed(value), [])

    def lookup(self, keys: Iterable[Key]) -> np.ndarray:
        """Slots of known keys, -1 for unknown ones (nothing is interned)."""
        return np.array(list(map(self.slot_of.get, keys, repeat(-1))), np.int64)


class Pairs:
    """A part's (bucket, slot) pairs: sorted codes and their pair ids, and per pair id its code
    (bucket start and slot are read back from it) and whether it is alive."""

    def __init__(self, step: int) -> None:
        self.step = step  # ms between bucket starts (window size, hop slide; 1 without window)
        # In ``Growing`` arrays: a batch's new pairs are appended (a new bucket's codes sort
        # last), retention drops a prefix of the codes, and neither copies the other pairs.
        self._codes = Growing(np.zeros(0, np.int64))  # alive pairs' codes, sorted
        self._ids = Growing(np.zeros(0, np.int64))  # the pair id of each code
        self._code_of = Growing(np.zeros(0, np.int64))  # per pair id: its code
        self._alive = Growing(np.zeros(0, bool))
        self.origin: int | None = None  # bucket number that codes count from
        self.slot_bits = 16

    @property
    def codes(self) -> np.ndarray:
        return self._codes.array

    @property
    def ids(self) -> np.ndarray:
        return self._ids.array

    @property
    def code_of(self) -> np.ndarray:
        return self._code_of.array

    @property
    def alive(self) -> np.ndarray:
        return self._alive.array

    def __len__(self) -> int:
        """Pair ids given out (alive or not): the length the aggregates' arrays need."""
        return len(self.code_of)

    @property
    def count(self) -> int:
        return len(self.codes)

    # -- codes ----------------------------------------------------------------------------------

    def _encode(self, buckets: np.ndarray, slots: np.ndarray) -> np.ndarray:
        assert self.origin is not None
        out: np.ndarray = ((buckets - self.origin) << self.slot_bits) | slots
        return out

    def starts(self, ids: np.ndarray) -> np.ndarray:
        """Bucket start (ms) of each pair id."""
        origin = self.origin or 0
        out: np.ndarray = ((self.code_of[ids] >> self.slot_bits) + origin) * self.step
        return out

    def slots(self, ids: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.code_of[ids] & ((1 << self.slot_bits) - 1)
        return out

    def first_start(self) -> int | None:
        """The bucket start (ms) of the oldest alive pair; None without one."""
        if not len(self.codes):
            return None
        return int(((int(self.codes[0]) >> self.slot_bits) + (self.origin or 0)) * self.step)

    def _fit(self, buckets: np.ndarray, slots: np.ndarray) -> None:
        """Choose ``origin`` and ``slot_bits`` so that every code fits an int64 and stays in
        (bucket, slot) order; re-encode the existing codes when they change (rare)."""
        low = int(buckets.min()) if len(buckets) else 0
        origin = low if self.origin is None else min(self.origin, low)
        bits = max(self.slot_bits, int(slots.max(initial=0)).bit_length() + 1)
        if origin == self.origin and bits == self.slot_bits:
            # Same packing: the new buckets must still fit above the origin (a bucket far past
            # the first one, with fine windows, would wrap its int64 code round silently).
            _fits(int(buckets.max(initial=low)) - origin, bits)
            return
        every = np.arange(len(self.code_of))
        old_buckets = self.starts(every) // self.step
        old_slots = self.slots(every)
        _fits(int(max(buckets.max(initial=low), old_buckets.max(initial=low)) - origin), bits)
        self.origin, self.slot_bits = origin, bits
        # The packing is monotone in (bucket, slot) whatever the origin and width, so the order
        # of the sorted codes is kept: only their values change.
        self._code_of.set(self._encode(old_buckets, old_slots))
        self._codes.set(self.code_of[self.ids])

    # -- writes ---------------------------------------------------------------------------------

    def find_or_add(self, starts: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, int]:
        """Pair ids of distinct (start, slot) pairs, adding the new ones; returns the ids and
        how many pairs are new (their ids are the last ones given out)."""
        buckets = starts // self.step
        self._fit(buckets, slots)
        codes = self._encode(buckets, slots)
        at = np.searchsorted(self.codes, codes)
        found = np.zeros(len(codes), bool)
        inside = at < len(self.codes)
        found[inside] = self.codes[at[inside]] == codes[inside]
        out = np.empty(len(codes), np.int64)
        out[found] = self.ids[at[found]]
        new = np.flatnonzero(~found)
        if len(new):
            first = len(self.code_of)
            fresh = np.arange(first, first + len(new), dtype=np.int64)
            out[new] = fresh
            self._code_of.append(codes[new])
            self._alive.append(np.ones(len(new), bool))
            self._insert(codes[new], fresh)
        return out, len(new)

    def find(self, starts: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Pair ids of (start, slot) pairs, -1 for those the part does not hold."""
        out = np.full(len(starts), -1, np.int64)
        if self.origin is None or not len(self.codes):
            return out
        buckets = starts // self.step
        fits = (buckets >= self.origin) & (slots >= 0) & (slots < (1 << self.slot_bits))
        codes = self._encode(buckets[fits], slots[fits])
        at = np.minimum(np.searchsorted(self.codes, codes), len(self.codes) - 1)
        hit = self.codes[at] == codes
        found = np.full(len(codes), -1, np.int64)
        found[hit] = self.ids[at[hit]]
        out[fits] = found
        return out

    def _insert(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Add new codes to the sorted index: only the codes after the first place one lands
        at move (none, for a new bucket's: they sort last)."""
        order = np.argsort(codes, kind="stable")
        codes, ids = codes[order], ids[order]
        at = np.searchsorted(self.codes, codes)
        first = int(at[0])
        self._codes.replace_tail(first, np.insert(self.codes[first:], at - first, codes))
        self._ids.replace_tail(first, np.insert(self.ids[first:], at - first, ids))

    def drop(self, ids: np.ndarray) -> None:
        """Forget these pairs (their ids stay given out until ``compact``). Retention drops
        the oldest buckets' pairs: a prefix of the codes, skipped without a copy."""
        if not len(ids):
            return
        dropped = np.unique(ids)
        dropped = dropped[self.alive[dropped]]
        self.alive[dropped] = False
        count = len(dropped)
        if not self.alive[self.ids[:count]].any():  # all dead ones are the first ``count``
            self._codes.drop_front(count)
            self._ids.drop_front(count)
            return
        keep = self.alive[self.ids]
        self._codes.set(self.codes[keep])
        self._ids.set(self.ids[keep])

    def before(self, start: int) -> np.ndarray:
        """Ids of alive pairs whose bucket starts before ``start`` (a prefix of the codes)."""
        if self.origin is None or not len(self.codes):
            return np.zeros(0, np.int64)
        bucket = -(-start // self.step)  # the first bucket starting at or after ``start``
        limit = (bucket - self.origin) << self.slot_bits
        return self.ids[: int(np.searchsorted(self.codes, limit))]

    def compact(self, force: bool = False) -> np.ndarray | None:
        """When over half of the ids are dead (or any, with ``force``), renumber the alive pairs
        densely; returns the old id of each new id (the aggregates take the same ``keep``), or
        None if nothing moved."""
        dead = len(self.code_of) - len(self.ids)
        if dead == 0 or (dead * 2 < len(self.code_of) and not force):
            return None
        keep = np.flatnonzero(self.alive)
        renumber = np.full(len(self.code_of), -1, np.int64)
        renumber[keep] = np.arange(len(keep))
        self._code_of.set(self.code_of[keep])
        self._alive.set(np.ones(len(keep), bool))
        self._ids.set(renumber[self.ids])
        return keep

    # -- reads ----------------------------------------------------------------------------------

    def between(self, time_from: int | None, time_to: int | None) -> np.ndarray:
        """Ids of alive pairs with ``time_from <= start < time_to`` (open ends: unbounded), in
        code order (time, then slot)."""
        if self.origin is None or not len(self.codes):
            return np.zeros(0, np.int64)
        low, high = 0, len(self.codes)
        if time_from is not None:
            bucket = -(-time_from // self.step)
            low = int(np.searchsorted(self.codes, (bucket - self.origin) << self.slot_bits))
        if time_to is not None:
            bucket = -(-time_to // self.step)
            high = int(np.searchsorted(self.codes, (bucket - self.origin) << self.slot_bits))
        return self.ids[low:high]

    def alive_ids(self) -> np.ndarray:
        return self.ids

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self._codes, self._ids, self._code_of, self._alive))


class SpanError(OverflowError):
    """A batch's buckets too far from a part's first one to code (``_fits``): raised before the
    pair index changes."""


def _fits(span: int, bits: int) -> None:
    """A (bucket, slot) code is ``(bucket - origin) << bits | slot`` in an int64: ``span``
    buckets above the origin fit below 2**62 (a margin below int64's top)."""
    if span >= 1 << (62 - bits):
        raise SpanError(
            f"{span} buckets apart with {bits}-bit slots: too wide a time span for this "
            "window size; use a larger window or retention"
        )


def key_combos(columns: list[Vec], n: int) -> tuple[list[Key], np.ndarray, np.ndarray]:
    """The distinct key tuples of ``n`` rows: (tuples, each one's first row, each row's tuple
    index). Columns are coded in C (Arrow, numpy); only distinct tuples reach Python."""
    if not columns:
        return [()], np.zeros(1, np.int64), np.zeros(n, np.int64)
    codes, decoders = [], []
    for column in columns:
        code, values = value_codes(column)
        codes.append(code)
        decoders.append(values)
    packed = pack([code + 1 for code in codes])  # -1 (NULL) packs as 0
    if packed is not None:
        _, first, inverse = group(packed, first=True)
    else:
        _, first, inverse = np.unique(
            np.stack(codes), axis=1, return_index=True, return_inverse=True
        )
    # Column by column, then zipped: one list comprehension per column, no per-row generator
    # (with ~every row a new key, e.g. user ids, this was most of a batch's apply).
    values = []
    for code, decoder in zip(codes, decoders, strict=True):
        values.append([decoder[i] if i >= 0 else None for i in code[first].tolist()])
    tuples: list[Key] = list(zip(*values, strict=True))
    return tuples, first, inverse.reshape(-1)


def value_codes(column: Vec) -> tuple[np.ndarray, list[Any]]:
    """Per row, the index of its value among the column's distinct values (-1 for NULL)."""
    n = len(column)
    out = np.full(n, -1, np.int64)
    if column.kind == "null":
        return out, []
    valid = column.valid
    if column.kind == "string":
        index, dictionary = column.encoded()
        return index, dictionary.to_pylist()
    if column.kind == "object":
        seen: dict[tuple[str, Any], int] = {}
        values: list[Any] = []
        for i in np.flatnonzero(valid).tolist():
            value = column.data[i]
            typed = (type(value).__name__, value)
            if typed not in seen:
                seen[typed] = len(values)
                values.append(value)
            out[i] = seen[typed]
        return out, values
    data = column.data[valid]
    # -0.0 and 0.0 are one key: np.unique takes them for one value (they compare equal), which
    # whole() below names 0.
    distinct, inverse = np.unique(data, return_inverse=True)
    out[valid] = inverse.reshape(-1)
    values = distinct.tolist()
    if data.dtype.kind == "f":  # 3.0 is the key 3, as the event may well have written it
        values = [whole(v) for v in values]
    return out, values
