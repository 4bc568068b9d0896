"""Backfill paths the mutation run found untested (issue 20): a change stream's history (its
retractions are weights), history old enough to expire, the events a backfill reports it read,
the counters answer caches and the snapshot loop trust, a view changed again while it fills, and
the bounded samples (late and rejected events) of views and sources added on a running server.
Each test compares with a twin defined from the start, or with what the server promises."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from api.read import _late
from tests.views.test_backfill import NEW, NEW_SQL, OLD_SQL, SOURCE, answer, batches, config
from tests.views.test_engine_oracle import SOURCES
from views import snapshot
from views.config import parse
from views.query import Query, run
from views.registry import Batch, Registry

MINUTE = 60_000
BASE = 1_790_000_040_000  # a minute's start
CDC_SQL = (
    "SELECT k, tumble(ts, '1 minute') AS m, count(*) AS n, sum(a) AS total, min(a) AS lo, "
    "max(a) AS hi FROM cdc GROUP BY k, m"
)
# Buckets older than two minutes before the watermark go: history spans twelve.
CDC_VIEW = {"sql": CDC_SQL, "grace": "30s", "retention": "2m"}
OLD_CDC = {"sql": "SELECT count(*) AS n FROM cdc"}


def cdc(views: dict[str, Any]) -> Registry:
    config = parse({"sources": {"cdc": SOURCES["cdc"]}, "views": views}, "test.toml")
    out = Registry(config.sources, config.views)
    out.history = frozenset({"cdc"})
    return out


def change_stream() -> list[Batch]:
    """Rows inserted, then some deleted (weight -1) and updated (-1 old, +1 new), over twelve
    minutes of one partition."""
    out: list[Batch] = []
    alive: list[dict[str, Any]] = []
    for i in range(48):
        ts = BASE + i * 15_000
        row = {"ts": ts, "k": f"k{i % 3}", "a": (i * 37) % 101}
        rows, weights = [row], [1]
        alive.append(row)
        if i % 4 == 3:  # delete an older row of the same minute or the one before
            gone = alive.pop(-3)
            rows.append(gone)
            weights.append(-1)
        if i % 5 == 4:  # update the newest: its old image out, its new one in
            old = alive.pop()
            new = {**old, "a": old["a"] + 1000}
            alive.append(new)
            rows += [old, new]
            weights += [-1, 1]
        out.append(Batch("cdc", rows, i + 1, part="t:0", weights=weights))
    return out


def test_a_change_stream_s_history_backfills_with_its_retractions_and_expiry() -> None:
    """A view added over a change stream reads its deletes and updates as retractions, and drops
    the buckets its retention lets go as it reads: it ends equal to a twin defined from the
    start, and says how many events it read."""
    history = change_stream()
    twin = cdc({"v": CDC_VIEW})
    live = cdc({"old": OLD_CDC})
    for batch in history:
        twin.apply(batch)
        live.apply(batch)
    new = parse({"sources": {"cdc": SOURCES["cdc"]}, "views": {"old": OLD_CDC, "v": CDC_VIEW}})
    live.reconfigure(new.views, new.sources)  # as the server does: a field more
    filling = live.backfills["v"]
    filling.began["t:0"] = filling.positions["t:0"] = 0
    for batch in history:
        live.backfill_apply("v", batch)
    assert filling.events == sum(len(b) for b in history)  # the progress a status shows
    assert live.backfill_join("v", "t:0")
    rows = answer(live, "v")[0]
    assert rows == answer(twin, "v")[0]
    # The premises: the retractions change the answer, and most buckets expired.
    unweighted = cdc({"v": CDC_VIEW})
    for batch in history:
        unweighted.apply(Batch("cdc", batch.events, batch.position, part="t:0"))
    assert answer(unweighted, "v")[0] != rows
    assert len({row[1] for row in run(twin.views["v"], Query(limit=1000)).rows}) <= 3


def test_every_change_moves_the_versions_to_a_value_not_seen_before() -> None:
    """Answer caches reuse an answer while its source's ``version`` is unchanged, and the
    snapshot loop snapshots when the registry's moved: a backfill's steps, its join, a
    reconfiguration each move both forward, never back to a value a cache may hold."""
    history = batches(3, 12)
    cfg = config({"old": {"sql": OLD_SQL}})
    live = Registry(cfg.sources, cfg.views)
    live.history = frozenset({"s"})
    seen = [(live.version, live.sources["s"].version)]

    def moved() -> None:
        now = (live.version, live.sources["s"].version)
        assert all(a > b for a, b in zip(now, seen[-1], strict=True)), (now, seen)
        seen.append(now)

    for batch in history[:6]:
        live.apply(batch)
        moved()
    live.reconfigure(config({"old": {"sql": OLD_SQL}, "v": NEW}).views)
    moved()
    for i, batch in enumerate(history[:6]):
        live.backfill_apply("v", batch)
        moved()
        if i == 2:  # a live batch between two steps of history
            live.apply(history[6])
            moved()
    assert live.backfill_join("v", "")
    moved()
    for batch in history[7:]:
        live.apply(batch)
        moved()


def test_a_view_changed_again_while_it_fills_still_says_so() -> None:
    """An added view whose SQL changes again before its backfill is done starts a new backfill:
    its answers are partial and say so until then, and live batches do not reach it before its
    history is read."""
    cfg = config({})
    live = Registry(cfg.sources, cfg.views)
    live.history = frozenset({"s"})
    for batch in batches(4, 5):
        live.apply(batch)
    live.reconfigure(config({"v": {"sql": OLD_SQL}}).views)
    assert live.backfilling("v")
    assert live.backfills["v"].replaces is False  # what /v1/views says of its backfill
    live.reconfigure(config({"v": NEW}).views)
    assert live.views["v"].spec.sql == NEW_SQL
    assert live.backfilling("v")
    assert live.by_source["s"] == []


@pytest.mark.parametrize("history", [True, False])
def test_views_and_sources_added_live_keep_their_bounded_samples(history: bool) -> None:
    """A view added on a running server keeps its newest ``keep`` late events, with their times
    read from its source's time field (what ``/late`` answers); a source added keeps its newest
    ``keep`` rejected events — as those defined from the start do."""
    sources = {"s": SOURCE, "t": {"from": "http", "time": "at"}}
    view = {
        "sql": "SELECT tumble(at, '1 minute') AS m, count(*) AS n FROM t GROUP BY m",
        "grace": "1s",
    }
    cfg = config({})
    live = Registry(cfg.sources, cfg.views, keep=3)
    live.history = frozenset({"t"} if history else ())
    new = parse({"sources": sources, "views": {"v": view}})
    live.reconfigure(new.views, new.sources)
    rejected = [{"line": i, "reason": "bad"} for i in range(5)]
    live.apply(Batch("t", [{"at": BASE + MINUTE}], 1, rejected))
    late = [{"at": BASE + i} for i in range(5)]
    if history:  # its history read (nothing), it joins, then takes live batches
        assert live.backfill_join("v", "")
    live.apply(Batch("t", late, 2))
    assert list(live.sources["t"].rejected_events) == rejected[-3:]
    kept = live.views["v"].late_events()
    assert [e["event"]["at"] for e in kept] == [BASE + 2, BASE + 3, BASE + 4]
    shown = datetime.fromisoformat(_late(kept[-1], live.views["v"].time_field)["event_time"])
    assert shown == datetime.fromtimestamp((BASE + 4) / 1000, UTC)


def filled_part_way(change: bool) -> tuple[Registry, dict[str, Any]]:
    """A registry whose view ``v`` was added (or its SQL changed) and has read 4 of the 8 log
    records it has to read, as the HTTP log's reader leaves it; and the views it then has."""
    history = batches(5, 8)
    before = {"v": {"sql": OLD_SQL}} if change else {"old": {"sql": OLD_SQL}}
    after = {"v": NEW} if change else {"old": {"sql": OLD_SQL}, "v": NEW}
    cfg = config(before)
    live = Registry(cfg.sources, cfg.views)
    live.history = frozenset({"s"})
    for batch in history:
        live.apply(batch)
    live.reconfigure(config(after).views)
    filling = live.backfills["v"]
    assert filling.replaces is change
    filling.began[""] = filling.positions[""] = 0
    for batch in history[:4]:
        live.backfill_apply("v", batch)
    return live, after


