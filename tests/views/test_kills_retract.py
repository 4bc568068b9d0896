"""views/retract.py's check that a change batch is clean (every retraction finds its row and its
values, so adds-then-retractions equals the order given): what it must not wave through."""

from __future__ import annotations

from typing import Any

from tests.views.test_retract_hop import changed
from views.query import all_rows

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
