"""Durations: ``"30s"``, ``"1 minute"``, ``"7d"`` → integer milliseconds.

Months and years are refused on purpose: they have no fixed length, and a window whose size depends
on the calendar cannot be a pure integer function of the timestamp.
"""

from __future__ import annotations

import re

_UNITS: dict[str, int] = {}
for _ms, _names in (
    (1, ("ms", "millisecond", "milliseconds")),
    (1_000, ("s", "sec", "secs", "second", "seconds")),
    (60_000, ("m", "min", "mins", "minute", "minutes")),
    (3_600_000, ("h", "hr", "hrs", "hour", "hours")),
    (86_400_000, ("d", "day", "days")),
    (604_800_000, ("w", "week", "weeks")),
):
    for _name in _names:
        _UNITS[_name] = _ms

_PATTERN = re.compile(r"^\s*(\d+)\s*([a-zA-Z]+)\s*$")


def parse_duration(text: str) -> int:
    """Parse a positive duration into milliseconds; raise ``ValueError`` saying what is accepted."""
    match = _PATTERN.match(text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"{text!r} is not a duration; write a whole number and a unit, "
            "e.g. '500ms', '30s', '1 minute', '1h', '7d', '1 week' (months and years have no fixed "
            "length and are not supported)"
        )
    value = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return value


def format_duration(ms: int) -> str:
    """The shortest exact spelling of ``ms`` (``3_600_000`` → ``"1h"``)."""
    for unit, size in (
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_duration_or_off(text: str) -> int:
    """A duration, or ``off`` (0): a setting that may be turned off."""
    return 0 if text.strip().lower() == "off" else parse_duration(text)
