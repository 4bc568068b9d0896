"""The cluster crash oracle's verdict (benchmarks/cluster_crash.py) can fail: a lost acknowledged
event, an id counted twice and a batch never sent are each found; a post that died with its
member may be counted in part or not at all."""

from __future__ import annotations

import random
from typing import Any

from benchmarks.cluster_crash import Outcome, judge
from benchmarks.crash import Ledger


def ledger() -> Ledger:
    out = Ledger()
    rng = random.Random(3)
    for _ in range(4):
        out.new_batch(rng)
    out.acked = {0, 1, 2}  # batch 3's post died with its member
    return out


def answer(counts: dict[int, tuple[int, int]]) -> dict[str, Any]:
    return {"rows": [{"batch": b, "n": n, "ids": d} for b, (n, d) in sorted(counts.items())]}


def whole(log: Ledger) -> dict[int, tuple[int, int]]:
    return {b: (len(ids), len(ids)) for b, ids in log.sent.items() if b in log.acked}


def test_every_acknowledged_batch_counted_once_is_ok_whatever_the_unknown_one_did() -> None:
    log = ledger()
    size = len(log.sent[3])
    for unknown in ({}, {3: (size, size)}, {3: (1, 1)}):
        outcome = judge(log, answer({**whole(log), **unknown}), Outcome(1, 0, 0, 0))
        assert outcome.ok, outcome
        assert outcome.lost == outcome.duplicated == 0
        assert outcome.unknown_counted == (1 if unknown else 0)


def test_a_lost_event_a_duplicate_and_a_stranger_are_each_found() -> None:
    log = ledger()
    counts = whole(log)
    n = counts[1][0]
    lost = judge(log, answer({**counts, 1: (n - 1, n - 1)}), Outcome(1, 0, 0, 0))
    assert lost.lost == 1
    assert not lost.ok
    twice = judge(log, answer({**counts, 2: (counts[2][0] + 1, counts[2][0])}), Outcome(1, 0, 0, 0))
    assert twice.duplicated >= 1
    assert not twice.ok
    unknown_twice = judge(log, answer({**counts, 3: (2, 1)}), Outcome(1, 0, 0, 0))
    assert unknown_twice.duplicated == 1
    stranger = judge(log, answer({**counts, 99: (1, 1)}), Outcome(1, 0, 0, 0))
    assert stranger.problems == ["batches counted that were never sent: [99]"]
    assert not stranger.ok
