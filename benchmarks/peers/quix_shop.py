"""Quix Streams: revenue by country per minute from Kafka (records keyed by country).
``python quix_shop.py BOOTSTRAP TOPIC N STATE_DIR``"""

import json
import os
import sys
import time

import quixstreams
from quixstreams import Application
from quixstreams.dataframe.windows import Count, Max, Sum

bootstrap, topic, n, state_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
app = Application(
    broker_address=bootstrap,
    consumer_group=f"quix-{os.getpid()}",
    auto_offset_reset="earliest",
    state_dir=state_dir,
    use_changelog_topics=False,
)
orders = app.topic(
    topic,
    value_deserializer="json",
    timestamp_extractor=lambda value, headers, ts, kind: value["ts"],
)
sdf = app.dataframe(orders)
seen = {"n": 0, "counted": 0}
groups: dict[tuple[str, int], tuple[int, float]] = {}
state: dict[str, float] = {}


def count(value: dict) -> None:
    state.setdefault("first", time.perf_counter())
    seen["n"] += 1


sdf = sdf.update(count)
windows = (
    sdf.tumbling_window(60_000, grace_ms=0)
    .agg(n=Count(), total=Sum("amount"), biggest=Max("amount"))
    .current()
)


def keep(value: dict, key: bytes, timestamp: int, headers: object) -> None:
    before = groups.get((key, value["start"]), (0, 0.0))[0]
    groups[(key, value["start"])] = (value["n"], value["total"])
    seen["counted"] += value["n"] - before
    if seen["counted"] >= n:
        result = {
            "peer": "quixstreams",
            "version": quixstreams.__version__,
            "events": sum(c for c, _ in groups.values()),
            "seconds": time.perf_counter() - state["first"],
            "groups": len(groups),
            "total": sum(t for _, t in groups.values()),
        }
        print(json.dumps(result), flush=True)
        os._exit(0)


windows.update(keep, metadata=True)
app.run()
