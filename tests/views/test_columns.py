"""The column-wise path gives the row path's answers: same batches, two registries, compared.

Batches are seeded random NDJSON bodies shaped like real traffic: int and float amounts (also
whole floats), NULLs and absent fields, negative values and zeros, disorder beyond the grace so
some events are late, epoch seconds and milliseconds, null group keys.
"""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
import pyarrow as pa
import pytest

from ingest.decode import TABLE_MIN_LINES, Decoder
from views.aggregates import Aggregate
from views.aggregates.sums import dyadic_partials
from views.columns import Table, columnar, prepare
from views.config import parse
from views.registry import Batch, Registry
from views.sketches import DDSketch, HyperLogLog
from views.spec import KINDS
from views.view import View

MINUTE = 60_000
T0 = 1_790_000_000_000

VIEWS = {
    "money": """SELECT country, tumble(ts, '1 minute') AS m, count(*) AS n, count(amount) AS priced,
        sum(amount) AS total, avg(amount) AS mean, min(amount) AS lo, max(amount) AS hi,
        sum(qty) AS items, min(qty) AS fewest
        FROM s GROUP BY country, m""",
    "sketches": """SELECT device, tumble(ts, '1 hour') AS h, approx_count_distinct(user) AS users,
        count_distinct(user) AS exact_users, p50(latency) AS p50, p99(latency) AS p99,
        top_k(product, 5) AS top
        FROM s GROUP BY device, h""",
    "filtered": """SELECT country, device, count(*) AS n, sum(amount) AS total FROM s
        WHERE status = 'paid' AND (amount > 10 OR amount IS NULL) GROUP BY country, device""",
    "one_field_filter": """SELECT tumble(ts, '1 minute') AS m, count(*) AS n FROM s
        WHERE status IN ('paid', 'refunded') GROUP BY m""",
    "everything": "SELECT count(*) AS n, sum(amount) AS total, max(latency) AS worst FROM s",
}


def config(max_groups: int = 100_000) -> Any:
    views = {
        name: {"sql": sql, "grace": "30s", "max_groups": max_groups} for name, sql in VIEWS.items()
    }
    for windowless in ("filtered", "everything"):
        views[windowless].pop("grace")
    return parse({"sources": {"s": {"time": "ts"}}, "views": views})


def event(rng: random.Random, ts: int) -> dict[str, Any]:
    e: dict[str, Any] = {
        "ts": ts,
        "country": rng.choice(["FR", "DE", "US", "JP", None]),
        "device": rng.choice(["ios", "web", "android"]),
        "user": f"u{rng.randrange(3000)}",
        "product": f"p{min(int(rng.paretovariate(1.1)), 50)}",
        "status": rng.choice(["paid", "paid", "refunded", "failed"]),
        "amount": rng.choice(
            [
                round(rng.lognormvariate(3, 1), 2),
                round(rng.lognormvariate(3, 1), 2),
                rng.randrange(-50, 500),  # an int among floats
                float(rng.randrange(100)),  # a whole float
                0.1,
                -0.0,
                None,
            ]
        ),
        "qty": rng.choice([1, 2, 3, -1, 0]),
        "latency": rng.choice([round(rng.lognormvariate(3, 0.7), 1), 0, 0.0, 1e-13, 250]),
    }
    for field in ("amount", "country", "latency"):
        if rng.random() < 0.05:
            del e[field]
    return e


