"""A Kafka partition handed over while a view backfills (issue 17 at the partition level): its
part file carries the backfill's progress on it — its state, where its history began, how far it
was read, the watermark it was judged by, whether it had joined — and the next owner resumes
from there. Checked exactly: the owner that resumed ends with the answers of one that never
handed over, and of a twin defined from the start; a partition dropped forgets only its own."""

from __future__ import annotations

from typing import Any

from tests.views.test_backfill import NEW, NEW_SQL, OLD_SQL, answer, batches
from views import snapshot
from views.config import parse
from views.query import all_rows
from views.registry import Batch, Registry

KAFKA = {"from": "kafka", "bootstrap": "x:1", "topic": "t", "group": "g", "time": "ts"}
PARTS = ("t:0", "t:1")


def specs(views: dict[str, Any]) -> Any:
    return parse({"sources": {"s": KAFKA}, "views": views}, "test.toml")


def registry(views: dict[str, Any]) -> Registry:
    cfg = specs(views)
    out = Registry(cfg.sources, cfg.views)
    out.history = frozenset({"s"})
    return out


def histories() -> dict[str, list[Batch]]:
    """Each partition's batches: a backfill test's seeded events, positions per partition."""
    out = {}
    for seed, part in enumerate(PARTS):
        out[part] = [Batch("s", b.events, b.position, part=part) for b in batches(seed + 3, 40)]
    return out


def added(history: dict[str, list[Batch]], live: int) -> Registry:
    """A registry that applied ``live`` batches of each partition, then was given view ``v``
    (backfilling from the history)."""
    out = registry({"old": {"sql": OLD_SQL}})
    for part in PARTS:
        for batch in history[part][:live]:
            out.apply(batch)
    out.reconfigure(specs({"old": {"sql": OLD_SQL}, "v": NEW}).views)
    assert out.backfilling("v")
    begin(out)
    return out


def begin(registry_: Registry) -> None:
    """What the Kafka source does when it starts reading a partition's history for a backfill:
    where that history begins (here before position 1), and nothing read yet."""
    filling = registry_.backfills["v"]
    for part in PARTS:
        filling.began[part] = filling.positions[part] = 0


def test_a_partition_handed_over_mid_backfill_resumes_where_it_was() -> None:
    history = histories()
    live = 30
    one = added(history, live)
    # t:0's history read part way; t:1's read whole and joined
    for batch in history["t:0"][:12]:
        one.backfill_apply("v", batch)
    for batch in history["t:1"][:live]:
        one.backfill_apply("v", batch)
    assert not one.backfill_join("v", "t:1")  # t:0 has not joined: still backfilling
    filling = one.backfills["v"]
    saved = {p: snapshot.decode(snapshot.encode(one.part_state("s", p))) for p in PARTS}
    assert saved["t:0"]["backfills"]["v"]["position"] == 12
    assert saved["t:1"]["backfills"]["v"]["joined"] is True
    # The next owner: the same views, the same backfill begun, nothing read.
    two = added({p: [] for p in PARTS}, 0)
    for part in PARTS:
        notes = two.load_part("s", part, saved[part])
        assert notes == []
    resumed = two.backfills["v"]
    assert resumed.positions == filling.positions == {"t:0": 12, "t:1": live}
    assert resumed.watermarks == filling.watermarks
    assert resumed.began == filling.began
    assert resumed.joined == {"t:1"}
    assert two.sources["s"].positions == one.sources["s"].positions
    # Both go on alike: the rest of t:0's history, a join, then live batches of both.
    for registry_ in (one, two):
        for batch in history["t:0"][12:live]:
            registry_.backfill_apply("v", batch)
        assert registry_.backfill_join("v", "t:0")  # every partition joined: live
        for part in PARTS:
            for batch in history[part][live:]:
                registry_.apply(batch)
    twin = registry({"twin": NEW})
    for part in PARTS:
        for batch in history[part]:
            twin.apply(batch)
    assert answer(two, "v") == answer(one, "v")
    rows, _ = answer(twin, "twin")
    assert answer(two, "v")[0] == rows


