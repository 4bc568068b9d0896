"""RFC 3339 times of a whole column at once, with numpy, straight from Arrow's string buffer.

The common layout, ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`` (``T``, ``t`` or a space between
date and time), is read by position for every row together: digits checked, fields range-checked
(days against their month, leap years included), the date turned into days with Hinnant's
``days_from_civil``, the offset subtracted, the fraction cut to milliseconds (floored, as
``views.timefmt.parse_rfc3339`` does). A row in any other form, or out of range, is marked not
``ok``: the caller reads it with ``parse_rfc3339`` itself, which accepts what Python's ISO parser
accepts and names the line of a bad one. So the column reader and the one-value reader agree on
every input (tests/ingest/test_timeparse.py checks it on random and odd strings).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MS_PER_DAY = 86_400_000
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    y = y - (m <= 2)
    era = np.where(y >= 0, y, y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    out: np.ndarray = era * 146097 + doe - 719468
    return out


_WORDS = 5  # little-endian 8-byte words read per row: bytes 0..39 of each string


Words = list[np.ndarray]  # per row, bytes 8k..8k+7 of its string as a little-endian uint64


def _byte(words: Words, at: int) -> np.ndarray:
    """Byte ``at`` of every row's string (int64), from its words."""
    word = words[at // 8]
    out: np.ndarray = ((word >> np.uint64((at % 8) * 8)) & np.uint64(0xFF)).astype(np.int64)
    return out


def _number(words: Words, at: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The number ``width`` ASCII digits at ``at`` write, and whether they are digits."""
    value = np.zeros(len(words[0]), np.int64)
    ok = np.ones(len(words[0]), bool)
    for k in range(width):
        digit = _byte(words, at + k) ^ 0x30
        ok &= digit < 10
        value = value * 10 + digit
    return value, ok


def _gathered(data: np.ndarray, at: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """As ``_number``, at a position of each row's own (``at``: absolute byte offsets)."""
    value = np.zeros(len(at), np.int64)
    ok = np.ones(len(at), bool)
    for k in range(width):
        digit = data[at + k].astype(np.int64) ^ 0x30
        ok &= digit < 10
        value = value * 10 + digit
    return value, ok


_SAMPLE = 1024  # the first rows, whose distinct count says whether times repeat


def parse_times(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(epoch ms, ok) per row of a string array; rows not ``ok`` need the one-value reader.

    Times that repeat (a time per hour or second shared by many events: four or more rows a
    distinct time among the first ``_SAMPLE``) are parsed once each, by Arrow's dictionary
    encoding: 50,000 hourly times take ~2.5 ms so against ~7.5 ms row by row; times nearly all
    distinct (milliseconds) would take three times as long so, and are read row by row."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    sample = array.slice(0, _SAMPLE)
    if (
        len(array) > _SAMPLE
        and not array.null_count
        and pc.count_distinct(sample).as_py() * 4 <= len(sample)
    ):
        encoded = pc.dictionary_encode(array)
        ms, ok = _parse(encoded.dictionary)
        index = np.asarray(encoded.indices)
        return ms[index], ok[index]
    return _parse(array)


def _parse(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    n = len(array)
    buffers = array.buffers()
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(buffers[1], width)[array.offset : array.offset + n + 1]
    offsets = offsets.astype(np.int64)
    raw = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    data = np.concatenate([raw, np.zeros(8 * _WORDS + 8, np.uint8)])
    start, length = offsets[:-1], np.diff(offsets)
    # Every byte offset as the start of a little-endian word (an unaligned strided view): each
    # row's first 40 bytes are 5 gathers, and a field is shifts and masks over whole columns.
    view = np.ndarray((len(data) - 7,), "<u8", data, 0, (1,))
    words = [view[start + 8 * k] for k in range(_WORDS)]
    ok = (length >= 20) & np.asarray(array.is_valid())
    year, good = _number(words, 0, 4)
    ok &= good
    fields = []
    for at in (5, 8, 11, 14, 17):
        value, good = _number(words, at, 2)
        ok &= good
        fields.append(value)
    month, day, hour, minute, second = fields
    for at, char in ((4, "-"), (7, "-"), (13, ":"), (16, ":")):
        ok &= _byte(words, at) == ord(char)
    t = _byte(words, 10)
    ok &= (t == ord("T")) | (t == ord("t")) | (t == ord(" "))
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _MONTH_DAYS[np.clip(month, 0, 12)] + ((month == 2) & leap)
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59)
    millis, zone_at, good = _fraction(words)
    ok &= good
    offset, good = _offset(data, start + zone_at, length - zone_at)
    ok &= good
    days = days_from_civil(year, np.clip(month, 1, 12), day)
    ms = days * _MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + millis - offset
    return np.where(ok, ms, 0), ok


def _fraction(words: Words) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(milliseconds of an optional ``.digits``, where the zone starts, whether well formed):
    at most 9 digits on this path (milliseconds are the first three, zero-padded)."""
    n = len(words[0])
    has = _byte(words, 19) == ord(".")
    if not has.any():
        return np.zeros(n, np.int64), np.full(n, 19, np.int64), np.ones(n, bool)
    millis = np.zeros(n, np.int64)
    digits = np.zeros(n, np.int64)
    running = has.copy()
    for k in range(10):
        digit = _byte(words, 20 + k) ^ 0x30
        running &= digit < 10
        digits += running
        if k < 3:
            millis = millis * 10 + np.where(running, digit, 0)
    ok = ~has | ((digits >= 1) & (digits <= 9))
    return np.where(has, millis, 0), np.where(has, 20 + digits, 19), ok


def _offset(data: np.ndarray, at: np.ndarray, left: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offset in ms of ``Z`` or ``±HH:MM`` ending each string, whether well formed); ``at``:
    where each row's zone starts in ``data``."""
    c = data[at].astype(np.int64)
    zulu = (c == ord("Z")) & (left == 1)  # Python's ISO reader takes "Z", not "z"
    signed = ((c == ord("+")) | (c == ord("-"))) & (left == 6)
    if not signed.any():
        return np.zeros(len(at), np.int64), zulu
    sign = np.where(c == ord("-"), -1, 1)
    hours, good_h = _gathered(data, at + 1, 2)
    minutes, good_m = _gathered(data, at + 4, 2)
    colon = data[at + 3] == ord(":")
    signed &= good_h & good_m & colon & (hours <= 23) & (minutes <= 59)
    offset = np.where(signed, sign * (hours * 60 + minutes) * 60_000, 0)
    return offset, zulu | signed
