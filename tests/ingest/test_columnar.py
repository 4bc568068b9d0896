"""The column reader (``ingest/columnar.py``) reads what the row decoder reads, the same way, and
hands the row decoder anything it must name: a body is read column-wise or declined, never
read differently."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from ingest.columnar import MIN_LINES, _lines_within
from ingest.decode import Decoder
from views.batch import Columns, from_rows
from views.config import parse
from views.spec import SourceSpec

SOURCE = {"time": "ts", "fields": {"status": "string", "amount": "number", "country": "scalar"}}
VIEW = (
    "SELECT country, count(*) AS n, sum(amount) AS a FROM s WHERE status = 'paid' GROUP BY country"
)
GOOD = b'{"ts": 1790000000000, "amount": 1.5, "status": "paid", "country": "FR"}'


def spec() -> SourceSpec:
    return parse({"sources": {"s": SOURCE}, "views": {"v": {"sql": VIEW}}}).sources["s"]


def as_rows(columns: Columns) -> list[dict[str, Any]]:
    return columns.rows()


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b'{"ts": 1790000000000, "status": 5}', "a string field given a number"),
        (b'{"ts": 1790000000000, "amount": "5"}', "a number field given a string"),
        (b"[1, 2]", "not an object"),
        (b'{"ts": "2026-11-22 10:00"}', "a time without a zone"),
        (b'{"amount": 1}', "no time"),
        (b'{"ts": 1790000000000, "amount": 1', "broken JSON"),
        (b'{"ts": 1790000000000, "country": {"a": 1}}', "an object as a key"),
    ],
)
@pytest.mark.parametrize("threads", [True, False])
def test_what_must_be_named_goes_to_the_row_decoder(line: bytes, why: str, threads: bool) -> None:
    decoder = Decoder(spec(), 1 << 20)
    body = b"\n".join([GOOD] * MIN_LINES + [line, GOOD]) + b"\n"
    assert decoder.columns(body, threads) is None, why
    (error,) = decoder.decode(body).errors
    assert error.line == MIN_LINES + 1, why


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b'{"ts": 1790000000000, "amount": 1, "amount": 2}', "a key given twice (last wins)"),
        (b'{"ts": 1790000000000, "amount": 123456789012345678901234}', "exact beyond int64"),
        (b'{"ts": 1790000000000, "amount": 9007199254740993}', "beyond 2**53: exact as an int"),
    ],
)
@pytest.mark.parametrize("threads", [True, False])
def test_what_only_rows_read_exactly_goes_to_the_row_decoder(
    line: bytes, why: str, threads: bool
) -> None:
    decoder = Decoder(spec(), 1 << 20)
    body = b"\n".join([GOOD] * MIN_LINES + [line, GOOD]) + b"\n"
    assert decoder.columns(body, threads) is None, why
    assert not decoder.decode(body).errors, why


@pytest.mark.parametrize(
    "lines",
    [
        [b'{"ts": 1790000000000.5, "amount": 2}', b'{"ts": 1790000000, "amount": 2.25}'],
        [b'{"ts": "2026-11-22T10:00:00Z"}', b'{"ts": "2026-11-22T12:00:00.123+02:00"}'],
        [b'{"ts": "2026-11-22T10:00:00.1234567Z", "country": 3}', b'{"ts": "2026-11-22t10:00Z"}'],
        [b'{"ts": 1790000000000, "amount": null, "status": null}', b'{"ts": 1790000000001}'],
        [b'{"ts": 1790000000000, "country": true, "other": [1, {"x": 2}]}'],
    ],
)
def test_every_shape_it_reads_equals_the_row_decoder(lines: list[bytes]) -> None:
    """Float and second times, RFC 3339 with Z, offsets, 7 fraction digits, a lowercase t and
    no seconds (the one-value reader's forms), NULLs, absent fields, a key of another type,
    unused nested fields: read column-wise, the same values as row by row."""
    decoder = Decoder(spec(), 1 << 20)
    body = b"\n".join((lines * MIN_LINES)[: MIN_LINES * len(lines)]) + b"\n"
    columns = decoder.columns(body)
    assert columns is not None
    events = decoder.decode(body).events
    expected = from_rows(events, "ts", ["ts", "status", "amount", "country"])
    assert columns.time.tolist() == expected.time.tolist()
    assert as_rows(columns) == as_rows(expected)


def test_small_bodies_and_json_arrays_stay_row_wise() -> None:
    decoder = Decoder(spec(), 1 << 20)
    assert decoder.columns(b"\n".join([GOOD] * (MIN_LINES - 2))) is None
    assert decoder.columns(b"[" + b",".join([GOOD] * (MIN_LINES * 2)) + b"]") is None
    assert decoder.columns(b"\n".join([GOOD] * MIN_LINES)) is not None


def test_an_event_from_the_future_goes_to_the_row_decoder() -> None:
    # Found on the column path (tests/api/test_bad_input.py): the old table reader read such a
    # body, and the one event moved the watermark past every on-time event after it.
    now = 1_790_000_000_000
    decoder = Decoder(spec(), 1 << 20, max_future_ms=3_600_000, clock=lambda: now / 1000)
    lines = [b'{"ts": %d}' % (now - i) for i in range(MIN_LINES)]
    assert decoder.columns(b"\n".join(lines) + b"\n") is not None
    ahead = b"\n".join([*lines, b'{"ts": %d}' % (now + 3_600_001)]) + b"\n"
    assert decoder.columns(ahead) is None
    (error,) = decoder.decode(ahead).errors
    assert (error.line, error.field) == (MIN_LINES + 1, "ts")


def _change(rng: Any, wrapped: bool) -> bytes | None:
    def row() -> dict[str, Any]:
        return {
            "ts": 1_790_000_000_000 + rng.randrange(10**6),
            "country": rng.choice("ab"),
            "amount": rng.choice([1, 2.5, None]),
            "status": "paid",
            "other": {"x": 1},
        }

    op = rng.choice("crud")
    if rng.random() < 0.05:
        return None  # a tombstone
    event = {
        "op": op,
        "before": row() if op in "ud" else None,
        "after": row() if op in "cru" else None,
        "ts_ms": 1,
        "source": {"db": "x"},
    }
    return orjson.dumps({"schema": {"type": "struct"}, "payload": event} if wrapped else event)


@pytest.mark.parametrize("wrapped", [False, True])
def test_change_events_read_column_wise_equal_the_row_decoder(wrapped: bool) -> None:
    import random

    from ingest.changes import ChangeDecoder

    rng = random.Random(3)
    spec = parse(
        {
            "sources": {
                "s": {
                    **SOURCE,
                    "from": "kafka",
                    "format": "debezium",
                    "bootstrap": "x:1",
                    "topic": "t",
                    "group": "g",
                }
            },
            "views": {"v": {"sql": VIEW}},
        }
    ).sources["s"]
    changes = ChangeDecoder(Decoder(spec, 1 << 20), "debezium", False)
    values = [_change(rng, wrapped) for _ in range(500)]
    read = changes.columns(values)
    assert read is not None
    columns, weights = read
    decoded = changes.decode("t:0", [(i, 0, v) for i, v in enumerate(values)])
    assert decoded.poison == []
    expected = from_rows(decoded.events, "ts", ["ts", "status", "amount", "country"])
    assert as_rows(columns) == as_rows(expected)
    assert weights is not None
    assert weights.tolist() == decoded.weights
    bad = [*values, orjson.dumps({"op": "u", "after": {"ts": 1}})]  # no before-image
    assert changes.columns(bad) is None  # the row decoder keeps it as poison, with its reason


def longest_line(body: bytes) -> int:
    lines = body.split(b"\n")
    if body.endswith(b"\n"):
        lines.pop()  # a final newline ends the last line, it does not start one
    return max((len(line) for line in lines), default=0)


@pytest.mark.parametrize(
    "body",
    [b"", b"\n", b"a", b"a\n", b"ab\n\ncde", b"\n\nabc\n", b"x" * 40 + b"\n" + b"y" * 7],
)
def test_lines_within_a_limit_as_python_splits_them(body: bytes) -> None:
    for limit in range(0, 45):
        assert _lines_within(body, limit) == (longest_line(body) <= limit), limit


def test_lines_within_a_limit_on_seeded_random_bodies() -> None:
    """Both ways of knowing: a newline in every block (limits large against the body: a few
    ``find`` calls), and every line measured (a block without one, or a limit so small that the
    blocks would be thousands) — lines exactly at the limit, one over, first and last lines."""
    rng = random.Random(10)
    for _ in range(400):
        limit = rng.choice([0, 1, 2, 5, 17, 64, 300, 1000])
        lengths = [
            rng.choice([0, 1, limit, limit + 1, rng.randrange(2 * limit + 2)])
            for _ in range(rng.randrange(0, 200))
        ]
        lengths = [n for n in lengths if n <= limit] if rng.random() < 0.5 else lengths
        body = b"\n".join(b"x" * n for n in lengths) + (b"\n" if rng.random() < 0.5 else b"")
        assert _lines_within(body, limit) == (longest_line(body) <= limit), (limit, lengths)


def test_bodies_read_at_once_in_two_threads_learn_a_type_once_and_both_stay_column_wise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP reads large bodies in worker threads, several at once. Two first bodies of RFC 3339
    times both fail as epoch numbers; whichever learns second finds the type learned already and
    must read again with it, not hand its body to the row decoder (20x slower: seen as a
    second lost in every flights benchmark run). Arrow reads for real; a barrier only makes both
    first reads fail before either learns."""
    import threading

    import pyarrow.json as pa_json

    real = pa_json.read_json
    barrier = threading.Barrier(2, timeout=30)
    first_failures: set[int] = set()

    def read_json(*args: Any, **kwargs: Any) -> Any:
        try:
            return real(*args, **kwargs)
        except Exception:
            if threading.get_ident() not in first_failures:
                first_failures.add(threading.get_ident())
                barrier.wait()  # both have failed with the old type; now both learn
            raise

    monkeypatch.setattr(pa_json, "read_json", read_json)
    decoder = Decoder(spec(), 1 << 20)
    events = [
        {"ts": f"2026-12-01T10:00:{i % 60:02d}Z", "amount": i, "status": "paid", "country": "FR"}
        for i in range(MIN_LINES)
    ]
    body = b"\n".join(orjson.dumps(e) for e in events) + b"\n"
    results: list[Columns | None] = [None, None]

    def read(i: int) -> None:
        results[i] = decoder.columns(body)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(first_failures) == 2  # the race happened: both failed before either learned
    expected = decoder.decode(body).events
    for columns in results:
        assert columns is not None, "a body went to the row decoder"
        assert as_rows(columns) == expected


@pytest.mark.parametrize("threads", [True, False])
def test_a_body_of_several_blocks_reads_the_same_in_arrows_threads_or_one(threads: bool) -> None:
    """HTTP reads a body alone with Arrow's threads (1 MB blocks), beside others in one thread
    and one block: the same columns either way, and a bad line past the first megabyte still
    sends the body to the row decoder, which names it."""
    rng = random.Random(7)
    lines = [
        orjson.dumps(
            {
                "ts": f"2026-11-22T10:{i % 60:02d}:00{rng.choice(['Z', '+02:00', '.5-05:00'])}",
                "amount": rng.choice([None, i, i / 4]),
                "status": rng.choice(["paid", "refunded", None]),
                **({"country": rng.choice(["FR", "DE", None])} if i % 3 else {}),
            }
        )
        for i in range(40_000)
    ]
    body = b"\n".join(lines) + b"\n"
    assert len(body) > 2 << 20  # several of Arrow's 1 MB blocks
    decoder = Decoder(spec(), 1 << 20)
    columns = decoder.columns(body, threads)  # learning that the times are strings
    assert columns is not None
    expected = from_rows(decoder.decode(body).events, "ts", ["ts", "status", "amount", "country"])
    assert columns.time.tolist() == expected.time.tolist()
    assert as_rows(columns) == as_rows(expected)
    bad = body + b'{"ts": 1790000000000, "status": 5}\n'
    assert decoder.columns(bad, threads) is None
    (error,) = decoder.decode(bad).errors
    assert (error.line, error.field) == (len(lines) + 1, "status")
