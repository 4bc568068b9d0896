"""Pathway: revenue by country per minute from Kafka.
``python pathway_shop.py BOOTSTRAP TOPIC N``"""

import json
import os
import sys
import time as clock

import pathway as pw

bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Order(pw.Schema):
    ts: int
    country: str
    amount: float


orders = pw.io.kafka.read(
    rdkafka_settings={
        "bootstrap.servers": bootstrap,
        "group.id": f"pathway-{os.getpid()}",
        "auto.offset.reset": "earliest",
    },
    topic=topic,
    format="json",
    schema=Order,
    autocommit_duration_ms=200,
)
revenue = orders.windowby(
    orders.ts, window=pw.temporal.tumbling(duration=60_000), instance=orders.country
).reduce(
    country=pw.this._pw_instance,
    minute=pw.this._pw_window_start,
    n=pw.reducers.count(),
    total=pw.reducers.sum(pw.this.amount),
    biggest=pw.reducers.max(pw.this.amount),
)
state: dict[str, float] = {}
groups: dict[object, tuple[int, float]] = {}


def on_group(key, row, time, is_addition):  # pathway passes these by name
    state.setdefault("first", clock.perf_counter())
    if is_addition:
        groups[key] = (row["n"], row["total"])
    elif groups.get(key) == (row["n"], row["total"]):
        del groups[key]


def on_time_end(time):
    counted = sum(c for c, _ in groups.values())
    if counted < n:
        return
    result = {
        "peer": "pathway",
        "version": pw.__version__,
        "events": counted,
        "seconds": clock.perf_counter() - state["first"],
        "groups": len(groups),
        "total": sum(t for _, t in groups.values()),
    }
    print(json.dumps(result), flush=True)
    os._exit(0)


pw.io.subscribe(revenue, on_change=on_group, on_time_end=on_time_end)
pw.run(monitoring_level=pw.MonitoringLevel.NONE)
