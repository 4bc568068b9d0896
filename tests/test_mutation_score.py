"""tests/mutation.py, the score `make mutate` prints: statuses and docs/mutants.md's two lists."""

from __future__ import annotations

from tests.mutation import Score, listed, scores, stale

DOC = """# Surviving mutants
| `views.a.x_f__mutmut_1` | equivalent |
## Killed, checked by hand
| `views.a.x_f__mutmut_2` | a test mutmut does not run |
| `views.a.x_f__mutmut_5` | listed, but the run has not reached it |
"""
RESULTS = {
    "views.a.x_f__mutmut_1": "survived",
    "views.a.x_f__mutmut_2": "no tests",
    "views.a.x_f__mutmut_3": "killed",
    "views.a.x_f__mutmut_4": "survived",
    "views.a.x_f__mutmut_5": "not checked",
    "views.a.xǁCǁm__mutmut_1": "timeout",
}


def test_equivalent_and_by_hand_are_read_apart_and_counted() -> None:
    equivalent, by_hand = listed(DOC)
    assert equivalent == {"views.a.x_f__mutmut_1"}
    assert by_hand == {"views.a.x_f__mutmut_2", "views.a.x_f__mutmut_5"}
    got = scores(RESULTS, equivalent, frozenset(by_hand))
    assert got == {
        "views/a.py": Score(total=6, killed=3, survived=2, equivalent=1, unexplained=1, not_run=1)
    }
    assert got["views/a.py"].percent() == "60.0 %"


def test_a_listed_equivalent_the_run_killed_is_stale() -> None:
    """A function edited after its survivors were listed numbers its mutants anew: a listed
    name may now be a mutant the tests kill — the listing no longer says what it claims."""
    equivalent, _ = listed(DOC)
    assert stale(RESULTS, equivalent) == []
    assert stale({**RESULTS, "views.a.x_f__mutmut_1": "killed"}, equivalent) == [
        "views.a.x_f__mutmut_1"
    ]
    assert stale({**RESULTS, "views.a.x_f__mutmut_1": "timeout"}, equivalent) == [
        "views.a.x_f__mutmut_1"
    ]
