"""Every input shape through the one engine: the same orders (``benchmarks/shop.py``) written the
ways real producers write them, into a revenue-by-country-per-minute view.

    python -m benchmarks.shapes [--seconds S] [--no-http]

Two figures per shape, from one run:

* **engine**: decode (NDJSON → columns) and apply (columns → view state) in this process, one
  core, over the same four 50,000-event bodies, best of three passes;
* **HTTP**: a real ``tallyd serve`` on 127.0.0.1, two clients posting those bodies back to back
  for ``--seconds``, fsync + apply before each 200 (the Debezium shape is Kafka-only: its
  engine figure is the Kafka source's decoder).

Every body keeps its events within ten minutes, inside the views' one-hour grace, so posting the
same bodies again is never late: each shape counts every event it is sent, checked at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from benchmarks.server import ServerProcess, post_bodies
from benchmarks.shop import event
from views.batch import Columns

BASE_SQL = """SELECT country, tumble(ts, '1 minute') AS m, count(*) AS n, sum(amount) AS revenue,
    avg(latency_ms) AS latency, max(amount) AS biggest FROM s GROUP BY country, m"""
FIELDS = {"user_id": "string", "country": "string", "device": "string", "product": "string"}
SPREAD_MS = 600_000  # every body's events fall within ten minutes
OFFSET = timezone(timedelta(hours=-5))

Event = dict[str, Any]


def _rfc3339(ms: int, zone: timezone = UTC) -> str:
    moment = datetime.fromtimestamp(ms / 1000, zone)
    text = moment.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _nulls(e: Event, rng: random.Random) -> Event:
    """~10 % NULLs in each number, a device absent from one event in twenty."""
    if rng.random() < 0.1:
        e["amount"] = None
    if rng.random() < 0.1:
        e["latency_ms"] = None
    if rng.random() < 0.05:
        del e["device"]
    return e


class _Table:
    """The orders table a Debezium connector watches: inserts, and updates and deletes of rows
    inserted before (so every retraction finds what it retracts)."""

    def __init__(self) -> None:
        self.rows: list[Event] = []

    def change(self, e: Event, rng: random.Random) -> Event:
        draw = rng.random()
        source = {"ts_ms": e["ts"], "table": "orders"}
        if draw < 0.75 or not self.rows:
            self.rows.append(e)
            return {"op": "c", "before": None, "after": e, "source": source}
        i = rng.randrange(len(self.rows))
        before = self.rows[i]
        if draw < 0.95:
            after = {**before, "amount": round(before["amount"] * 0.9, 2)}
            self.rows[i] = after
            return {"op": "u", "before": before, "after": after, "source": source}
        self.rows[i] = self.rows[-1]
        self.rows.pop()
        return {"op": "d", "before": before, "after": None, "source": source}


@dataclass
class Shape:
    name: str
    what: str
    sql: str = BASE_SQL
    write: Callable[[Event, random.Random], Event] | None = lambda e, rng: e
    source: dict[str, Any] = field(default_factory=dict)
    view: dict[str, Any] = field(default_factory=dict)
    http: bool = True
    windows: int = 1  # windows each event is counted in

    def config(self) -> dict[str, Any]:
        source = {"time": "ts", "fields": FIELDS, **self.source}
        view = {"sql": self.sql, "retention": "1d", "grace": "1h", **self.view}
        return {"sources": {"s": source}, "views": {"v": view}}

    def toml(self) -> str:
        raw = self.config()
        source, view = raw["sources"]["s"], raw["views"]["v"]
        lines = ["[server]", 'snapshot_every = "30s"', "", "[sources.s]"]
        lines += [f"{k} = {_toml(v)}" for k, v in source.items()]
        lines += ["", "[views.v]"] + [f"{k} = {_toml(v)}" for k, v in view.items()]
        return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, str):
        return "'''" + value + "'''" if "\n" in value else f'"{value}"'
    return str(value)


SHAPES = [
    Shape("epoch_ms", "integer epoch milliseconds"),
    Shape(
        "epoch_s",
        "float epoch seconds (1790000000.123)",
        write=lambda e, rng: {**e, "ts": e["ts"] / 1000},
    ),
    Shape(
        "rfc3339_z",
        'RFC 3339 UTC ("2026-12-01T15:04:05.123Z")',
        write=lambda e, rng: {**e, "ts": _rfc3339(e["ts"])},
    ),
    Shape(
        "rfc3339_offset",
        'RFC 3339 with an offset ("...T10:04:05.123-05:00")',
        write=lambda e, rng: {**e, "ts": _rfc3339(e["ts"], OFFSET)},
    ),
    Shape("nulls", "10 % NULL numbers, absent fields", write=_nulls),
    Shape(
        "hop",
        "hop window: 5 minutes every minute (5 windows per event)",
        sql=BASE_SQL.replace("tumble(ts, '1 minute')", "hop(ts, '5 minutes', '1 minute')"),
        windows=5,
    ),
    Shape(
        "expression",
        "WHERE ... IN ... AND ... IS NOT NULL, sum(a * b - c)",
        sql="""SELECT country, tumble(ts, '1 minute') AS m, count(*) AS n,
            sum(amount * 1.2 - latency_ms / 100) AS adjusted, avg(amount) AS mean
            FROM s WHERE amount > 5 AND device IN ('ios', 'android', 'web')
            AND latency_ms IS NOT NULL GROUP BY country, m""",
        write=_nulls,
    ),
    Shape(
        "max_groups",
        "a view past max_groups: 1,000 of ~1M users kept, the rest folded",
        sql="""SELECT user_id, tumble(ts, '1 minute') AS m, count(*) AS n, sum(amount) AS s
            FROM s GROUP BY user_id, m""",
        view={"max_groups": 1000},
    ),
    Shape(
        "debezium",
        "Debezium change stream: 75 % inserts, 20 % updates, 5 % deletes (Kafka)",
        write=None,  # the changes of a table: _Table
        source={
            "from": "kafka",
            "format": "debezium",
            "topic": "t",
            "group": "g",
            "bootstrap": "127.0.0.1:1",
        },
        http=False,
    ),
]


def bodies(shape: Shape, now_ms: int, count: int = 4, batch: int = 50_000) -> list[list[bytes]]:
    """``count`` bodies of ``batch`` events (lines), the same orders for every shape."""
    rng = random.Random(21)
    start = now_ms - SPREAD_MS - 60_000
    write = shape.write or _Table().change
    out = []
    for _ in range(count):
        lines = []
        for _ in range(batch):
            e = event(rng, start + rng.randrange(SPREAD_MS))
            lines.append(orjson.dumps(write(e, rng)))
        out.append(lines)
    return out


def weight(line: bytes) -> int:
    """What a line adds to count(*): a change event +1 per after row, -1 per before row."""
    if b'"op"' not in line:
        return 1
    change = orjson.loads(line)
    return (change["after"] is not None) - (change["before"] is not None)


def engine(shape: Shape, lines: list[list[bytes]], passes: int = 3) -> dict[str, Any]:
    """Decode and apply in this process, each timed apart; best of ``passes``."""
    from ingest.changes import ChangeDecoder
    from ingest.decode import Decoder
    from views.config import parse
    from views.query import all_rows
    from views.registry import Batch, Registry

    config = parse(shape.config(), shape.name)
    spec = config.sources["s"]
    decoder = Decoder(spec, 1 << 20)
    changes = ChangeDecoder(decoder, spec.format, False)
    payloads = [b"\n".join(body) + b"\n" for body in lines]
    events = sum(len(body) for body in lines)
    best: dict[str, float] = {}
    for _ in range(passes):
        registry = Registry(config.sources, config.views)
        began = time.perf_counter()
        read: list[tuple[Columns | None, np.ndarray | None] | None]
        if shape.http:
            read = [(decoder.columns(p), None) for p in payloads]
        else:
            read = [changes.columns(list[bytes | None](body)) for body in lines]
        decoded = time.perf_counter()
        for position, item in enumerate(read, start=1):
            assert item is not None, f"{shape.name}: not read column-wise"
            columns, weights = item
            assert columns is not None, f"{shape.name}: not read column-wise"
            registry.apply(Batch("s", [], position, columns=columns, weights=weights))
        applied = time.perf_counter()
        for key, seconds in (("decode", decoded - began), ("apply", applied - decoded)):
            best[key] = min(best.get(key, seconds), seconds)
    counted = sum(int(values[0]) for values in all_rows(registry.views["v"]).values())
    expected = shape.windows * sum(weight(line) for body in lines for line in body)
    if shape.name == "expression":
        expected = counted  # filtered: checked against the reference in the tests
    assert counted == expected, (shape.name, counted, expected)
    return {
        "events": events,
        "decode_per_s": events / best["decode"],
        "apply_per_s": events / best["apply"],
        "engine_per_s": events / (best["decode"] + best["apply"]),
    }


async def http(shape: Shape, lines: list[list[bytes]], seconds: float, tmp: Path) -> dict[str, Any]:
    path = tmp / f"{shape.name}.toml"
    path.write_text(shape.toml())
    server = ServerProcess(path, tmp / f"{shape.name}-data", tmp / f"{shape.name}.log")
    await server.start(timeout=120)
    payloads = [b"\n".join(body) + b"\n" for body in lines]
    try:
        async with aiohttp.ClientSession() as session:
            stop_at = time.perf_counter() + seconds
            sent = 0

            def next_body() -> bytes | None:
                nonlocal sent
                sent += 1
                return payloads[sent % len(payloads)] if time.perf_counter() < stop_at else None

            url = f"{server.url}/v1/sources/s/events"
            accepted, elapsed, _ = await post_bodies(session, url, next_body)
            async with session.get(f"{server.url}/v1/status") as r:
                view = (await r.json())["views"]["v"]
    finally:
        server.terminate()
    assert view["late"] == 0, view
    if shape.name != "expression":  # every event applied once (the filter drops some)
        assert view["applied"] == accepted, (shape.name, view, accepted)
    return {"http_per_s": accepted / elapsed, "accepted": accepted}


async def run(seconds: float, with_http: bool) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in SHAPES:
            lines = bodies(shape, now)
            row: dict[str, Any] = {"shape": shape.name, "what": shape.what}
            row |= engine(shape, lines)
            if with_http and shape.http:
                row |= await http(shape, lines, seconds, Path(tmp))
            print(row, flush=True)
            out.append(row)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    fastest = max(r["engine_per_s"] for r in rows)
    fastest_http = max((r["http_per_s"] for r in rows if "http_per_s" in r), default=None)
    lines = [
        "| shape | decode | apply | engine (both) | vs fastest | HTTP end to end | vs fastest |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        # not measured over HTTP: a Kafka-only shape, or a run with --no-http
        http_cells = "not run | n/a" if fastest_http is None else "Kafka only | n/a"
        if "http_per_s" in r and fastest_http:
            http_cells = f"{r['http_per_s'] / 1000:,.0f}k | {r['http_per_s'] / fastest_http:.2f}"
        lines.append(
            f"| {r['shape']}: {r['what']} | {r['decode_per_s'] / 1000:,.0f}k "
            f"| {r['apply_per_s'] / 1000:,.0f}k | {r['engine_per_s'] / 1000:,.0f}k "
            f"| {r['engine_per_s'] / fastest:.2f} | {http_cells} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shapes", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="HTTP posting per shape")
    parser.add_argument("--no-http", dest="http", action="store_false")
    parser.add_argument("--out", type=Path, default=Path("bench-reports"))
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.seconds, args.http))
    print(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shapes.json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
