"""RFC 3339 times of a column (ingest/timeparse.py) against the one-value reader
(``views.timefmt.parse_rfc3339``) on seeded random and odd strings: every row the column reader
takes (``ok``) has the one-value reader's time, and every string the one-value reader refuses is
left to it (not ``ok``). Both of its ways: row by row, and once per distinct time when times
repeat."""

from __future__ import annotations

import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingest.timeparse import _SAMPLE, parse_times
from views.timefmt import parse_rfc3339


def a_time(rng: random.Random) -> str:
    """A well-formed time, mostly, in the forms the column reader knows and some it does not."""
    year = rng.choice([1970, 1999, 2000, 2013, 2024, 2026, 2100, rng.randrange(1, 9999)])
    month = rng.choice([1, 2, 12, rng.randrange(1, 13), 13, 0])
    day = rng.choice([1, 28, 29, 30, 31, rng.randrange(1, 32), 32])
    hour, minute, second = rng.randrange(25), rng.randrange(61), rng.randrange(61)
    sep = rng.choice("TTTt ")
    text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}"
    if rng.random() < 0.95:
        text += f":{second:02d}"
    if rng.random() < 0.5:
        text += "." + "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 11)))
    zone = rng.random()
    if zone < 0.4:
        text += rng.choice(["Z", "Z", "z"])
    elif zone < 0.9:
        sign = rng.choice("+-")
        text += f"{sign}{rng.randrange(25):02d}:{rng.randrange(61):02d}"
    elif zone < 0.95:
        text += "+0100"
    return text


def expected(text: str) -> int | None:
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


def check(texts: list[str]) -> None:
    ms, ok = parse_times(pa.array(texts, pa.string()))
    for text, got, took in zip(texts, ms.tolist(), ok.tolist(), strict=True):
        want = expected(text)
        if took:
            assert got == want, text
        else:
            assert want is None or not _standard(text), text


STANDARD = re.compile(
    r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)"
)


def _standard(text: str) -> bool:
    """The layout the column reader must take itself, when the time is valid (the one-value
    reader takes more: no seconds, ten fraction digits, an empty fraction, ...)."""
    return STANDARD.fullmatch(text) is not None


@pytest.mark.parametrize(("distinct", "repeat"), [(600, 1), (100, 40)])
def test_a_column_of_times_reads_as_the_one_value_reader_reads_each(
    distinct: int, repeat: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Times nearly all distinct, read row by row; or each time forty times, read once per
    distinct time. Either way, each row as the one-value reader reads it."""
    encoded: list[int] = []
    encode = pc.dictionary_encode

    def spy(array: pa.Array) -> pa.DictionaryArray:
        encoded.append(len(array))
        return encode(array)

    monkeypatch.setattr(pc, "dictionary_encode", spy)
    rng = random.Random(repeat)
    for _ in range(20):
        texts = [t for t in (a_time(rng) for _ in range(distinct)) for _ in range(repeat)]
        rng.shuffle(texts)
        check(texts)
    assert len(encoded) == (20 if repeat > 1 else 0)  # the way each column took


def test_times_that_repeat_are_parsed_once_each_and_end_where_they_started() -> None:
    """The way is chosen from the first rows only: repeated there and distinct after, or the
    other way round, every row still gets its own time."""
    rng = random.Random(3)
    valid = [t for t in (a_time(rng) for _ in range(20_000)) if _standard(t) and expected(t)]
    repeated = [valid[i % 10] for i in range(_SAMPLE)]
    for texts in (repeated + valid[10:3000], valid[10:3000] + repeated):
        ms, ok = parse_times(pa.chunked_array([texts[:1500], texts[1500:]], pa.string()))
        assert ok.all()
        assert ms.tolist() == [expected(t) for t in texts]


def test_nulls_are_not_ok() -> None:
    texts = ["2026-11-22T10:00:00Z", None] * _SAMPLE
    ms, ok = parse_times(pa.array(texts, pa.string()))
    assert ok.tolist() == [True, False] * _SAMPLE
    assert np.unique(ms[ok]).tolist() == [parse_rfc3339("2026-11-22T10:00:00Z")]
