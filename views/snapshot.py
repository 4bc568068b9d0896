"""Snapshot codec: registry state <-> bytes. Pure; the atomic file write lives in ``ingest``.

Layout (little-endian)::

    magic  b"TALLYSNP"   8 bytes
    version              u16   (FORMAT_VERSION)
    reserved             u16
    payload length       u64
    payload CRC-32       u32
    payload              orjson-encoded state (never pickle: loading must not run code)
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import orjson

MAGIC = b"TALLYSNP"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sHHQI")


class SnapshotError(ValueError):
    """The bytes are not a usable snapshot; the message says exactly why."""


def encode(state: dict[str, Any]) -> bytes:
    payload = orjson.dumps(state)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(payload), zlib.crc32(payload)) + payload


def encode_pieces(pieces: list[bytes]) -> list[bytes]:
    """Frame a JSON-encoded state given in pieces (``Registry.state_json``) without joining it:
    the header, then the pieces, for a writer to write one after the other."""
    crc = 0
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
    length = sum(len(p) for p in pieces)
    return [_HEADER.pack(MAGIC, FORMAT_VERSION, 0, length, crc), *pieces]


def decode(data: bytes) -> dict[str, Any]:
    if len(data) < _HEADER.size:
        raise SnapshotError(f"{len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    magic, version, _, length, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotError("not a tallyd snapshot (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format version {version}; this tallyd reads version {FORMAT_VERSION}"
        )
    payload = data[_HEADER.size :]
    if len(payload) != length:
        raise SnapshotError(f"payload is {len(payload)} bytes, header says {length} (truncated?)")
    if zlib.crc32(payload) != crc:
        raise SnapshotError("payload checksum mismatch (the file is corrupt)")
    state = orjson.loads(payload)
    if not isinstance(state, dict):
        raise SnapshotError("payload is not an object")
    return state
