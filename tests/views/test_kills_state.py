"""views/state.py's pair index, through a view: where its data begins (``View.first_start``, a
series' default range starts there) after buckets expired, for any slot, and at the epoch; the
pairs a query's time range selects."""

from __future__ import annotations

import logging
import random
from typing import Any

import orjson
import pytest

from ingest.columnar import MIN_LINES
from ingest.decode import Decoder
from views.config import parse
from views.query import Query, all_rows, run
from views.registry import Batch, Registry
from views.timefmt import MIN_TIME
from views.view import View

MINUTE = 60_000
BASE = 1_790_000_040_000  # a minute's start
SQL = "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n FROM s GROUP BY k, m"
FINE = "SELECT k, tumble(ts, '1 millisecond') AS m, count(*) AS n FROM s GROUP BY k, m"


def registry_of(sql: str, **view: Any) -> Registry:
    """A registry of one source ``s`` (time ``ts``) and one view ``v``: ``sql`` and ``view``'s
    settings."""
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": sql, **view}}})
    return Registry(config.sources, config.views)


def view_after(*batches: list[dict[str, Any]]) -> View:
    registry = registry_of(SQL, grace="1m", retention="2m")
    for i, events in enumerate(batches, start=1):
        registry.apply(Batch("s", events, i))
    return registry.views["v"]


def test_the_first_start_is_the_oldest_alive_bucket_whatever_its_slot() -> None:
    first = [{"ts": BASE + 1, "k": "a"}]  # slot 0, the first bucket
    later = [{"ts": BASE + 2 * MINUTE + 1, "k": "b"}, {"ts": BASE + 2 * MINUTE + 2, "k": "a"}]
    assert view_after(first).first_start() == BASE
    assert view_after(first, later).first_start() == BASE  # nothing expired yet
    # The first bucket expires: the oldest one left is two minutes on; its first pair is b's.
    expiring = [{"ts": BASE + 4 * MINUTE + 1, "k": "c"}]
    assert view_after(first, later, expiring).first_start() == BASE + 2 * MINUTE
    only_b = [{"ts": BASE + 2 * MINUTE + 1, "k": "b"}]  # slot 1 alone in the oldest bucket
    assert view_after(first, only_b, expiring).first_start() == BASE + 2 * MINUTE


def test_the_first_start_at_the_epoch_is_zero() -> None:
    assert view_after([{"ts": 1_000, "k": "a"}]).first_start() == 0
    assert view_after([{"ts": MINUTE + 1, "k": "a"}]).first_start() == MINUTE
    assert view_after([]).first_start() is None


def test_a_time_range_selects_exactly_the_buckets_that_start_inside_it() -> None:
    """``from <= start < to``, both ends aligned or not, against all rows filtered in Python."""
    rng = random.Random(7)
    events = [{"ts": BASE + rng.randrange(8 * MINUTE), "k": rng.choice("abc")} for _ in range(300)]
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": SQL}}})
    registry = Registry(config.sources, config.views)
    registry.apply(Batch("s", events, 1))
    view = registry.views["v"]
    every = all_rows(view)
    edges = [None, BASE - 1, BASE, BASE + 1, BASE + 3 * MINUTE, BASE + 3 * MINUTE + 7]
    edges += [BASE + 5 * MINUTE - 1, BASE + 8 * MINUTE, BASE + 9 * MINUTE]
    for time_from in edges:
        for time_to in edges:
            got = run(view, Query(time_from=time_from, time_to=time_to, limit=10_000)).rows
            expected = {
                (start, key): n
                for (start, key), (n,) in every.items()
                if (time_from is None or start >= time_from)
                and (time_to is None or start < time_to)
            }
            assert {(row[1], (row[0],)): row[2] for row in got} == expected, (time_from, time_to)


def test_numeric_group_keys_are_their_values_zero_once_and_whole_floats_as_integers() -> None:
    """``value_codes`` on a number column (whose mutants survived: no test grouped by numbers):
    -0.0 and 0.0 are one group, 3.0 and 3 are one group named 3 (an int, as the event may well
    have written it), 2.5 stays 2.5, NULL is a group of its own — from events, and from a body
    Arrow read (its number column all floats)."""
    config = parse(
        {
            "sources": {"s": {"time": "ts"}},
            "views": {"v": {"sql": "SELECT x, count(*) AS n FROM s GROUP BY x"}},
        }
    )
    values: list[Any] = [-0.0, 0.0, 3.0, 3, 2.5, None, 3.0, -7] * MIN_LINES
    events = [{"ts": BASE + i, "x": v} for i, v in enumerate(values)]
    body = b"\n".join(orjson.dumps(e) for e in events)
    columns = Decoder(config.sources["s"], 1 << 20).columns(body)
    assert columns is not None  # read column-wise
    m = MIN_LINES
    expected = {(0,): [2 * m], (3,): [3 * m], (2.5,): [m], (None,): [m], (-7,): [m]}
    for batch in (Batch("s", events, 1), Batch("s", [], 1, columns=columns)):
        registry = Registry(config.sources, config.views)
        registry.apply(batch)
        rows = {key: value for (_, key), value in all_rows(registry.views["v"]).items()}
        assert rows == expected
        assert {key: type(key[0]) for key in rows} == {
            (0,): int,
            (3,): int,
            (2.5,): float,
            (None,): type(None),
            (-7,): int,
        }


