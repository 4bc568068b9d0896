"""Snapshot codec: state <-> bytes. Pure; the atomic file write lives in ``ingest``.

Layout (little-endian)::

    magic  b"TALLYSNP"   8 bytes
    version              u16   (FORMAT_VERSION)
    reserved             u16
    payload length       u64
    payload CRC-32       u32
    payload:
        header length    u64
        header           orjson: the state, each numpy array replaced by {"__array": i},
                         and "__arrays": [[dtype, shape, offset], ...]; zero bytes after it
                         up to a multiple of 8
        arrays           each array's raw bytes, 8-byte aligned, at its offset from here

Never pickle: loading must not run code. View state is arrays (``views.aggregates``), so a
snapshot is a small JSON header and a few buffers, and a restore reads them back as arrays
(zero-copy views into the file's bytes, copied once by the loaders): a read, not an object
rebuild. Version 1 (the per-event engine's JSON state) is refused with a message naming it.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import orjson

MAGIC = b"TALLYSNP"
FORMAT_VERSION = 2
_HEADER = struct.Struct("<8sHHQI")
_LENGTH = struct.Struct("<Q")
_ALIGN = 8
Piece = bytes | memoryview


class SnapshotError(ValueError):
    """The bytes are not a usable snapshot; the message says exactly why."""


def _split(value: Any, arrays: list[np.ndarray]) -> Any:
    """The state with its arrays replaced by references (and collected in ``arrays``)."""
    if isinstance(value, np.ndarray):
        arrays.append(np.ascontiguousarray(value))
        return {"__array": len(arrays) - 1}
    if isinstance(value, dict):
        return {k: _split(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split(v, arrays) for v in value]
    return value


def payload_pieces(state: dict[str, Any]) -> list[Piece]:
    """The payload, in pieces: the header, then each array's bytes (not copied)."""
    arrays: list[np.ndarray] = []
    body = _split(state, arrays)
    index = []
    offset = 0
    for array in arrays:
        index.append([array.dtype.str, list(array.shape), offset])
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    header = orjson.dumps({"state": body, "__arrays": index}, option=orjson.OPT_SERIALIZE_NUMPY)
    padding = b"\0" * (-(len(header) + _LENGTH.size) % _ALIGN)
    pieces: list[Piece] = [_LENGTH.pack(len(header)), header + padding]
    for array in arrays:
        pieces.append(memoryview(array.reshape(-1).view(np.uint8).data) if array.nbytes else b"")
        pieces.append(b"\0" * (-array.nbytes % _ALIGN))
    return pieces


def frame(pieces: list[Piece]) -> list[Piece]:
    """The payload's pieces behind the header (checksum computed piece by piece, nothing
    joined: a writer writes them one after the other). CPU-bound: run it in a worker thread
    (zlib releases the GIL on large buffers)."""
    crc = 0
    length = 0
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
        length += len(piece) if isinstance(piece, bytes) else piece.nbytes
    return [_HEADER.pack(MAGIC, FORMAT_VERSION, 0, length, crc), *pieces]


def encode(state: dict[str, Any]) -> bytes:
    return b"".join(bytes(p) for p in frame(payload_pieces(state)))


def decode(data: bytes) -> dict[str, Any]:
    if len(data) < _HEADER.size:
        raise SnapshotError(f"{len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    magic, version, _, length, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotError("not a tallyd snapshot (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format version {version}; this tallyd reads version {FORMAT_VERSION}"
            + (
                " (version 1 is the JSON state of tallyd before its columnar engine: it cannot "
                "be read; see README, Guarantees, on upgrading)"
                if version == 1
                else ""
            )
        )
    payload = memoryview(data)[_HEADER.size :]
    if len(payload) != length:
        raise SnapshotError(f"payload is {len(payload)} bytes, header says {length} (truncated?)")
    if zlib.crc32(payload) != crc:
        raise SnapshotError("payload checksum mismatch (the file is corrupt)")
    (header_length,) = _LENGTH.unpack_from(payload)
    header = orjson.loads(bytes(payload[_LENGTH.size : _LENGTH.size + header_length]))
    base = -(-(_LENGTH.size + header_length) // _ALIGN) * _ALIGN  # arrays start aligned
    arrays = []
    for dtype, shape, offset in header["__arrays"]:
        kind = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        start = base + offset
        if start + count * kind.itemsize > len(payload):
            raise SnapshotError("an array runs past the end of the payload")
        flat = np.frombuffer(payload, kind, count, start)
        arrays.append(flat.reshape(shape))
    state = _join(header["state"], arrays)
    if not isinstance(state, dict):
        raise SnapshotError("payload is not an object")
    return state


def _join(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array"}:
            return arrays[value["__array"]]
        return {k: _join(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, arrays) for v in value]
    return value
