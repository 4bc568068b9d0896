"""Exact sums in arrays: one sum per row, with no rounding error, whatever the order or batching.

A float64 is an integer times a power of two: ``x = m * 2**e`` with ``|m| < 2**53``. So the exact
sum of any floats is an integer times ``2**scale``, where ``scale`` is the smallest ``e`` seen.
``Sums`` keeps that integer for every row in *limbs*: row ``i``'s sum is
``sum(limbs[i, k] * 2**(32 * k)) * 2**scale``. Adding a value splits its shifted mantissa into
32-bit pieces, one per limb it touches; limbs are int64, so they take ~2**31 pieces before a carry
is needed, and ``_normalize`` carries after every batch (each limb but the top back into
``[0, 2**32)``; the top one keeps the sign). All rows share ``scale`` and the limb count: a value
finer than ``scale`` shifts every row left (exact), a larger one adds limbs. Typical data (prices
with cents, latencies) needs 3-4 limbs: 24-32 bytes a sum.

Reading a sum rounds the integer once, correctly (round half to even), vectorised: ``floats``.
So an answer is the correctly rounded exact sum, as ``math.fsum`` gives, and cannot depend on the
order of events, on how they were batched, on rollups or on restarts. Integers are exact too
(int64 inputs go in as ``m * 2**0``); ``integers`` gives a whole sum exactly, any magnitude.
"""

from __future__ import annotations

import math

import numpy as np

from views.grouping import group

BITS = 32
MASK = (1 << BITS) - 1
_MANTISSA = 53
# Limbs above the largest value's top: none is needed, since the top limb is a whole int64 that is
# never carried out of: the largest values use at most its low 33 bits, which leaves room for
# 2**30 of them — more than a pair ever holds — before it could overflow.
_HEADROOM = 0
_MIN_EXPONENT = -1074 - _MANTISSA  # below any float64's last bit
_CHUNK = 1 << 18  # values per bincount: a bin gets at most 3 * 2**18 pieces of < 2**33 (< 2**53)


def decompose(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, e) with ``values == m * 2**e`` exactly, int64 each; zeros give (0, 0).
    Floats: ``m`` odd (``|m| < 2**53``), so a whole float has ``e >= 0`` and the scale of sums of
    whole values stays 0; integers: ``m`` is the value, ``e`` is 0."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64), np.zeros(len(values), np.int64)
    fraction, exponent = np.frexp(values)
    mantissa = np.ldexp(fraction, _MANTISSA).astype(np.int64)
    e = exponent.astype(np.int64) - _MANTISSA
    # Strip trailing zero bits: the lowest set bit (m & -m, a power of two below 2**53, exact
    # as a float) gives their count.
    lowest = np.frexp((mantissa & -mantissa).astype(np.float64))[1].astype(np.int64) - 1
    zero = mantissa == 0
    lowest[zero] = 0
    return mantissa >> lowest, np.where(zero, 0, e + lowest)


