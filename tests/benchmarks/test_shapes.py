"""The input shapes of benchmarks/shapes.py are what they say, and each is read column-wise by
the engine and counted exactly (the benchmark's own checks, on small bodies)."""

from __future__ import annotations

import random
import time
from datetime import datetime

import orjson
import pytest

from benchmarks import flights, shapes


@pytest.mark.parametrize("shape", shapes.SHAPES, ids=[s.name for s in shapes.SHAPES])
def test_every_shape_is_read_column_wise_and_counted(shape: shapes.Shape) -> None:
    lines = shapes.bodies(shape, int(time.time() * 1000), count=2, batch=300)
    figures = shapes.engine(shape, lines, passes=1)  # asserts every event counted once
    assert figures["events"] == 600


def test_the_shapes_write_what_they_name() -> None:
    now = int(time.time() * 1000)
    first = {s.name: orjson.loads(shapes.bodies(s, now, 1, 200)[0][0]) for s in shapes.SHAPES}
    assert isinstance(first["epoch_ms"]["ts"], int)
    assert isinstance(first["epoch_s"]["ts"], float)
    assert first["epoch_s"]["ts"] < 1e11
    assert first["rfc3339_z"]["ts"].endswith("Z")
    assert first["rfc3339_offset"]["ts"].endswith("-05:00")
    stamp = datetime.fromisoformat(first["rfc3339_offset"]["ts"]).timestamp()
    assert int(stamp * 1000) == first["epoch_ms"]["ts"]  # the same instant, written otherwise
    assert first["debezium"]["op"] == "c"
    changes = [
        orjson.loads(line)["op"] for line in shapes.bodies(shapes.SHAPES[-1], now, 1, 400)[0]
    ]
    assert {"c", "u", "d"} <= set(changes)


def test_a_flight_becomes_the_event_the_workload_describes() -> None:
    row = {
        "carrier": "UA", "flight": "1545", "origin": "EWR", "dest": "IAH", "tailnum": "NA",
        "dep_time": "NA", "sched_dep_time": "515", "dep_delay": "NA", "arr_time": "830",
        "arr_delay": "11", "air_time": "227", "distance": "1400",
        "time_hour": "2013-01-01T10:00:00Z",
    }  # fmt: skip
    seen = [flights.event(row, 7, random.Random(seed)) for seed in range(40)]
    times = {e["time_hour"] for e in seen}
    assert times == {"2013-01-01T10:00:00Z", "2013-01-01T05:00:00-05:00"}  # one instant
    for e in seen:
        assert "tailnum" not in e  # absent, not null
        assert e["dep_delay"] is None
        assert e["dep_time"] is None
        assert e["distance"] == 1400
        if e["air_time"] is not None:
            assert e["air_hours"] == 3.78
            assert e["speed"] == 370.0
    assert any(e["arr_delay"] is None for e in seen)  # one in ten not landed yet