def test_live_batches_of_a_joined_partition_count_while_another_still_backfills() -> None:
    """t:1's history read and joined while t:0's is not: t:1's live batches from then on go to
    the filling view too, so once t:0 joins the view answers as a twin defined from the start
    (not as one that missed t:1's batches of the meantime)."""
    history = histories()
    live = 20
    one = added(history, live)
    for batch in history["t:1"][:live]:
        one.backfill_apply("v", batch)
    assert not one.backfill_join("v", "t:1")  # t:0 still reading its history
    for batch in history["t:1"][live:]:  # t:1 goes on live meanwhile
        one.apply(batch)
    for batch in history["t:0"][:live]:
        one.backfill_apply("v", batch)
    assert one.backfill_join("v", "t:0")  # every partition joined: the view is live
    for batch in history["t:0"][live:]:
        one.apply(batch)
    twin = registry({"twin": NEW})
    for part in PARTS:
        for batch in history[part]:
            twin.apply(batch)
    rows, _ = answer(twin, "twin")
    assert answer(one, "v")[0] == rows


def test_a_part_file_of_another_backfill_or_definition_starts_it_over() -> None:
    """Saved under a backfill of other SQL than this owner's: that partition's history is read
    again from the start — nothing of another definition is taken."""
    history = histories()
    one = added(history, 10)
    for batch in history["t:0"][:5]:
        one.backfill_apply("v", batch)
    saved = snapshot.decode(snapshot.encode(one.part_state("s", "t:0")))
    other = dict(NEW, sql=NEW_SQL.replace("x > 2", "x > 3"))
    two = registry({"old": {"sql": OLD_SQL}})
    two.reconfigure(specs({"old": {"sql": OLD_SQL}, "v": other}).views)
    begin(two)
    two.load_part("s", "t:0", saved)
    assert two.backfills["v"].positions == {"t:1": 0}  # t:0 dropped: read from its start
    assert "t:0" not in two.backfills["v"].view.parts
    assert two.sources["s"].positions == {"t:0": 10}  # the live views' state is taken


def test_dropping_a_partition_forgets_only_its_backfill_progress() -> None:
    history = histories()
    one = added(history, 10)
    for part in PARTS:
        for batch in history[part][:4]:
            one.backfill_apply("v", batch)
    before = one.sources["s"].version
    one.drop_part("s", "t:1")
    filling = one.backfills["v"]
    assert filling.positions == {"t:0": 4}  # t:1's progress gone with it
    assert set(filling.watermarks) == set(filling.began) == {"t:0"}
    assert set(filling.view.parts) == {"t:0"}
    assert one.sources["s"].version > before  # cached answers of the source are stale


def test_a_joined_partition_dropped_and_back_waits_for_its_history_again() -> None:
    """A partition that had joined (its live batches went to the filling view) moves away, then
    comes back before the backfill is done: its live batches wait until its history is read
    again — taken before that, the view would count them without what came before."""
    history = histories()
    one = added(history, 10)
    for batch in history["t:1"][:10]:
        one.backfill_apply("v", batch)
    assert not one.backfill_join("v", "t:1")  # t:0 has not joined: still filling
    one.apply(history["t:1"][10])
    filling = one.backfills["v"]
    assert "t:1" in filling.view.parts
    one.drop_part("s", "t:1")
    assert filling.joined == set()
    one.apply(history["t:1"][11])  # t:1 back: its live batches, not its history, arrive first
    assert "t:1" not in filling.view.parts


def test_a_part_whose_history_is_not_begun_is_saved_without_the_backfill() -> None:
    history = histories()
    one = added(history, 10)
    del one.backfills["v"].began["t:1"], one.backfills["v"].positions["t:1"]
    assert "v" in one.part_state("s", "t:0")["backfills"]
    assert one.part_state("s", "t:1")["backfills"] == {}


def test_a_part_file_from_before_backfills_loads() -> None:
    """Part files written before backfills existed have no ``backfills``: the live views' state
    loads, and a backfill running now reads that partition from its start."""
    history = histories()
    one = registry({"old": {"sql": OLD_SQL}})
    for batch in history["t:0"][:10]:
        one.apply(batch)
    saved = snapshot.decode(snapshot.encode(one.part_state("s", "t:0")))
    del saved["backfills"]
    two = added({p: [] for p in PARTS}, 0)
    assert two.load_part("s", "t:0", saved) == []
    assert answer(two, "old") == answer(one, "old")
    assert two.backfills["v"].positions == {"t:1": 0}


