"""Bytewax: revenue by country per minute from Kafka; stops at the end of the topic.
``python bytewax_shop.py BOOTSTRAP TOPIC N``"""

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import version

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
groups: dict[tuple[str, int], tuple[int, float]] = {}
state: dict[str, float] = {}


class Keep(StatelessSinkPartition):
    def write_batch(self, items: list) -> None:
        for country, (window, acc) in items:
            groups[(country, window)] = (acc[0], acc[1])


class KeepSink(DynamicSink):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> Keep:
        return Keep()


def parse(msg: object) -> dict:
    state.setdefault("first", time.perf_counter())
    return json.loads(msg.value)  # type: ignore[attr-defined]


flow = Dataflow("shop")
raw = op.input("in", flow, KafkaSource([bootstrap], [topic], tail=False, batch_size=5000))
orders = op.map("parse", raw, parse)
keyed = op.key_on("country", orders, lambda e: e["country"])
clock = win.EventClock(
    lambda e: datetime.fromtimestamp(e["ts"] / 1000, UTC),
    wait_for_system_duration=timedelta(minutes=10),
)
windower = win.TumblingWindower(
    length=timedelta(minutes=1), align_to=datetime(2020, 1, 1, tzinfo=UTC)
)


def fold(acc: list, e: dict) -> list:
    acc[0] += 1
    acc[1] += e["amount"]
    acc[2] = max(acc[2], e["amount"])
    return acc


def merge(a: list, b: list) -> list:
    return [a[0] + b[0], a[1] + b[1], max(a[2], b[2])]


out = win.fold_window(
    "revenue", keyed, clock, windower, lambda: [0, 0.0, float("-inf")], fold, merge
)
op.output("keep", out.down, KeepSink())
run_main(flow)
result = {
    "peer": "bytewax",
    "version": version("bytewax"),
    "events": sum(c for c, _ in groups.values()),
    "seconds": time.perf_counter() - state["first"],
    "groups": len(groups),
    "total": sum(t for _, t in groups.values()),
}
print(json.dumps(result), flush=True)