def bodies(seed: int, batches: int, size: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for b in range(batches):
        base = T0 + b * 40_000
        events = [event(rng, base + rng.randrange(-90_000, 5_000)) for _ in range(size)]
        if b == 1:  # epoch seconds are read as event_time reads them
            for e in events[:50]:
                e["ts"] //= 1000
        out.append(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    return out


def compare(row: Registry, col: Registry) -> None:
    for name in VIEWS:
        a, b = row.views[name], col.views[name]
        assert a.parts.keys() == b.parts.keys()
        for part_name, pa_ in a.parts.items():
            pb = b.parts[part_name]
            assert pa_.counters == pb.counters, name
            assert pa_.group_refs == pb.group_refs, name
            assert [_plain(x["event"]) for x in pa_.late_events] == [
                x["event"] for x in pb.late_events
            ], name
            assert list(pa_.buckets) == list(pb.buckets), name
            for start, groups in pa_.buckets.items():
                assert groups.keys() == pb.buckets[start].keys(), name
                for key, aggs in groups.items():
                    other = pb.buckets[start][key]
                    for x, y in zip(aggs, other, strict=True):
                        assert x.result() == y.result(), (name, start, key, x.kind)
                        assert type(x.result()) is type(y.result()), (name, x.kind)
                        if isinstance(getattr(x, "sketch", None), HyperLogLog | DDSketch):
                            assert x.to_state() == y.to_state(), (name, x.kind)


def _plain(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if v is not None}


def feed_both(body_list: list[bytes], max_groups: int = 100_000) -> tuple[Registry, Registry, int]:
    cfg = config(max_groups)
    row, col = Registry(cfg.sources, cfg.views), Registry(cfg.sources, cfg.views)
    decoder = Decoder(cfg.sources["s"], 1 << 20)
    tables = 0
    for i, body in enumerate(body_list, start=1):
        decoded = decoder.decode(body)
        assert not decoded.errors
        row.apply(Batch("s", decoded.events, i))
        table = decoder.table(body)
        assert table is not None
        tables += 1
        col.apply(Batch("s", [], i, table=table))
    return row, col, tables


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_column_path_equals_row_path(seed: int) -> None:
    row, col, tables = feed_both(bodies(seed, 5, TABLE_MIN_LINES + 500))
    assert tables == 5
    assert all(columnar(v.spec) for v in col.views.values())
    assert row.views["money"].counter("late") > 0  # the disorder did reach the late path
    compare(row, col)
    assert row.sources["s"].watermarks == col.sources["s"].watermarks
    assert row.sources["s"].accepted == col.sources["s"].accepted


def test_a_batch_that_would_pass_max_groups_takes_the_row_path() -> None:
    # 5 countries (incl. null) x 3 devices = 15 keys for "filtered": a cap of 8 folds some into
    # __other__, in event order — the column path declines and the row path decides.
    row, col, _ = feed_both(bodies(7, 2, TABLE_MIN_LINES + 10), max_groups=8)
    assert col.views["filtered"].counter("overflow") > 0
    compare(row, col)


def test_exact_float_sums_survive_cancellation() -> None:
    # 1e15 + 0.1 - 1e15 is 0.125 in naive float arithmetic; exact summation gives 0.1.
    lines = [{"ts": T0, "amount": a} for a in (1e15, 0.1, -1e15, 0.2, -0.3, 7.0)] * 400
    body = b"\n".join(orjson.dumps(e) for e in lines) + b"\n"
    cfg = parse(
        {
            "sources": {"s": {"time": "ts"}},
            "views": {"v": {"sql": "SELECT sum(amount) AS t FROM s"}},
        }
    )
    reg = Registry(cfg.sources, cfg.views)
    table = Decoder(cfg.sources["s"], 1 << 20).table(body)
    assert table is not None
    reg.apply(Batch("s", [], 1, table=table))
    (aggs,) = reg.views["v"].parts[""].buckets[0].values()

    assert sum([1e15, 0.1, -1e15, 0.2, -0.3, 7.0] * 400) != math.fsum(
        [1e15, 0.1, -1e15, 0.2, -0.3, 7.0] * 400
    )
    assert aggs[0].result() == math.fsum([1e15, 0.1, -1e15, 0.2, -0.3, 7.0] * 400)


def _argument_columns(rng: random.Random, n: int) -> dict[str, pa.Array]:
    """An int, a float and a string column with NULLs, zeros and repeats. Fewer distinct values
    than a top_k's capacity, so the sketches stay exact and both paths must agree to the letter.
    No -0.0 next to 0.0: the column path counts them apart (see the xfail test below)."""
    ints = [None, 0, 7, -3, 10**12, *(rng.randrange(-100, 10**6) for _ in range(30))]
    floats = [None, 0.0, 1e-13, 2.0, 1e15, -1e15, 0.1, *(rng.uniform(-1e3, 1e6) for _ in range(25))]
    strings = [None, "", *(f"s{i}" for i in range(30))]
    return {
        "vi": pa.array([rng.choice(ints) for _ in range(n)], pa.int64()),
        "vf": pa.array([rng.choice(floats) for _ in range(n)], pa.float64()),
        "vs": pa.array([rng.choice(strings) for _ in range(n)], pa.string()),
    }


@pytest.mark.parametrize("cls", [c for c in KINDS if c.columnar], ids=lambda c: c.kind)
@pytest.mark.parametrize("seed", [1, 2])
def test_every_columnar_aggregate_folds_like_the_row_path(cls: type[Aggregate], seed: int) -> None:
    # Any class that says it folds column-wise, on every kind of column it accepts: an aggregate
    # added to views.spec.KINDS gets this check without being named here.
    rng = random.Random(seed)
    n = 3000
    data = pa.table(
        {
            "ts": pa.array([T0 + rng.randrange(5 * MINUTE) for _ in range(n)], pa.int64()),
            "k": pa.array([rng.choice(["a", "b", None]) for _ in range(n)]),
            **_argument_columns(rng, n),
        }
    )
    table = Table(data, "ts")
    call = f"{cls.sql_names[0]}({{}}{', 1' * (cls.sql_arity[0] - 1)})"
    fields = ["vi", "vf"] if cls.numeric_arg else ["vi", "vf", "vs"]
    aggregates = ", ".join(f"{call.format(f)} AS a_{f}" for f in fields)
    sql = f"SELECT k, tumble(ts, '1 minute') AS m, {aggregates} FROM s GROUP BY k, m"
    cfg = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": sql}}})
    row, col = View(cfg.views["v"], "ts"), View(cfg.views["v"], "ts")
    row.apply(table.rows(), None)
    prepared = prepare(col, table, None)
    assert prepared is not None, "the class says it is columnar, but the batch went row-wise"
    prepared.commit()
    assert list(row.parts[""].buckets) == list(col.parts[""].buckets)
    for start, groups in row.parts[""].buckets.items():
        assert groups.keys() == col.parts[""].buckets[start].keys()
        for key, aggs in groups.items():
            for x, y in zip(aggs, col.parts[""].buckets[start][key], strict=True):
                assert x.result() == y.result(), (start, key, x.kind)
                assert type(x.result()) is type(y.result()), (start, key, x.kind)


@pytest.mark.xfail(strict=True, reason="Arrow groups -0.0 apart from 0.0; the fold keeps one count")
def test_negative_zero_counts_with_zero_column_wise() -> None:
    # Found while writing the test above; left as it was (a pure refactor), to be fixed apart.
    sql = "SELECT top_k(v, 3) AS t, count_distinct(v) AS d FROM s"
    cfg = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": sql}}})
    table = Table(pa.table({"ts": pa.array([1] * 5), "v": [0.0, -0.0, 0.0, -0.0, 0.0]}), "ts")
    row, col = View(cfg.views["v"], "ts"), View(cfg.views["v"], "ts")
    row.apply(table.rows(), None)
    prepared = prepare(col, table, None)
    assert prepared is not None
    prepared.commit()
    states = [[a.to_state() for a in v.parts[""].buckets[0][()]] for v in (row, col)]
    assert states[0] == states[1]


@pytest.mark.parametrize(
    ("n", "k"), [(3, 0), (-7, -3), ((1 << 80) + 1, -60), (12345678901234567891, -70), (1, -1074)]
)
def test_dyadic_partials_are_exact(n: int, k: int) -> None:
    from fractions import Fraction

    partials = dyadic_partials(n, k)
    assert sum(Fraction(p) for p in partials) == Fraction(n) * Fraction(2) ** k
    assert [abs(p) for p in partials] == sorted(abs(p) for p in partials)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b'{"ts": 1790000000000, "status": 5}', "a string field given a number"),
        (b'{"ts": 1790000000000, "amount": "5"}', "a number field given a string"),
        (b'{"ts": 1790000000000, "amount": 1, "amount": 2}', "a key given twice"),
        (b"[1, 2]", "not an object"),
        (b'{"ts": 1790000000000, "amount": 123456789012345678901234}', "an integer beyond int64"),
        (b'{"ts": 1790000000000.5}', "a float time"),
        (b'{"ts": "2026-11-22T10:00:00Z"}', "an RFC 3339 time"),
        (b'{"amount": 1}', "no time"),
        (b'{"ts": 1790000000000, "amount": 1', "broken JSON"),
        (b'{"ts": 1790000000000, "country": {"a": 1}}', "an object as a key"),
    ],
)
def test_anything_unusual_goes_to_the_row_decoder(line: bytes, why: str) -> None:
    cfg = config()
    decoder = Decoder(cfg.sources["s"], 1 << 20)
    good = b'{"ts": 1790000000000, "amount": 1.5, "status": "paid", "country": "FR"}'
    body = b"\n".join([good] * TABLE_MIN_LINES + [line, good]) + b"\n"
    assert decoder.table(body) is None, why
    # ... which either accepts it (RFC 3339 time) or names the line
    decoded = decoder.decode(body)
    assert not decoded.errors or decoded.errors[0].line == TABLE_MIN_LINES + 1


