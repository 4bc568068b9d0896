"""Grouping a batch's rows by an integer code, without sorting when the codes are dense.

Most of a batch's group-bys are over small code ranges — dictionary indexes of a key column,
(bucket, slot) pairs of a few buckets, bins of a sketch — where a lookup table of the range
beats a sort (``np.unique``) by an order of magnitude. Wide ranges fall back to ``np.unique``.
Distinct codes come out ascending either way, so results do not depend on the path.
"""

from __future__ import annotations

import numpy as np

_DENSE_FACTOR = 8  # use a table while the code range is at most this many times the row count
_DENSE_FLOOR = 1 << 16  # ...or at most this large, whatever the row count


def group(codes: np.ndarray, first: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct codes ascending, each one's first row — when ``first`` — else empty, each row's
    index into the distinct codes)."""
    n = len(codes)
    if not n:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    low, high = int(codes.min()), int(codes.max())
    span = high - low + 1
    if span > max(_DENSE_FLOOR, _DENSE_FACTOR * n):
        if first:
            distinct, index, inverse = np.unique(codes, return_index=True, return_inverse=True)
            return distinct, index, inverse.reshape(-1)
        distinct, inverse = np.unique(codes, return_inverse=True)
        return distinct, np.zeros(0, np.int64), inverse.reshape(-1)
    shifted = codes - low
    present = np.zeros(span, bool)
    present[shifted] = True
    slots = np.flatnonzero(present)
    table = np.zeros(span, np.int64)
    table[slots] = np.arange(len(slots))
    inverse = table[shifted]
    firsts = np.zeros(0, np.int64)
    if first:
        firsts = np.full(len(slots), n, np.int64)
        np.minimum.at(firsts, inverse, np.arange(n, dtype=np.int64))
    return slots + low, firsts, inverse


def distinct(codes: np.ndarray) -> np.ndarray:
    """The distinct codes, ascending (``np.unique`` without its sort when the range is dense)."""
    return group(codes)[0]


def pack(columns: list[np.ndarray]) -> np.ndarray | None:
    """Non-negative int64 columns as one int64 code per row (mixed radix), keeping their
    lexicographic order; None when the product of their ranges does not fit."""
    if not columns:
        return None
    code = np.zeros(len(columns[0]), np.int64)
    size = 1
    for column in columns:
        width = int(column.max(initial=0)) + 1
        size *= width
        if size >= 1 << 62:
            return None
        code = code * width + column
    return code


def pack_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int, int, int] | None:
    """(one int64 code per row keeping the (a, b) order, a's low, b's low, b's width), or None
    when the two ranges do not fit one int64 (ranges checked in Python ints: no wrap-around)."""
    a_low, b_low = int(a.min()), int(b.min())
    a_width, b_width = int(a.max()) - a_low + 1, int(b.max()) - b_low + 1
    if a_width * b_width >= 1 << 62:
        return None
    return (a - a_low) * b_width + (b - b_low), a_low, b_low, b_width


def combos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each row's index among the distinct (a, b) pairs of int64 columns, in (a, b) order: packed
    into one code when their ranges allow, else by a sort (never ``np.unique(axis=1)``, which
    sorts the rows as bytes, an order of magnitude slower)."""
    if not len(a):
        return np.zeros(0, np.int64)
    packed = pack_pair(a, b)
    if packed is not None:
        return group(packed[0])[2]
    order = np.lexsort((b, a))
    sa, sb = a[order], b[order]
    new = np.ones(len(a), bool)
    new[1:] = (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])
    out = np.empty(len(a), np.int64)
    out[order] = np.cumsum(new) - 1
    return out
