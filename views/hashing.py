"""tallyd's value hash, version 1: a fixed, documented 64-bit hash of JSON scalars, computed for a
whole column at once with numpy — and by ``hash_value`` one value at a time (the reference).

HyperLogLog registers are kept in snapshots, so the hash must never change between runs,
processes, machines or library versions (Python's ``hash`` changes per process; polars' may change
per release). Equal SQL values hash equally: ``1``, ``1.0`` and ``1e0`` are one value; ``"1"`` is
another; ``true`` is neither.

Definition (all arithmetic modulo 2**64; ``fmix`` is MurmurHash3's 64-bit finalizer):

* an integer ``i`` (a number with no fractional part, in int64 range):
  ``fmix(i XOR INT_TAG)`` with ``i`` in two's complement;
* any other number: ``fmix(bits XOR FLOAT_TAG)``, ``bits`` its IEEE-754 float64 bit pattern
  (``-0.0`` is the integer 0);
* a boolean: ``fmix(b XOR BOOL_TAG)``, b = 0 or 1;
* a string: its UTF-8 bytes in little-endian 8-byte words ``w_0 .. w_{k-1}`` (the last padded
  with zero bytes); ``h = fmix(n XOR STRING_TAG)`` with n the byte length, then for each word
  ``h = fmix(h XOR w_j) * PRIME``; the hash is ``fmix(h)``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

INT_TAG = 0x9E3779B97F4A7C15
FLOAT_TAG = 0xC2B2AE3D27D4EB4F
BOOL_TAG = 0x165667B19E3779F9
STRING_TAG = 0x27D4EB2F165667C5
PRIME = 0x100000001B3  # FNV-1a's 64-bit prime: odd, so multiplying by it loses nothing
_M = (1 << 64) - 1
_C1 = 0xFF51AFD7ED558CCD
_C2 = 0xC4CEB9FE1A85EC53
_INT64 = 1 << 63


def fmix(h: int) -> int:
    """MurmurHash3's 64-bit finalizer (every input bit affects every output bit)."""
    h ^= h >> 33
    h = (h * _C1) & _M
    h ^= h >> 33
    h = (h * _C2) & _M
    return h ^ (h >> 33)


def hash_value(value: object) -> int:
    """The hash of one JSON scalar (the reference the column functions must equal)."""
    if isinstance(value, bool):
        return fmix(int(value) ^ BOOL_TAG)
    if isinstance(value, float) and value.is_integer() and -_INT64 <= value < _INT64:
        value = int(value)
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:  # beyond int64: hashed as the float it rounds to
            return hash_value(float(value))
        return fmix((value & _M) ^ INT_TAG)
    if isinstance(value, float):
        bits = int(np.float64(value).view(np.uint64))
        return fmix(bits ^ FLOAT_TAG)
    if isinstance(value, str):
        data = value.encode()
        h = fmix(len(data) ^ STRING_TAG)
        for start in range(0, len(data), 8):
            word = int.from_bytes(data[start : start + 8], "little")
            h = (fmix(h ^ word) * PRIME) & _M
        return fmix(h)
    raise TypeError(f"cannot hash {type(value).__name__}")


# -- columns -------------------------------------------------------------------------------------


def _fmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(_C1)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(_C2)
    out: np.ndarray = h ^ (h >> np.uint64(33))
    return out


def hash_ints(values: np.ndarray) -> np.ndarray:
    return _fmix(values.astype(np.int64).view(np.uint64) ^ np.uint64(INT_TAG))


def hash_floats(values: np.ndarray) -> np.ndarray:
    """Float64 column (no NaN): whole values in int64 range hash as integers."""
    values = np.asarray(values, np.float64)
    whole = (np.floor(values) == values) & (values >= -(2.0**63)) & (values < 2.0**63)
    out = _fmix(values.view(np.uint64) ^ np.uint64(FLOAT_TAG))
    if whole.any():
        out[whole] = hash_ints(values[whole].astype(np.int64))
    return out


def hash_bools(values: np.ndarray) -> np.ndarray:
    return _fmix(values.astype(np.uint64) ^ np.uint64(BOOL_TAG))


def hash_strings(array: pa.Array) -> np.ndarray:
    """A string (or large_string) Arrow array without nulls: one pass per 8-byte word."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = array.cast(pa.large_string())
    offsets_buffer, data_buffer = array.buffers()[1], array.buffers()[2]
    offsets = np.frombuffer(offsets_buffer, np.int64)[array.offset : array.offset + len(array) + 1]
    data = (
        np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    )
    padded = np.concatenate([data, np.zeros(8, np.uint8)])
    # Every byte offset as the start of a little-endian 8-byte word (an unaligned strided view).
    words = np.ndarray((len(padded) - 7,), "<u8", padded, 0, (1,))
    starts, lengths = offsets[:-1], np.diff(offsets)
    h = _fmix(lengths.astype(np.uint64) ^ np.uint64(STRING_TAG))
    ones = ~np.uint64(0)
    for j in range(int(-(-lengths.max() // 8)) if len(lengths) else 0):
        left = lengths - 8 * j
        live = np.flatnonzero(left > 0)
        every = len(live) == len(h)
        word = words[starts + 8 * j] if every else words[starts[live] + 8 * j]
        rest = left if every else left[live]
        # The last word keeps only the string's own bytes.
        keep = np.where(
            rest < 8,
            (np.uint64(1) << (8 * np.minimum(rest, 7)).astype(np.uint64)) - np.uint64(1),
            ones,
        )
        if every:
            h = _fmix(h ^ (word & keep)) * np.uint64(PRIME)
        else:
            h[live] = _fmix(h[live] ^ (word & keep)) * np.uint64(PRIME)
    return _fmix(h)