def test_bucket_codes_count_from_the_oldest_bucket_not_from_the_epoch() -> None:
    """A pair's code is (bucket - origin) << slot bits: with the origin at the oldest bucket a
    1 ms window fits an int64 at any time; counted from the epoch, times far from it (here in
    the year 9892: 2.5e14 buckets) would not, and the apply would refuse them as too wide."""
    registry = registry_of(FINE)
    far = 250_000_000_000_000
    registry.apply(Batch("s", [{"ts": far + i, "k": "ab"[i % 2]} for i in range(6)], 1))
    rows = all_rows(registry.views["v"])
    assert rows == {(far + i, ("ab"[i % 2],)): [1] for i in range(6)}


def test_slots_outgrowing_their_bits_at_the_same_origin_are_coded_again() -> None:
    """Slots start with 16 bits. A later batch of the same first bucket (the origin unchanged)
    bringing keys past 2**16 needs wider codes: every code is made again with the new width.
    Kept at 16 bits, slot 65,536 of the first minute would take the code of slot 0 of the next
    minute, and count in that pair."""
    registry = registry_of(SQL, grace="10m")  # the second batch's minute is not late
    first = [{"ts": BASE + m * MINUTE, "k": "a"} for m in range(2)]
    registry.apply(Batch("s", first, 1))  # "a" in two minutes: slot 0
    many = [{"ts": BASE, "k": f"k{i}"} for i in range(70_000)]  # slots 1..70,000, minute 0
    registry.apply(Batch("s", many, 2))
    rows = all_rows(registry.views["v"])
    expected = {(BASE, ("a",)): [1], (BASE + MINUTE, ("a",)): [1]}
    expected |= {(BASE, (f"k{i}",)): [1] for i in range(70_000)}
    assert rows == expected


def test_keys_too_many_to_pack_in_an_int64_are_grouped_all_the_same() -> None:
    """``key_combos`` packs each row's key codes into one int64 when their ranges allow; seven
    key columns of ~1,000 values each (70 bits) do not fit, and take the other way (a sort of
    the code rows) — which no test took: its mutants survived. Counted as plain Python counts
    them, NULLs included, and each row's group as its own key."""
    rng = random.Random(20)
    names = [f"k{i}" for i in range(7)]
    sql = (
        f"SELECT {', '.join(names)}, count(*) AS n, sum(x) AS t FROM s GROUP BY {', '.join(names)}"
    )
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": sql}}})
    distinct = [
        {name: (None if rng.random() < 0.02 else f"v{rng.randrange(1000)}") for name in names}
        for _ in range(1500)
    ]
    events: list[dict[str, Any]] = [
        {"ts": BASE + i, **rng.choice(distinct), "x": i} for i in range(4000)
    ]
    expected: dict[tuple[Any, ...], list[int]] = {}
    for i, event in enumerate(events):
        key = tuple(event[name] for name in names)
        n, t = expected.get(key, [0, 0])
        expected[key] = [n + 1, t + i]
    registry = Registry(config.sources, config.views)
    registry.apply(Batch("s", events, 1))
    rows = {key: value for (_, key), value in all_rows(registry.views["v"]).items()}
    assert rows == expected


