"""Backfill (issue 17) at the registry: a view added, or changed, on a running registry fills from
the history of its source, batch by batch, while live batches keep coming; it joins the live
views when it has read up to their position. The check is exact: a *twin* — the same SQL,
defined from the start — saw the same batches in the same order, so every answer and counter
(late, overflow) must be equal, whatever the interleaving of history chunks and live batches,
and across a snapshot taken mid-backfill and loaded by a new registry (a restart)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from views import snapshot
from views.config import parse
from views.query import Query, run
from views.registry import Batch, Registry

MINUTE = 60_000
T0 = 1_790_000_000_000 - 1_790_000_000_000 % MINUTE
SOURCE = {"from": "http", "time": "ts"}
# The new definition: a window with grace (lateness matters), a small max_groups (event order
# matters), expressions over a field that is often null or absent.
NEW_SQL = (
    "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, sum(x) AS total, max(x) AS top "
    "FROM s WHERE x IS NULL OR x > 2 GROUP BY k, m"
)
OLD_SQL = "SELECT k, count(*) AS n, sum(x) AS total FROM s GROUP BY k"  # x: read before too
NEW = {"sql": NEW_SQL, "grace": "30s", "max_groups": 6}


def config(views: dict[str, Any]) -> Any:
    return parse({"sources": {"s": SOURCE}, "views": views}, "test.toml")


def batches(seed: int, count: int) -> list[Batch]:
    rng = random.Random(seed)
    out, now = [], T0
    for position in range(1, count + 1):
        events = []
        for _ in range(rng.randint(0, 12)):
            now += rng.randint(0, 4_000)
            late = rng.random() < 0.15
            event: dict[str, Any] = {"ts": now - (rng.randint(31_000, 200_000) if late else 0)}
            event["k"] = f"k{rng.randint(0, 9)}"
            if rng.random() < 0.8:
                event["x"] = rng.choice([None, rng.randint(-5, 50)])
            events.append(event)
        out.append(Batch("s", events, position))
    return out


def answer(registry: Registry, name: str) -> tuple[list[str], dict[str, int]]:
    view = registry.views[name]
    rows = sorted(repr(r) for r in run(view, Query(limit=100_000)).rows)
    return rows, view.part_counters("")


def restarted(registry: Registry, views: dict[str, Any]) -> Registry:
    """A new registry from a snapshot of ``registry`` (a crash and restart)."""
    cfg = config(views)
    fresh = Registry(cfg.sources, cfg.views)
    fresh.history = frozenset({"s"})
    fresh.load_state(snapshot.decode(snapshot.encode(registry.to_state())))
    return fresh


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("change", ["add", "change"])
def test_a_backfilled_view_equals_one_defined_from_the_start(seed: int, change: str) -> None:
    rng = random.Random(seed * 7 + (change == "change"))
    history = batches(seed, 120)
    before = {"v": {"sql": OLD_SQL}} if change == "change" else {"old": {"sql": OLD_SQL}}
    after = {"v": NEW} if change == "change" else {"old": {"sql": OLD_SQL}, "v": NEW}
    twin_cfg = config({"twin": NEW})
    twin = Registry(twin_cfg.sources, twin_cfg.views)
    old_cfg = config({"v": {"sql": OLD_SQL}})
    old_twin = Registry(old_cfg.sources, old_cfg.views)  # the old definition, never changed
    cfg = config(before)
    live = Registry(cfg.sources, cfg.views)
    live.history = frozenset({"s"})
    split = rng.randint(0, 60)
    for batch in history[:split]:
        for registry in (twin, old_twin, live):
            registry.apply(batch)
    live.reconfigure(config(after).views)
    assert "v" in live.backfills
    assert live.backfilling("v") is (change == "add")
    read, at, restarts = 0, split, 0
    while "v" in live.backfills:
        step = rng.random()
        if step < 0.4 and at < len(history):  # a live batch
            for registry in (twin, old_twin, live):
                registry.apply(history[at])
            at += 1
        elif step < 0.9:  # a chunk of history, up to what live has applied
            for batch in history[read : min(read + rng.randint(1, 7), at)]:
                live.backfill_apply("v", batch)
                read += 1
            if read == at:  # read up to the live position: it joins, in the same step
                assert live.backfill_join("v", "")
        elif restarts < 2:  # a snapshot mid-backfill, loaded by a new process
            live = restarted(live, after)
            restarts += 1
            assert "v" in live.backfills
            assert live.backfills["v"].positions.get("", 0) == read
        if change == "change" and "v" in live.backfills:
            # the old definition answers meanwhile, unless a restart dropped it (its SQL is not
            # in the config any more): then the new one answers, saying it is backfilling
            if restarts == 0:
                assert answer(live, "v") == answer(old_twin, "v")
            else:
                assert live.backfilling("v")
    for batch in history[at:]:
        twin.apply(batch)
        live.apply(batch)
    assert live.views["v"].spec.sql == NEW_SQL
    assert not live.backfilling("v")
    assert answer(live, "v") == answer(twin, "twin")
    assert answer(live, "v")[1]["late"] > 0  # the check covered lateness


def test_removing_a_backfilling_view_drops_it_and_re_adding_starts_over() -> None:
    cfg = config({"old": {"sql": OLD_SQL}})
    live = Registry(cfg.sources, cfg.views)
    live.history = frozenset({"s"})
    history = batches(1, 10)
    for batch in history:
        live.apply(batch)
    live.reconfigure(config({"old": {"sql": OLD_SQL}, "v": NEW}).views)
    first = live.backfills["v"]
    live.backfill_apply("v", history[0])
    live.reconfigure(config({"old": {"sql": OLD_SQL}}).views)
    assert "v" not in live.backfills
    assert "v" not in live.views
    live.reconfigure(config({"old": {"sql": OLD_SQL}, "v": NEW}).views)
    assert live.backfills["v"] is not first
    assert live.backfills["v"].positions == {}
    # options changed mid-backfill: the same backfill goes on, with the new options
    live.backfill_apply("v", history[0])
    live.reconfigure(config({"old": {"sql": OLD_SQL}, "v": {**NEW, "max_groups": 7}}).views)
    assert live.backfills["v"].positions == {"": 1}
    assert live.views["v"].spec.max_groups == 7


def test_without_kept_history_a_new_view_starts_empty() -> None:
    cfg = config({"old": {"sql": OLD_SQL}})
    live = Registry(cfg.sources, cfg.views)  # history: none
    for batch in batches(2, 5):
        live.apply(batch)
    live.reconfigure(config({"old": {"sql": OLD_SQL}, "v": NEW}).views)
    assert live.backfills == {}
    assert not live.backfilling("v")
    assert answer(live, "v")[0] == []


def test_a_restart_with_views_new_or_changed_since_the_snapshot_backfills_them() -> None:
    """The config changed while the server was down: a view new since the snapshot and one whose
    SQL changed fill from the retained history (each said in a note), an unchanged one loads,
    one no longer defined is dropped; and a backfill the snapshot holds goes on."""
    history = batches(2, 30)
    old_cfg = config({"kept": {"sql": OLD_SQL}, "v": {"sql": OLD_SQL}, "gone": {"sql": OLD_SQL}})
    before = Registry(old_cfg.sources, old_cfg.views)
    before.history = frozenset({"s"})
    for batch in history[:20]:
        before.apply(batch)
    state = snapshot.decode(snapshot.encode(before.to_state()))
    after = {"kept": {"sql": OLD_SQL}, "v": NEW, "added": NEW}
    cfg = config(after)
    fresh = Registry(cfg.sources, cfg.views)
    fresh.history = frozenset({"s"})
    notes = fresh.load_state(state)
    assert notes == [
        "view v changed its SQL since the snapshot: it fills from the retained history",
        "view added is new: it fills from the retained history",
        "view gone is no longer defined: its state was dropped",
    ]
    assert fresh.backfilling("v")
    assert fresh.backfilling("added")
    # its old state is gone: nothing else answers (and /v1/views says replaces: false)
    assert fresh.backfills["v"].replaces is fresh.backfills["added"].replaces is False
    assert answer(fresh, "kept") == answer(before, "kept")
    # The history read, then the rest live: both equal a twin defined from the start.
    twin_cfg = config({"twin": NEW})
    twin = Registry(twin_cfg.sources, twin_cfg.views)
    for batch in history[:20]:
        twin.apply(batch)
    for name in ("v", "added"):
        for batch in history[:20]:
            fresh.backfill_apply(name, batch)
    assert fresh.backfill_join("v", "")  # v is live now; "added" has not joined yet
    assert not fresh.backfilling("v")
    # A snapshot holds v live and "added" still filling: after a restart, "added" goes on.
    again = restarted(fresh, after)
    assert not again.backfilling("v")
    assert again.backfills["added"].positions == {"": 20}
    assert again.backfills["added"].events == fresh.backfills["added"].events > 0
    assert again.backfill_join("added", "")
    for batch in history[20:]:
        twin.apply(batch)
        again.apply(batch)
    for name in ("v", "added"):
        assert answer(again, name) == answer(twin, "twin"), name
