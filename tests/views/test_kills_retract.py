"""views/retract.py's check that a change batch is clean (every retraction finds its row and its
values, so adds-then-retractions equals the order given): what it must not wave through."""

from __future__ import annotations

from typing import Any

from tests.views.test_engine_oracle import SOURCES
from tests.views.test_retract_hop import changed
from views import snapshot
from views.config import parse
from views.query import all_rows
from views.registry import Batch, Registry
from views.view import OTHER

BASE = 1_790_000_040_000  # a minute's start
SQL = (
    "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, min(a) AS lo, max(b) AS hb "
    "FROM cdc GROUP BY k, m"
)


def applied(batches: list[tuple[list[dict[str, Any]], list[int]]]) -> tuple[Any, dict[str, int]]:
    view = changed(SQL, batches)
    return all_rows(view), view.stats()


def test_a_value_held_by_another_group_is_not_this_group_s() -> None:
    """The first pair a part holds (id 0) is looked up as itself, not as its neighbour."""
    first = {"ts": BASE + 1, "k": "k0", "a": 5, "b": 50}
    second = {"ts": BASE + 2, "k": "k1", "a": 7, "b": 70}
    wrong = {"ts": BASE + 3, "k": "k0", "a": 7, "b": 70}  # k1's values, said of k0
    rows, stats = applied([([first, second], [1, 1]), ([wrong], [-1])])
    assert rows == {
        (BASE, ("k0",)): [1, 5, 50, 1],
        (BASE, ("k1",)): [1, 7, 70, 1],
    }
    assert stats["unmatched"] == 1


def test_a_multiset_all_null_in_the_batch_does_not_end_the_check() -> None:
    """``min(a)`` has nothing to take off (every ``a`` NULL); ``max(b)`` must still be checked."""
    added = {"ts": BASE + 1, "k": "k0", "a": 1, "b": 10}
    unknown = {"ts": BASE + 2, "k": "k0", "a": None, "b": 99}  # never added
    rows, stats = applied([([added], [1]), ([unknown], [-1])])
    assert rows == {(BASE, ("k0",)): [1, 1, 10, 1]}
    assert stats["unmatched"] == 1


def test_a_row_retracted_twice_is_taken_off_once_in_every_group() -> None:
    """Per group, in order: the second retraction of a row held once finds nothing — in the
    batch's first group and in the ones after it."""
    rows = [{"ts": BASE + i, "k": f"k{i}", "a": i, "b": 10 * i} for i in range(3)]
    twice = [r for r in rows for _ in range(2)]
    got, stats = applied([(rows, [1, 1, 1]), (twice, [-1] * 6)])
    assert got == {}
    assert stats["unmatched"] == 3


def test_a_key_new_to_the_batch_is_not_taken_for_one_held() -> None:
    """A key the part has never seen has nothing to retract, whatever slots the held keys have."""
    held: list[dict[str, Any]] = [{"ts": BASE + i, "k": f"k{i}", "a": 5, "b": 50} for i in range(3)]
    for new in ("a", "z"):  # sorting before and after the held keys
        stranger: dict[str, Any] = {"ts": BASE + 9, "k": new, "a": 5, "b": 50}
        for order in ([stranger, *held], [*held, stranger]):
            weights = [-1 if r is stranger else 1 for r in order]
            got, stats = applied([(held, [1, 1, 1]), (order, weights)])
            assert got == {(BASE, (r["k"],)): [2, 5, 50, 2] for r in held}, (new, order)
            assert stats["unmatched"] == 1


def test_one_group_over_retracts_beside_one_that_does_not() -> None:
    """One group retracts its row twice, the other once — the first group of the batch or the
    next: only the extra retraction is unmatched."""
    rows = [{"ts": BASE + i, "k": f"k{i}", "a": i, "b": 10 * i} for i in range(2)]
    for twice in (rows[0], rows[1]):
        once = rows[1] if twice is rows[0] else rows[0]
        got, stats = applied([(rows, [1, 1]), ([once, twice, twice], [-1, -1, -1])])
        assert got == {}
        assert stats["unmatched"] == 1


def cdc_registry(**options: Any) -> Registry:
    """A registry of one view of ``SQL`` over the oracle test's change stream, with ``options``."""
    config = parse({"sources": {"cdc": SOURCES["cdc"]}, "views": {"v": {"sql": SQL, **options}}})
    return Registry(config.sources, config.views)


