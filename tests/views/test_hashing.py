"""The value hash (views/hashing.py): the column functions equal the one-value reference, equal
SQL values hash equally, and the values themselves never change (they live in snapshots)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from views.hashing import hash_bools, hash_floats, hash_ints, hash_strings, hash_value


@given(st.lists(st.text(), max_size=50), st.integers(0, 10))
def test_strings_column_equals_the_reference(texts: list[str], cut: int) -> None:
    array = pa.array(texts, pa.string())
    assert hash_strings(array).tolist() == [hash_value(t) for t in texts]
    sliced = array.slice(min(cut, len(texts)))  # a slice has an offset into the buffers
    assert hash_strings(sliced).tolist() == [hash_value(t) for t in texts[cut:]]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50))
def test_ints_column_equals_the_reference(values: list[int]) -> None:
    assert hash_ints(np.array(values, np.int64)).tolist() == [hash_value(v) for v in values]


@given(st.lists(st.floats(allow_nan=False), max_size=50))
def test_floats_column_equals_the_reference(values: list[float]) -> None:
    assert hash_floats(np.array(values, np.float64)).tolist() == [hash_value(v) for v in values]


def test_equal_sql_values_hash_equally_and_types_apart() -> None:
    assert hash_value(1) == hash_value(1.0) == int(hash_floats(np.array([1.0]))[0])
    assert hash_value(0) == hash_value(-0.0)
    assert len({hash_value(1), hash_value("1"), hash_value(True)}) == 3
    assert hash_bools(np.array([True, False])).tolist() == [hash_value(True), hash_value(False)]


def test_the_hash_is_fixed() -> None:
    """Pinned values: HyperLogLog registers in snapshots depend on them. Changing the hash is a
    snapshot format change (views/snapshot.py), never a silent one."""
    assert hash_value("u1") == 0x466C1F893F88BCD9
    assert hash_value(42) == 0x2D1C8760F8047FC7
    assert hash_value(2.5) == 0xDA56637EF628091C
    assert hash_value(True) == 0xA5B964E412570A04
