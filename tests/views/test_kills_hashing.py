"""views/hashing.py against its own written definition, implemented here a second time.

The module docstring defines hash version 1 in words (tags, MurmurHash3's finalizer, strings as
little-endian 8-byte words); ``spec_hash`` below follows those words with ``struct`` and plain
integers, sharing no code with the module. Both the one-value reference and the column functions
must equal it, at the edges the words single out: the int64 bounds, whole floats just inside and
outside them, ``-0.0``, booleans, and strings across word boundaries and in several scripts.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pytest

from views.hashing import hash_bools, hash_floats, hash_ints, hash_strings, hash_value

MASK = (1 << 64) - 1
INT_TAG = 0x9E3779B97F4A7C15
FLOAT_TAG = 0xC2B2AE3D27D4EB4F
BOOL_TAG = 0x165667B19E3779F9
STRING_TAG = 0x27D4EB2F165667C5
PRIME = 0x100000001B3


def murmur_fmix64(h: int) -> int:
    """MurmurHash3's fmix64, as published (Appleby, MurmurHash3.cpp)."""
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    h ^= h >> 33
    return h


def spec_hash(value: object) -> int:
    if isinstance(value, bool):
        return murmur_fmix64(int(value) ^ BOOL_TAG)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return murmur_fmix64(struct.unpack("<Q", struct.pack("<q", value))[0] ^ INT_TAG)
    if isinstance(value, int):  # beyond int64: the float it rounds to
        return spec_hash(float(value))
    if isinstance(value, float):
        if value.is_integer() and -(2**63) <= value < 2**63:
            return spec_hash(int(value))
        (bits,) = struct.unpack("<Q", struct.pack("<d", value))
        return murmur_fmix64(bits ^ FLOAT_TAG)
    assert isinstance(value, str)
    data = value.encode("utf-8")
    h = murmur_fmix64(len(data) ^ STRING_TAG)
    for start in range(0, len(data), 8):
        (word,) = struct.unpack("<Q", data[start : start + 8].ljust(8, b"\0"))
        h = (murmur_fmix64(h ^ word) * PRIME) & MASK
    return murmur_fmix64(h)


INTS = [0, 1, -1, 2, 255, 256, -256, 2**31, -(2**31), 2**53 + 1, 2**62, 2**63 - 1, -(2**63)]
FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -2.25,
    1e-300,
    5e-324,
    3.141592653589793,
    2.0**52 + 0.5,
    2.0**62,
    2.0**63,  # the first whole float beyond int64: hashed as a float
    -(2.0**63),  # int64's minimum: an integer
    -(2.0**64),
    1e300,
    float("inf"),
    float("-inf"),
]
STRINGS = [
    "",
    "a",
    "ab",
    "1234567",
    "12345678",
    "123456789",
    "x" * 16,
    "y" * 17,
    "é",
    "日本語テキスト",
    "🙂" * 3,
]


@pytest.mark.parametrize(
    "value", [*INTS, 2**63, -(2**63) - 1, 10**30, True, False, *FLOATS, *STRINGS]
)
def test_hash_value_follows_the_written_definition(value: object) -> None:
    assert hash_value(value) == spec_hash(value)


def test_the_column_functions_follow_the_written_definition() -> None:
    assert hash_ints(np.array(INTS, np.int64)).tolist() == [spec_hash(v) for v in INTS]
    assert hash_floats(np.array(FLOATS, np.float64)).tolist() == [spec_hash(v) for v in FLOATS]
    assert hash_bools(np.array([True, False, True])).tolist() == [
        spec_hash(True),
        spec_hash(False),
        spec_hash(True),
    ]
    expected = [spec_hash(s) for s in STRINGS]
    assert hash_strings(pa.array(STRINGS, pa.string())).tolist() == expected
    assert hash_strings(pa.array(STRINGS, pa.large_string())).tolist() == expected
    chunked = pa.chunked_array([STRINGS[:4], STRINGS[4:]], pa.string())
    assert hash_strings(chunked).tolist() == expected
    for cut in range(len(STRINGS)):  # a slice starts inside the buffers
        sliced = pa.array(STRINGS, pa.string()).slice(cut, 3)
        assert hash_strings(sliced).tolist() == expected[cut : cut + 3]


def test_columns_of_one_length_and_of_none() -> None:
    """Every string as long as the others (no string ends early) and empty columns."""
    same = ["abcdefghij", "klmnopqrst", "uvwxyz0123"]
    assert hash_strings(pa.array(same)).tolist() == [spec_hash(s) for s in same]
    empties = ["", "", ""]
    assert hash_strings(pa.array(empties)).tolist() == [spec_hash("")] * 3
    assert hash_strings(pa.array([], pa.string())).tolist() == []
    assert hash_ints(np.array([], np.int64)).tolist() == []
    assert hash_floats(np.array([], np.float64)).tolist() == []


def test_only_json_scalars_hash() -> None:
    for value in (None, [1], {"a": 1}, b"bytes"):
        with pytest.raises(TypeError, match=f"^cannot hash {type(value).__name__}$"):
            hash_value(value)


def test_the_float_column_hash_takes_integers_as_the_floats_they_are() -> None:
    ints = np.array([1, -3, 0, 2**40], np.int64)
    assert hash_floats(ints).tolist() == [spec_hash(float(v)) for v in ints.tolist()]


def test_floats_of_any_width_hash_as_the_float64_values_they_are() -> None:
    values = [0.5, 3.0, -2.25, 1e10, -7.0]  # exact in float32 too
    want = [hash_value(v) for v in values]
    for dtype in (np.float64, np.float32, np.float16):
        column = np.array(values[:3] if dtype == np.float16 else values, dtype)
        assert hash_floats(column).tolist() == want[: len(column)], dtype


def test_a_slice_of_a_string_column_hashes_its_own_strings_only() -> None:
    texts = ["alpha", "", "béta", "a longer string than a word", "z", "end"]
    for whole in (pa.array(texts), pa.array(texts, pa.large_string())):  # cast, or as it is
        _slices_hash_alone(whole)


def _slices_hash_alone(whole: pa.Array) -> None:
    for start, length in ((0, 6), (2, 3), (1, 1), (5, 1), (3, 0)):
        part = whole.slice(start, length)
        assert hash_strings(part).tolist() == [hash_value(s) for s in part.to_pylist()]