@pytest.mark.parametrize("change", [False, True])
def test_a_restart_mid_backfill_of_the_http_log_keeps_its_progress(change: bool) -> None:
    """The HTTP log rides in the main snapshot: a restart goes on from the record it had read,
    with where it began (its progress report), its watermark and the events it read; restarted
    mid-swap, the new definition answers, saying it fills (the old SQL is not in the file)."""
    live, after = filled_part_way(change)
    one = live.backfills["v"]
    cfg = config(after)
    fresh = Registry(cfg.sources, cfg.views)
    fresh.history = frozenset({"s"})
    notes = fresh.load_state(snapshot.decode(snapshot.encode(live.to_state())))
    assert notes == ["view v goes on filling from the retained history"]
    two = fresh.backfills["v"]
    assert (two.began, two.positions, two.watermarks) == ({"": 0}, {"": 4}, one.watermarks)
    assert (two.events, two.replaces) == (one.events, False)
    assert fresh.backfilling("v")


def test_a_restart_mid_swap_with_the_history_turned_off_goes_on_filling() -> None:
    """``retain_events`` turned off across a restart while a changed view fills: the snapshot
    holds its backfill of the new SQL (and the log it still has to read is kept), so the view
    goes on filling — it is not refused as a view whose SQL changed without history."""
    live, after = filled_part_way(True)
    cfg = config(after)
    fresh = Registry(cfg.sources, cfg.views)  # history: none
    fresh.load_state(snapshot.decode(snapshot.encode(live.to_state())))
    assert fresh.backfills["v"].positions == {"": 4}


def test_a_snapshot_from_before_backfills_loads() -> None:
    cfg = config({"old": {"sql": OLD_SQL}})
    live = Registry(cfg.sources, cfg.views)
    for batch in batches(6, 5):
        live.apply(batch)
    state = snapshot.decode(snapshot.encode(live.to_state()))
    del state["backfills"]
    fresh = Registry(cfg.sources, cfg.views)
    assert fresh.load_state(state) == []
    assert answer(fresh, "old") == answer(live, "old")


def test_a_change_taken_back_before_it_filled_drops_its_backfill() -> None:
    live, _ = filled_part_way(True)
    live.reconfigure(config({"v": {"sql": OLD_SQL}}).views)
    assert live.backfills == {}
    assert live.views["v"].spec.sql == OLD_SQL
    assert live.by_source["s"] == [live.views["v"]]


def test_a_restart_without_a_backfilling_view_says_its_backfill_was_dropped() -> None:
    """A view added (filling) and removed from the file while the server was down: the restart
    says so, as it does for a live view removed; nothing of it is loaded."""
    live, _ = filled_part_way(False)
    cfg = config({"old": {"sql": OLD_SQL}})
    fresh = Registry(cfg.sources, cfg.views)
    fresh.history = frozenset({"s"})
    notes = fresh.load_state(snapshot.decode(snapshot.encode(live.to_state())))
    assert notes == ["view v is no longer defined: its backfill was dropped"]
    assert (list(fresh.views), fresh.backfills) == (["old"], {})