def test_a_retraction_into_other_when_other_holds_slot_0() -> None:
    """``__other__`` holds slot 0 in a process that restored a part where every earlier key had
    expired: a retraction of a folded key still finds its row there (slot 0 is a slot)."""
    minute = 60_000
    options = {"grace": "1m", "retention": "2m", "max_groups": 1}
    registry = cdc_registry(**options)
    k0 = {"ts": BASE + 1, "k": "k0", "a": 1, "b": 10}  # slot 0: the only group admitted
    k1 = {"ts": BASE + 3 * minute + 1, "k": "k1", "a": 2, "b": 20}  # folded: k0 is alive
    k2 = {"ts": BASE + 4 * minute + 1, "k": "k2", "a": 3, "b": 30}  # moves k0's minute out
    for i, (row, weight) in enumerate([(k0, 1), (k1, 1), (k2, 1)], start=1):
        registry.apply(Batch("cdc", [dict(row)], i, part="t:0", weights=[weight]))
    saved = snapshot.decode(snapshot.encode(registry.part_state("cdc", "t:0")))
    assert saved["views"]["v"]["keys"][0] == [OTHER]  # the premise: k0 expired, other comes first
    again = cdc_registry(**options)
    again.load_part("cdc", "t:0", saved)
    view = again.views["v"]
    assert view.keys.slot_of[view.other_key] == 0
    again.apply(Batch("cdc", [dict(k1)], 4, part="t:0", weights=[-1]))
    rows = all_rows(view)
    assert (BASE + 3 * minute, (OTHER,)) not in rows  # k1's row taken off __other__
    assert view.stats()["unmatched"] == 0


def test_a_key_whose_slot_0_expired_counts_as_new_against_max_groups() -> None:
    """max_groups 2: k0 took slot 0 and expired, k1 (slot 1) lives. A batch that adds k0 back,
    retracts it and adds a new key holds two keys new to the part, so it is applied in order: k0
    comes and goes, and the new key is admitted as a group of its own — exactly as the same rows
    in batches of one. (Read as held, k0 would leave room for one key only, and the new key would
    be folded into ``__other__``.)"""
    minute = 60_000
    history = [
        {"ts": BASE + 1, "k": "k0", "a": 1, "b": 10},
        {"ts": BASE + 3 * minute + 1, "k": "k1", "a": 2, "b": 20},
        {"ts": BASE + 4 * minute + 1, "k": "k1", "a": 3, "b": 30},  # moves k0's minute out
    ]
    back = {"ts": BASE + 4 * minute + 2, "k": "k0", "a": 4, "b": 40}
    new = {"ts": BASE + 4 * minute + 3, "k": "kx", "a": 5, "b": 50}
    batch, weights = [back, back, new], [1, -1, 1]
    options = {"grace": "1m", "retention": "2m", "max_groups": 2}
    one, two = cdc_registry(**options), cdc_registry(**options)
    for registry in (one, two):
        for i, row in enumerate(history, start=1):
            registry.apply(Batch("cdc", [dict(row)], i, part="t:0", weights=[1]))
    assert one.views["v"].keys.slot_of[("k0",)] == 0  # the premise: slot 0 is k0's, now dead
    one.apply(Batch("cdc", [dict(r) for r in batch], 4, part="t:0", weights=weights))
    for i, (row, weight) in enumerate(zip(batch, weights, strict=True), start=4):
        two.apply(Batch("cdc", [dict(row)], i, part="t:0", weights=[weight]))
    rows = all_rows(one.views["v"])
    assert rows == all_rows(two.views["v"])
    assert (BASE + 4 * minute, ("kx",)) in rows
    assert one.views["v"].stats()["unmatched"] == 0


def test_the_only_value_a_multiset_holds_is_found_and_taken_off() -> None:
    """A multiset of one entry, the smallest ``Multiset._find`` searches: retracting its row
    takes it off (no unmatched retraction), and an update replaces it."""
    row = {"ts": BASE + 1, "k": "k0", "a": 5, "b": 50}
    rows, stats = applied([([row], [1]), ([row], [-1])])
    assert (rows, stats["unmatched"]) == ({}, 0)
    newer = {**row, "a": 3, "b": 70}
    rows, stats = applied([([row], [1]), ([row, newer], [-1, 1])])
    assert (rows, stats["unmatched"]) == ({(BASE, ("k0",)): [1, 3, 70, 1]}, 0)
    rows, stats = applied([([newer], [1]), ([row, newer], [1, -1])])  # the new one first
    assert (rows, stats["unmatched"]) == ({(BASE, ("k0",)): [1, 5, 50, 1]}, 0)