class Sums:
    """One exact sum per row; rows are added with ``grow`` and addressed by index."""

    def __init__(self, rows: int = 0) -> None:
        self.scale = 0
        self.limbs = np.zeros((rows, _HEADROOM + 1), np.int64)

    def __len__(self) -> int:
        return int(self.limbs.shape[0])

    def grow(self, rows: int) -> None:
        """Room for ``rows`` rows in all (new rows sum to zero)."""
        extra = rows - len(self)
        if extra > 0:
            self.limbs = np.vstack([self.limbs, np.zeros((extra, self.limbs.shape[1]), np.int64)])

    # -- adding ---------------------------------------------------------------------------------

    def add(self, rows: np.ndarray, values: np.ndarray, negate: bool = False) -> None:
        """Add ``values[j]`` to row ``rows[j]`` (rows may repeat); ``negate`` subtracts them."""
        touched, _, inverse = group(rows)
        self.add_grouped(touched, inverse, values, negate)

    def add_grouped(
        self, touched: np.ndarray, groups: np.ndarray, values: np.ndarray, negate: bool
    ) -> None:
        """Add ``values[j]`` to row ``touched[groups[j]]``: the caller has grouped the batch
        already (``touched`` distinct), so the pieces are summed with ``np.bincount`` over a
        small range — exact in its float64 for ``_CHUNK`` values at a time, which
        ``_CHUNK`` guarantees."""
        if self._add_small_integers(touched, groups, values, negate):
            return
        m, e = decompose(values)
        keep = m != 0
        if not keep.all():
            groups, m, e = groups[keep], m[keep], e[keep]
        if not len(m):
            return
        self._fit(int(e.min()), int(e.max()), int(np.abs(m).max()).bit_length())
        width = self.limbs.shape[1]
        totals = np.zeros((len(touched), width), np.int64)
        for start in range(0, len(m), _CHUNK):
            part = slice(start, start + _CHUNK)
            totals += _pieces(groups[part], m[part], e[part] - self.scale, len(touched), width)
        self.limbs[touched] += -totals if negate else totals
        self._normalize(touched)

    def _add_small_integers(
        self, touched: np.ndarray, groups: np.ndarray, values: np.ndarray, negate: bool
    ) -> bool:
        """The common case done in one ``np.bincount``: whole values below ``2**31`` (ints, or
        floats that are whole: delays, distances, quantities) into sums of scale 0. They add to
        the lowest limb only, exactly (a chunk's total stays below ``2**49``, exact in float64);
        ``_normalize`` carries. False: not that case, nothing done."""
        if self.scale != 0 or not len(values):
            return False
        if values.dtype.kind == "f":
            if not np.isfinite(values).all():
                return False
            whole = np.rint(values)
            if (whole != values).any():
                return False
            values = whole
        elif values.dtype.kind not in "iu":
            return False
        largest = float(np.abs(values).max())
        if largest >= 2.0**31:
            return False
        self._fit(0, 0, int(largest).bit_length())  # the limbs the general path would have
        delta = np.zeros(len(touched), np.int64)
        for start in range(0, len(values), _CHUNK):
            part = slice(start, start + _CHUNK)
            chunk = np.bincount(groups[part], values[part].astype(np.float64), len(touched))
            delta += chunk.astype(np.int64)
        self.limbs[touched, 0] += -delta if negate else delta
        self._normalize(touched)
        return True

    def _fit(self, low_exponent: int, high_exponent: int, bits: int) -> None:
        """Make ``scale`` and the limb count take values down to ``2**low_exponent`` and up to
        ``2**(high_exponent + bits)``, with headroom; shifting existing sums is exact."""
        low_exponent = max(low_exponent, _MIN_EXPONENT)
        if low_exponent < self.scale:
            self._rescale(low_exponent)
        top = high_exponent + bits - self.scale  # bits above scale the largest value reaches
        need = -(-top // BITS) + _HEADROOM
        if need > self.limbs.shape[1]:
            self.limbs = _widen(self.limbs, need)

    def _rescale(self, scale: int) -> None:
        """Multiply every sum's integer by ``2**(self.scale - scale)`` and lower the scale."""
        shift = self.scale - scale
        whole, bit = divmod(shift, BITS)
        width = self.limbs.shape[1]
        wider = np.zeros((len(self), width + whole + 1), np.int64)
        wider[:, whole : whole + width] = self.limbs
        self.limbs = wider
        self.scale = scale
        if bit:
            # Limbs are normalized (all but the top in [0, 2**32)): shift each, carry up.
            shifted = self.limbs << bit
            carry = np.zeros_like(shifted)
            carry[:, 1:] = shifted[:, :-1] >> BITS
            shifted[:, :-1] &= MASK
            self.limbs = shifted + carry
        self._normalize(None)  # the old top limb (the sign) is no longer the top one
        self._trim()  # the limb the shift's carry was given room in, if no sum needs it

    def _normalize(self, rows: np.ndarray | None) -> None:
        """Carry every limb but the top one into ``[0, 2**32)`` (floor division keeps the
        value for negative limbs too)."""
        limbs = self.limbs if rows is None else self.limbs[rows]
        for k in range(limbs.shape[1] - 1):
            carry = limbs[:, k] >> BITS
            limbs[:, k] &= MASK
            limbs[:, k + 1] += carry
        if rows is not None:
            self.limbs[rows] = limbs

    # -- merging --------------------------------------------------------------------------------

    def aligned(self, scale: int) -> np.ndarray:
        """These sums' limbs at a (lower or equal) ``scale``."""
        copy = Sums()
        copy.scale, copy.limbs = self.scale, self.limbs.copy()
        if scale < copy.scale:
            copy._rescale(scale)
        return copy.limbs

    def gather(self, rows: np.ndarray, groups: np.ndarray, count: int) -> Sums:
        """A new ``Sums`` of ``count`` rows: row ``g`` is the sum of ``self``'s ``rows[j]`` for
        every ``j`` with ``groups[j] == g`` (a rollup, a merge of partitions)."""
        out = Sums(count)
        out.scale = self.scale
        width = self.limbs.shape[1]
        out.limbs = np.zeros((count, width + 1), np.int64)  # a limb more: room for the carries
        np.add.at(out.limbs[:, :width], groups, self.limbs[rows])
        out._normalize(None)
        return out

    def absorb(self, other: Sums, rows: np.ndarray) -> None:
        """Add ``other``'s row ``j`` to ``self``'s row ``rows[j]`` (rows distinct). Summed on
        those rows alone, a limb wider than either (room for the carries), then trimmed:
        ``self`` is rescaled or widened only when a sum needs it (rare), so an absorb costs the
        rows absorbed, not every row (a hop view absorbs its panes at every batch)."""
        if other.scale < self.scale:
            self._rescale(other.scale)
        theirs = other.aligned(self.scale)
        total = Sums()  # the absorbed rows' limbs (at ``self.scale``: carried and trimmed alone)
        width = max(self.limbs.shape[1], theirs.shape[1]) + 1
        total.limbs = _widen(self.limbs[rows], width) + _widen(theirs, width)
        total._normalize(None)
        total._trim()
        if total.limbs.shape[1] > self.limbs.shape[1]:
            self.limbs = _widen(self.limbs, total.limbs.shape[1])
        self.limbs[rows] = _widen(total.limbs, self.limbs.shape[1])

    def _trim(self) -> None:
        """Drop top limbs no sum needs (the limb a carry was given room in, say): a top limb
        that is 0, or -1 over a limb it borrows from, folds into the limb below it. Sums kept
        as state stay as wide as their values, however often they absorb."""
        while self.limbs.shape[1] > 1:
            top, below = self.limbs[:, -1], self.limbs[:, -2]
            if not ((top == 0) | (top == -1)).all():
                return
            folded = below + (top << BITS)
            self.limbs = self.limbs[:, :-1].copy()
            self.limbs[:, -1] = folded

    # -- reading --------------------------------------------------------------------------------

    def floats(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Each row's exact sum, correctly rounded to float64 (round half to even)."""
        limbs = self.limbs if rows is None else self.limbs[rows]
        return to_floats(limbs, self.scale)

    def integers(self, rows: np.ndarray) -> list[int | None]:
        """Each row's exact sum as a Python int when it is a whole number, else None."""
        out: list[int | None] = []
        for row in self.limbs[rows].tolist():
            total = sum(limb << (BITS * k) for k, limb in enumerate(row))
            if self.scale >= 0:
                out.append(total << self.scale)
            elif total % (1 << -self.scale) == 0:
                out.append(total >> -self.scale)
            else:
                out.append(None)
        return out


def _pieces(
    groups: np.ndarray, m: np.ndarray, shift: np.ndarray, count: int, width: int
) -> np.ndarray:
    """Per group and limb, the sum of ``m * 2**shift`` split into 32-bit pieces (int64)."""
    limb, bit = shift // BITS, shift % BITS
    sign = np.sign(m)
    magnitude = np.abs(m)
    low = (magnitude & MASK) << bit  # < 2**63: 32 bits shifted by at most 31
    high = (magnitude >> BITS) << bit  # < 2**62 for |m| < 2**63
    base = groups.astype(np.int64) * width + limb
    out = np.zeros(count * width, np.float64)
    for offset, piece in (
        (0, low & MASK),
        (1, (low >> BITS) + (high & MASK)),
        (2, high >> BITS),
    ):
        used = piece != 0  # a zero piece may point past its row's last limb: it adds nothing
        weights = (sign[used] * piece[used]).astype(np.float64)
        out += np.bincount(base[used] + offset, weights, count * width)
    return out.astype(np.int64).reshape(count, width)


def _widen(limbs: np.ndarray, width: int) -> np.ndarray:
    """``limbs`` with zero limbs added on top, normalized again: a negative sum's sign moves to
    the new top limb (its old top, -1 say, becomes 2**32 - 1 with a borrow above)."""
    out = np.hstack([limbs, np.zeros((limbs.shape[0], width - limbs.shape[1]), np.int64)])
    for k in range(out.shape[1] - 1):
        carry = out[:, k] >> BITS
        out[:, k] &= MASK
        out[:, k + 1] += carry
    return out


# Below this many rows, Python's own int arithmetic (correctly rounded too) is faster than the
# vectorised path's fixed cost of ~40 array operations: ~2 us a row against ~200 us a call, and
# a query's page is rows of that order (a point lookup: one). benchmarks/README.md, issue 15.
PYTHON_ROWS = 128


def to_floats(limbs: np.ndarray, scale: int) -> np.ndarray:
    """Correctly rounded float64 of ``sum(limbs[:, k] * 2**(32k)) * 2**scale`` per row, for
    normalized limbs (all but the last in ``[0, 2**32)``)."""
    rows, width = limbs.shape
    if rows < PYTHON_ROWS:
        return np.array([_python_float(row, scale) for row in limbs.tolist()], np.float64)
    negative = limbs[:, -1] < 0
    magnitude = np.where(negative[:, None], _negated(limbs), limbs).astype(np.uint64)
    nonzero = magnitude != 0
    top = np.where(nonzero.any(axis=1), width - 1 - np.argmax(nonzero[:, ::-1], axis=1), 0)
    pick = np.arange(rows)
    # The top three limbs' 96 bits hold the leading 65+ significant bits; the rest is sticky.
    hi = magnitude[pick, top]
    mid = np.where(top >= 1, magnitude[pick, np.maximum(top - 1, 0)], 0)
    lo = np.where(top >= 2, magnitude[pick, np.maximum(top - 2, 0)], 0)
    below = np.zeros(rows, bool)
    for k in range(width - 3, -1, -1):  # any bit under the three kept limbs
        below |= (k < top - 2) & (magnitude[:, k] != 0)
    hi_bits = np.frexp(hi.astype(np.float64))[1].astype(np.int64)  # bit length, exact < 2**32
    # Leading 64 bits: hi's bits, then mid's, then lo's top bits.
    shift_hi = 64 - hi_bits  # in [32, 64] (hi < 2**32)
    lead = _shl(hi, shift_hi) | _shl(mid, shift_hi - 32) | _shr(mid, 32 - shift_hi)
    lead |= _shl(lo, shift_hi - 64) | _shr(lo, 64 - shift_hi)
    dropped = _low_bits(lo, 64 - shift_hi)  # lo's bits that did not fit in ``lead``
    sticky = below | (dropped != 0)
    value = _round_to_53(lead, sticky)
    exponent = (top * BITS + hi_bits - 64 + scale).astype(np.int64)
    with np.errstate(over="ignore"):  # beyond float64's range a sum is infinite, as it reads
        out: np.ndarray = np.ldexp(value, exponent)
    out[~nonzero.any(axis=1)] = 0.0
    out = np.where(negative, -out, out)
    # Below the normal range the scaling would round a second time: Python's int division is
    # correctly rounded there (rare: sums under 2**-1022).
    odd = nonzero.any(axis=1) & (exponent + 64 <= -1021)
    for row in np.flatnonzero(odd).tolist():
        out[row] = _python_float(limbs[row].tolist(), scale)
    return out


def _python_float(row: list[int], scale: int) -> float:
    """One row's correctly rounded float: CPython rounds ``int / int`` and ``float(int)`` half
    to even, as the vectorised path does; beyond float64's range, infinite as it reads."""
    total = sum(limb << (BITS * k) for k, limb in enumerate(row))
    try:
        return total / (1 << -scale) if scale < 0 else float(total << scale)
    except OverflowError:
        return math.inf if total > 0 else -math.inf


def _negated(limbs: np.ndarray) -> np.ndarray:
    """The limbs of ``-x``, normalized (for the magnitude of a negative sum)."""
    return _widen(-limbs, limbs.shape[1])


def _shl(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``x << n`` for n in [-64, 64], 0 where the shift leaves nothing (uint64)."""
    n = np.asarray(n, np.int64)
    ok = (n >= 0) & (n < 64)
    return np.where(ok, x << np.clip(n, 0, 63).astype(np.uint64), np.uint64(0))


def _shr(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    n = np.asarray(n, np.int64)
    ok = (n > 0) & (n < 64)
    return np.where(ok, x >> np.clip(n, 0, 63).astype(np.uint64), np.uint64(0))


def _low_bits(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The lowest ``n`` bits of ``x`` (n in [0, 63]: its one caller asks for at most 32)."""
    one = np.uint64(1)
    out: np.ndarray = x & ((one << np.asarray(n).astype(np.uint64)) - one)
    return out


def _round_to_53(lead: np.ndarray, sticky: np.ndarray) -> np.ndarray:
    """``lead`` (64 bits, the top one set) rounded half-to-even to 53 bits, as a float64 holding
    an integer below 2**64 (exact: it has at most 53 significant bits)."""
    kept = lead >> np.uint64(11)
    rest = lead & np.uint64(0x7FF)
    half = np.uint64(0x400)
    up = (rest > half) | ((rest == half) & (sticky | ((kept & np.uint64(1)) == 1)))
    kept = kept + up.astype(np.uint64)
    rounded: np.ndarray = np.ldexp(kept.astype(np.float64), 11)
    return rounded