def test_a_part_installed_restores_its_own_source_s_backfill_past_another_s() -> None:
    """Two sources, each with a view backfilling: a part of the second restores the second's
    progress (the first's backfill, met first, is not its)."""
    views = {"a_old": {"sql": OLD_SQL.replace("FROM s", "FROM r")}, "old": {"sql": OLD_SQL}}
    both = dict(views, a=dict(NEW, sql=NEW_SQL.replace("FROM s", "FROM r")), v=NEW)

    def two_sources(spec: dict[str, Any]) -> Any:
        return parse({"sources": {"r": dict(KAFKA, topic="r"), "s": KAFKA}, "views": spec}, "t")

    def with_old_views() -> Registry:
        cfg = two_sources(views)
        out = Registry(cfg.sources, cfg.views)
        out.history = frozenset({"r", "s"})
        return out

    one = with_old_views()
    history = histories()
    for batch in history["t:0"][:10]:
        one.apply(batch)
    one.reconfigure(two_sources(both).views)
    assert list(one.backfills) == ["a", "v"]  # the other source's backfill comes first
    begin(one)
    for batch in history["t:0"][:6]:
        one.backfill_apply("v", batch)
    saved = snapshot.decode(snapshot.encode(one.part_state("s", "t:0")))
    two = with_old_views()
    two.reconfigure(two_sources(both).views)
    begin(two)
    two.load_part("s", "t:0", saved)
    assert two.backfills["v"].positions["t:0"] == 6


def test_a_restart_mid_backfill_of_a_kafka_source_reads_its_partitions_again() -> None:
    """Kafka's partitions are saved apart: a snapshot holds the backfill without progress, and
    the restarted registry's source begins each partition's history anew."""
    history = histories()
    one = added(history, 10)
    for batch in history["t:0"][:4]:
        one.backfill_apply("v", batch)
    for batch in history["t:1"][:10]:
        one.backfill_apply("v", batch)
    assert not one.backfill_join("v", "t:1")
    state = snapshot.decode(snapshot.encode(one.to_state({}, frozenset({"s"}))))
    two = registry({"old": {"sql": OLD_SQL}, "v": NEW})
    assert two.load_state(state) == ["view v goes on filling from the retained history"]
    filling = two.backfills["v"]
    # no progress at all: not how far, nor the watermarks it judged by, nor which joined (t:1's
    # live batches would reach it before its history), nor the events it read
    assert (filling.positions, filling.watermarks, filling.joined) == ({}, {}, set())
    assert (filling.began, filling.events, filling.replaces) == ({}, 0, False)
    begin(two)  # the source starts reading the history again
    for batch in history["t:0"][:10]:
        two.backfill_apply("v", batch)
    assert two.backfills["v"].positions["t:0"] == 10


def test_compacting_a_partition_compacts_its_backfills_too() -> None:
    """Before a part file is encoded in a worker thread, the event loop renumbers the pairs of
    every view of the source, the backfilling ones included (the thread's compaction would
    otherwise renumber them under a query)."""
    history = histories()
    one = registry({"old": {"sql": OLD_SQL}})
    for batch in history["t:0"]:
        one.apply(batch)
    retained = dict(NEW, retention="4m")  # a few minutes expire: under half of the ids
    one.reconfigure(specs({"old": {"sql": OLD_SQL}, "v": retained}).views)
    begin(one)
    for batch in history["t:0"]:
        one.backfill_apply("v", batch)  # old minutes expire: dead pair ids are left behind
    pairs = one.backfills["v"].view.parts["t:0"].pairs
    assert len(pairs) > pairs.count
    one.compact_part("s", "t:0")
    pairs = one.backfills["v"].view.parts["t:0"].pairs
    assert len(pairs) == pairs.count


def test_compacting_a_partition_the_backfill_has_not_reached() -> None:
    """The live views hold both partitions, the backfill only the one it began reading: a
    hand-over of the other compacts it in the live views and leaves the backfill as it was."""
    history = histories()
    one = registry({"old": {"sql": OLD_SQL}})
    for part in PARTS:
        for batch in history[part]:
            one.apply(batch)
    one.reconfigure(specs({"old": {"sql": OLD_SQL}, "v": NEW}).views)
    filling = one.backfills["v"]
    filling.began["t:0"] = filling.positions["t:0"] = 0
    for batch in history["t:0"][:5]:
        one.backfill_apply("v", batch)
    assert set(filling.view.parts) == {"t:0"}
    before = all_rows(one.views["old"])
    one.compact_part("s", "t:1")
    assert set(filling.view.parts) == {"t:0"}
    assert all_rows(one.views["old"]) == before