def test_a_bucket_too_far_from_the_first_is_refused_not_wrapped_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With 1 ms windows and 2**17 keys (18-bit slots), a bucket some two thousand years after
    the first no longer fits the pair's int64 code. The same packing as before (origin and slot
    width unchanged) used to skip the check, and the code wrapped round: the event counted in a
    bucket thousands of years off. Now the batch is not applied to the view (all of it: the
    view changes nothing), counted as out of range with a warning naming the view, the part and
    the events; each such batch adds to the count."""
    registry = registry_of(FINE)
    year_1 = MIN_TIME
    first = [{"ts": year_1 + i % 1000, "k": i} for i in range(1 << 17)]
    registry.apply(Batch("s", first, 1, part="s:0"))
    before = all_rows(registry.views["v"])
    modern = [{"ts": 1_790_000_000_000, "k": 0}, {"ts": year_1 + 999, "k": 1}]  # not late
    with caplog.at_level(logging.WARNING, logger="tallyd.views"):
        applied = registry.apply(Batch("s", modern, 2, part="s:0"))
    assert (applied.views["v"].applied, applied.views["v"].out_of_range) == (0, 2)
    assert all_rows(registry.views["v"]) == before
    assert registry.views["v"].stats()["out_of_range"] == 2
    (warning,) = [r.getMessage() for r in caplog.records if "out_of_range" in r.getMessage()]
    assert warning.startswith("event=out_of_range view=v part=s:0 events=2: ")
    assert "too wide a time span for this window size" in warning
    again = registry.apply(Batch("s", modern[:1], 3, part="s:0"))
    assert again.views["v"].out_of_range == 1
    assert registry.views["v"].stats()["out_of_range"] == 3
    assert all_rows(registry.views["v"]) == before


@pytest.mark.parametrize(("keys", "bits"), [(1, 16), (1 << 16, 17)])
def test_the_widest_span_of_buckets_is_exactly_the_one_documented(keys: int, bits: int) -> None:
    """``_fits``: with ``bits``-bit slots (16 to begin with; 17 for 2**16 keys), buckets up to
    2**(62 - bits) - 1 past the first fit the code, one more does not (codes stay below
    2**62)."""
    registry = registry_of(FINE)
    registry.apply(Batch("s", [{"ts": MIN_TIME, "k": i} for i in range(keys)], 1))
    last = MIN_TIME + (1 << (62 - bits)) - 1
    registry.apply(Batch("s", [{"ts": last, "k": 0}], 2))
    assert all_rows(registry.views["v"])[(last, (0,))] == [1]
    applied = registry.apply(Batch("s", [{"ts": last + 1, "k": 0}], 3))
    assert applied.views["v"].out_of_range == 1


def test_codes_past_2_to_the_53_keep_neighbouring_keys_apart() -> None:
    """1 ms windows from 1970 to 2026: pair codes near 2**57, where a float64 holds every 16th
    integer only. Two keys in one bucket (codes 1 apart) and that bucket's neighbour stay apart,
    across batches: codes stay int64 all the way (a float anywhere would merge the keys)."""
    registry = registry_of(FINE, grace="1d")  # the second batch is not late
    now = 1_790_000_000_000
    events = [{"ts": 0, "k": "a"}, {"ts": now, "k": "a"}, {"ts": now, "k": "b"}]
    registry.apply(Batch("s", [*events, {"ts": now + 1, "k": "a"}], 1))
    registry.apply(Batch("s", [{"ts": now, "k": "b"}, {"ts": now + 1, "k": "b"}], 2))
    assert all_rows(registry.views["v"]) == {
        (0, ("a",)): [1],
        (now, ("a",)): [1],
        (now, ("b",)): [2],
        (now + 1, ("a",)): [1],
        (now + 1, ("b",)): [1],
    }


def test_two_number_keys_with_a_null_stay_apart_from_their_neighbours() -> None:
    """NULL codes as -1 (``value_codes``), packed as 0 beside the values from 1: (10, 30) and
    (20, NULL) are two groups, as plain Python groups them — whatever the packing, a NULL must
    not land on the code of the previous key's largest value."""
    registry = registry_of("SELECT a, b, count(*) AS n FROM s GROUP BY a, b")
    rng = random.Random(5)
    events = [
        {"ts": BASE, "a": rng.choice([10, 20, 30]), "b": rng.choice([30, 40, None])}
        for _ in range(200)
    ]
    events += [
        {"ts": BASE, "a": 10, "b": 30},
        {"ts": BASE, "a": 20, "b": None},
        {"ts": BASE, "a": 20},
    ]
    registry.apply(Batch("s", events, 1))
    expected: dict[tuple[Any, ...], int] = {}
    for event in events:
        key = (event.get("a"), event.get("b"))
        expected[key] = expected.get(key, 0) + 1
    got = {key: row[0] for (_, key), row in all_rows(registry.views["v"]).items()}
    assert got == expected


def test_a_batch_out_of_range_past_max_groups_is_not_counted_as_overflow() -> None:
    """Keys past ``max_groups`` in a batch the view cannot place: none of its rows is folded
    into ``__other__`` (none is applied), so they count as out of range only."""
    registry = registry_of(FINE, max_groups=1 << 17)
    registry.apply(Batch("s", [{"ts": MIN_TIME, "k": i} for i in range(1 << 17)], 1))
    modern = [{"ts": 1_790_000_000_000, "k": f"new{i}"} for i in range(3)]  # past max_groups
    applied = registry.apply(Batch("s", modern, 2))
    effect = applied.views["v"]
    assert (effect.applied, effect.overflow, effect.out_of_range) == (0, 0, 3)
