"""DuckDB answering the query targets' questions from the raw events, each time, in process.
``python duckdb_shop.py N NOW_MS`` (the same N orders over the hour before NOW as tallyd holds)"""

import json
import random
import sys
import tempfile
import time

import duckdb

from api.shop import COUNTRIES
from benchmarks.shop import events

MINUTE = 60_000
n, now = int(sys.argv[1]), int(sys.argv[2])
con = duckdb.connect()
with tempfile.NamedTemporaryFile("w", suffix=".ndjson") as raw:
    for e in events(seed=9, n=n, start=now - 3_600_000, step_ms=3_600_000 / n):
        raw.write(json.dumps(e) + "\n")
    raw.flush()
    con.execute(
        "CREATE TABLE orders AS SELECT * FROM read_json(?, columns = {ts: 'BIGINT', "
        "user_id: 'VARCHAR', country: 'VARCHAR', device: 'VARCHAR', product: 'VARCHAR', "
        "amount: 'DOUBLE', latency_ms: 'DOUBLE'})",
        [raw.name],
    )
hour_end = now - now % MINUTE
questions = {
    "point": (
        "SELECT count(*), sum(amount), avg(amount), max(amount) FROM orders"
        " WHERE country = ? AND ts >= ? AND ts < ?",
        lambda c, m: [c, m, m + MINUTE],
    ),
    "series": (
        "SELECT ts - ts % 60000 AS minute, count(*), sum(amount), avg(amount), max(amount)"
        " FROM orders WHERE country = ? AND ts >= ? AND ts < ? GROUP BY minute ORDER BY minute",
        lambda c, m: [c, hour_end - 60 * MINUTE, hour_end],
    ),
    "top": (
        "SELECT product, count(*) AS n FROM orders GROUP BY product ORDER BY n DESC LIMIT 10",
        lambda c, m: [],
    ),
}
rng = random.Random(11)
out = {"peer": "duckdb", "version": duckdb.__version__, "events": n}
for kind, (sql, params) in questions.items():
    times = []
    for _ in range(200):
        c, m = rng.choice(COUNTRIES[:10]), hour_end - MINUTE * rng.randrange(1, 60)
        t = time.perf_counter()
        con.execute(sql, params(c, m)).fetchall()
        times.append(time.perf_counter() - t)
    times.sort()
    out[kind] = {
        "p50_ms": 1000 * times[len(times) // 2],
        "p99_ms": 1000 * times[int(len(times) * 0.99)],
        "per_s": len(times) / sum(times),
    }
print(json.dumps(out), flush=True)
