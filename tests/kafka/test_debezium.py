"""Acceptance 3: a Debezium change stream with inserts, updates (rows moving between groups and
windows), deletes and tombstones; answers equal the reference over the final table contents.

Row path only, and not parametrized over ``ingest_path`` on purpose: retractions take only the
row path today (``ChangeDecoder.table`` reads plain ``json`` records only, and
``views.columns.columnar`` refuses retracting views), so a ``columns`` case would run the row
path a second time. When change streams go column-wise, this is the test to parametrize."""

from __future__ import annotations

import math
import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests import reference as ref
from tests.helpers import BASE_TS, fetch_all, running, until
from tests.kafka.broker import create_topic, produce
from views.config import ConfigError, parse

HOUR = 3_600_000


def config(bootstrap: str, topic: str) -> str:
    return f"""
[sources.accounts]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{topic}"
group = "g{uuid.uuid4().hex[:8]}"
format = "debezium"
time = "ts"

[views.by_group]
sql = '''SELECT grp, count(*) AS n, sum(amount) AS total, avg(amount) AS mean, min(amount) AS lo,
         max(amount) AS hi, count_distinct(owner) AS owners, p50(amount) AS median
         FROM accounts GROUP BY grp'''

[views.per_hour]
sql = '''SELECT grp, tumble(ts, '1 hour') AS hour, count(*) AS n, sum(amount) AS total
         FROM accounts WHERE amount > 10 GROUP BY grp, hour'''
grace = "30d"
"""


def change_stream(seed: int) -> tuple[list[tuple[int, Any]], dict[int, dict[str, Any]], int]:
    """(partition, value) records keyed by row id (a row's changes stay in order on one
    partition, as Debezium's keying guarantees), the final table, and the poison count."""
    rng = random.Random(seed)
    table: dict[int, dict[str, Any]] = {}
    records: list[tuple[int, Any]] = []
    next_id = 0

    def row(i: int) -> dict[str, Any]:
        return {
            "id": i,
            "ts": BASE_TS + rng.randrange(48 * HOUR),
            "grp": rng.choice("abcd"),
            "amount": rng.choice([rng.randrange(1, 500), round(rng.uniform(1, 500), 2)]),
            "owner": f"o{rng.randrange(40)}",
        }

    for _ in range(200):  # the initial snapshot: op r
        table[next_id] = row(next_id)
        records.append(
            (next_id % 2, {"payload": {"op": "r", "before": None, "after": table[next_id]}})
        )
        next_id += 1
    for _ in range(1500):
        roll = rng.random()
        if roll < 0.3 or not table:
            table[next_id] = row(next_id)
            records.append((next_id % 2, {"op": "c", "before": None, "after": table[next_id]}))
            next_id += 1
        elif roll < 0.8:
            i = rng.choice(sorted(table))
            before = table[i]
            after = dict(before, amount=row(i)["amount"])
            if rng.random() < 0.4:
                after["grp"] = rng.choice("abcd")  # moves between groups
            if rng.random() < 0.2:
                after["ts"] = row(i)["ts"]  # moves between windows
            table[i] = after
            records.append((i % 2, {"op": "u", "before": before, "after": after}))
        else:
            i = rng.choice(sorted(table))
            records.append((i % 2, {"op": "d", "before": table.pop(i), "after": None}))
            records.append((i % 2, None))  # the tombstone that follows a delete
    poison = [
        (0, b"{not json"),
        (1, {"op": "u", "before": None, "after": row(0)}),
        (0, {"op": "x"}),
        (1, {"op": "c", "after": {"id": 1, "grp": "a"}}),
    ]
    at = sorted(rng.sample(range(len(records)), len(poison)), reverse=True)
    for position, record in zip(at, poison, strict=True):
        records.insert(position, record)
    return records, table, len(poison)


async def consumed(
    engine: Any, source: str, counts: dict[int, int], topic: str, timeout: float
) -> None:
    want = {f"{topic}:{p}": n for p, n in counts.items()}

    async def reached() -> bool:
        return bool(engine.registry.sources[source].positions == want)

    await until(reached, timeout)


@pytest.mark.asyncio
async def test_change_stream_matches_final_table(kafka: str, tmp_path: Path) -> None:
    topic = await create_topic(kafka, 2)
    records, table, poison = change_stream(seed=5)
    counts = await produce(kafka, topic, records)
    async with running(config(kafka, topic), tmp_path) as (client, engine):
        await consumed(engine, "accounts", counts, topic, 60)
        rows = list(table.values())
        expected = []
        for (_, grp), group in ref.group(rows, lambda e: True, ["grp"], None).items():
            amounts = [r["amount"] for r in group]
            expected.append(
                {
                    "grp": grp,
                    "n": len(group),
                    "total": ref.fsum_or_none(amounts),
                    "mean": ref.avg(amounts),
                    "lo": min(amounts),
                    "hi": max(amounts),
                    "owners": len({r["owner"] for r in group}),
                    "median": sorted(amounts)[math.floor(0.5 * (len(amounts) - 1))],
                }
            )
        assert await fetch_all(client, "/v1/views/by_group") == sorted(
            expected, key=lambda r: r["grp"]
        )
        hourly = []
        for r in rows:
            r["_ts"] = r["ts"]
        big = [r for r in rows if r["amount"] > 10]
        for (start, grp), group in ref.group(
            big, lambda e: True, ["grp"], ref.tumble(HOUR)
        ).items():
            hourly.append(
                {
                    "grp": grp,
                    "hour": ref.iso(start),
                    "n": len(group),
                    "total": ref.fsum_or_none([r["amount"] for r in group]),
                }
            )
        hourly.sort(key=lambda r: (r["hour"], r["grp"]))
        assert await fetch_all(client, "/v1/views/per_hour", limit="1000") == hourly
        stats = {
            v["name"]: v["stats"] for v in (await (await client.get("/v1/views")).json())["views"]
        }
        assert stats["by_group"]["unmatched"] == 0
        assert stats["by_group"]["late"] == 0
        kept = await (await client.get("/v1/sources/accounts/rejected")).json()
        assert kept["rejected"] == poison  # counted and kept with where they were
        assert {e["part"] for e in kept["events"]} <= {f"{topic}:0", f"{topic}:1"}
        assert all(isinstance(e["offset"], int) for e in kept["events"])
        assert any("REPLICA IDENTITY FULL" in e["reason"] for e in kept["events"])


def test_approximate_aggregates_are_refused_on_change_streams() -> None:
    for agg in ("approx_count_distinct(owner)", "top_k(owner, 3)"):
        raw = {
            "sources": {
                "a": {
                    "from": "kafka",
                    "bootstrap": "x:1",
                    "topic": "t",
                    "group": "g",
                    "format": "debezium",
                    "time": "ts",
                }
            },
            "views": {"v": {"sql": f"SELECT {agg} AS x FROM a"}},
        }
        with pytest.raises(
            ConfigError,
            match=r"view 'v': field 'sql': .* is a change stream "
            r"\(format 'debezium'\)",
        ):
            parse(raw, "c.toml")