def test_small_bodies_and_json_arrays_stay_row_wise() -> None:
    decoder = Decoder(config().sources["s"], 1 << 20)
    line = b'{"ts": 1790000000000, "amount": 1.5}'
    assert decoder.table(b"\n".join([line] * 10)) is None
    assert decoder.table(b"[" + b",".join([line] * (TABLE_MIN_LINES + 1)) + b"]") is None
    assert decoder.table(b"\n".join([line] * (TABLE_MIN_LINES + 1))) is not None


def test_an_event_from_the_future_goes_to_the_row_decoder() -> None:
    # Found on the column path (tests/api/test_bad_input.py): Decoder.table read such a body,
    # and the one event moved the watermark past every on-time event after it. Kafka fetches
    # are read by the same Decoder.table.
    now = 1_790_000_000_000
    decoder = Decoder(
        config().sources["s"], 1 << 20, max_future_ms=3_600_000, clock=lambda: now / 1000
    )
    lines = [b'{"ts": %d}' % (now - i) for i in range(TABLE_MIN_LINES)]
    assert decoder.table(b"\n".join(lines) + b"\n") is not None
    ahead = b"\n".join([*lines, b'{"ts": %d}' % (now + 3_600_001)]) + b"\n"
    assert decoder.table(ahead) is None
    (error,) = decoder.decode(ahead).errors
    assert (error.line, error.field) == (TABLE_MIN_LINES + 1, "ts")
