"""Acceptance 2: seeded events streamed over HTTP in random-sized batches (NDJSON, JSON arrays,
gzip) — and in bodies large enough for the column-wise path — every view and rollup compared
with the independent plain-Python reference."""

from __future__ import annotations

import gzip
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.columnar import MIN_LINES
from tests import reference as ref
from tests.helpers import TABLE_MIN_LINES, IngestPath, fetch_all, ndjson, order_events, running

CONFIG = """
[sources.orders]
time = "ts"

[views.by_country]
sql = '''
SELECT country, tumble(ts, '5 minutes') AS minute,
       count(*) AS n, count(coupon) AS with_coupon, sum(amount) AS revenue,
       avg(amount) AS avg_amount, min(amount) AS lo, max(amount) AS hi,
       count_distinct(user_id) AS users, approx_count_distinct(user_id) AS users_approx,
       p90(amount) AS p90, top_k(product, 3) AS top
FROM orders WHERE status = 'paid' AND amount > 1 GROUP BY country, minute
'''
grace = "1h"

[views.hopping]
sql = '''
SELECT device, hop(ts, '10 minutes', '5 minutes') AS w, count(*) AS n, sum(price * qty) AS total
FROM orders WHERE (status IN ('paid', 'refunded') OR qty >= 3) AND coupon IS NULL
GROUP BY device, w
'''
grace = "1h"

[views.totals]
sql = '''SELECT status, country, count(*) AS n, sum(amount) AS revenue
         FROM orders GROUP BY status, country'''

[views.everything]
sql = "SELECT count(*) AS n, sum(qty) AS items FROM orders WHERE NOT status = 'failed'"
"""

N_EVENTS = 12_000
FIVE_MIN = 300_000


def paid(e: dict[str, Any]) -> bool:
    return e["status"] == "paid" and e.get("amount") is not None and e["amount"] > 1


def by_country_rows(
    events: list[dict[str, Any]], keys: list[str], bucket: int | None, collapse: bool = False
) -> list[dict[str, Any]]:
    windows = None if collapse else ref.tumble(bucket or FIVE_MIN)
    rows = []
    for (start, *key), group in ref.group(events, paid, keys, windows).items():
        amounts = ref.values(group, "amount")
        users = {e["user_id"] for e in group}
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        if not collapse:
            row["minute"] = ref.iso(start)
        row |= {
            "n": len(group),
            "with_coupon": len(ref.values(group, "coupon")),
            "revenue": ref.fsum_or_none(amounts),
            "avg_amount": ref.avg(amounts),
            "lo": min(amounts),
            "hi": max(amounts),
            "users": len(users),
            # HyperLogLog: exact below 256 distinct values, else within 2.5 % (3 sigma)
            "users_approx": ref.Approx(len(users), 0.0 if len(users) <= 256 else 0.025),
            # DDSketch: within 1 % of the exact lower quantile
            "p90": ref.Approx(ref.lower_quantile(amounts, 0.9), 0.01),
            # Space-Saving with capacity 300 >= 41 distinct products: exact
            "top": ref.top(ref.values(group, "product"), 3),
        }
        rows.append(row)
    return sorted(rows, key=lambda r: (r.get("minute", ""), *[r[k] for k in keys]))


def hopping_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def where(e: dict[str, Any]) -> bool:
        return (e["status"] in ("paid", "refunded") or e["qty"] >= 3) and e.get("coupon") is None

    rows = []
    for (start, device), group in ref.group(
        events, where, ["device"], ref.hop(600_000, FIVE_MIN)
    ).items():
        total = ref.fsum_or_none([e["price"] * e["qty"] for e in group])
        rows.append({"device": device, "w": ref.iso(start), "n": len(group), "total": total})
    return sorted(rows, key=lambda r: (r["w"], r["device"]))


def totals_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for (_, status, country), group in ref.group(
        events, lambda e: True, ["status", "country"], None
    ).items():
        revenue = ref.fsum_or_none(ref.values(group, "amount"))
        rows.append({"status": status, "country": country, "n": len(group), "revenue": revenue})
    return sorted(rows, key=lambda r: (r["status"], r["country"]))


def bodies(events: list[dict[str, Any]], rng: random.Random) -> list[tuple[bytes, dict[str, str]]]:
    """Random-sized batches, each NDJSON, a JSON array, or gzipped NDJSON."""
    out: list[tuple[bytes, dict[str, str]]] = []
    i = 0
    while i < len(events):
        size = rng.choice([1, 7, rng.randrange(1, MIN_LINES)])  # row decoder sizes
        chunk = events[i : i + size]
        i += size
        style = rng.random()
        if style < 0.5:
            out.append((ndjson(chunk), {}))
        elif style < 0.8:
            out.append((orjson.dumps(chunk), {"Content-Type": "application/json"}))
        else:
            out.append((gzip.compress(ndjson(chunk)), {"Content-Encoding": "gzip"}))
    return out


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return order_events(seed=20261122, n=N_EVENTS)


def ms(ts: int | float) -> int:
    """An event's time in epoch ms, the reference's own reading (epoch ms or seconds here)."""
    return ts if isinstance(ts, int) else round(ts * 1000)


def truth(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reference sees the original millisecond times, not the engine's conversion."""
    return [{**e, "_ts": ms(e["ts"])} for e in events]


def column_bodies(
    path: IngestPath, events: list[dict[str, Any]], rng: random.Random
) -> list[tuple[bytes, dict[str, str]]]:
    """Bodies of ``TABLE_MIN_LINES`` events each, NDJSON or gzipped NDJSON (a JSON array is
    never read column-wise), times as generated: epoch ms and epoch seconds mixed."""
    out: list[tuple[bytes, dict[str, str]]] = []
    for i in range(0, len(events), TABLE_MIN_LINES):
        body = path.body(events[i : i + TABLE_MIN_LINES])
        gzipped = rng.random() < 0.3
        out.append((gzip.compress(body), {"Content-Encoding": "gzip"}) if gzipped else (body, {}))
    return out


@pytest.mark.asyncio
async def test_every_view_and_rollup_matches_reference(
    tmp_path: Path, events: list[dict[str, Any]], ingest_path: IngestPath
) -> None:
    rng = random.Random(7)
    if ingest_path.columns:
        posted = column_bodies(ingest_path, [dict(e) for e in events], rng)
    else:
        posted = bodies([dict(e) for e in events], rng)
    raw = truth(events)
    async with running(CONFIG, tmp_path) as (client, engine):
        accepted = 0
        for body, headers in posted:
            response = await client.post("/v1/sources/orders/events", data=body, headers=headers)
            answer = await response.json()
            assert response.status == 200, answer
            accepted += answer["accepted"]
        assert accepted == N_EVENTS
        assert engine.registry.views["by_country"].counter("late") == 0  # disorder 20 s < grace 1 h

        # every row of every view, paged through cursors with an odd page size
        got = await fetch_all(client, "/v1/views/by_country", limit="97")
        assert got == by_country_rows(raw, ["country"], None)
        assert await fetch_all(client, "/v1/views/hopping", limit="500") == hopping_rows(raw)
        assert await fetch_all(client, "/v1/views/totals") == totals_rows(raw)
        everything = await fetch_all(client, "/v1/views/everything")
        kept = [e for e in raw if e["status"] != "failed"]
        assert everything == [{"n": len(kept), "items": sum(e["qty"] for e in kept)}]

        # rollups: drop a key, coarser buckets, collapse time, one grand total
        hourly = await fetch_all(client, "/v1/views/by_country", bucket="1h", limit="1000")
        assert [{**r, "minute": r["minute"]} for r in hourly] == by_country_rows(
            raw, ["country"], 3_600_000
        )
        per_hour = await fetch_all(client, "/v1/views/by_country", bucket="1h", group_by="")
        assert per_hour == by_country_rows(raw, [], 3_600_000)
        per_country = await fetch_all(
            client, "/v1/views/by_country", bucket="all", group_by="country"
        )
        assert per_country == by_country_rows(raw, ["country"], None, collapse=True)
        grand = await fetch_all(client, "/v1/views/by_country", bucket="all", group_by="")
        assert grand == by_country_rows(raw, [], None, collapse=True)


@pytest.mark.asyncio
async def test_order_filters_projection_and_formats_match_reference(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    raw = truth(events)
    expected = by_country_rows(raw, ["country"], None)
    async with running(CONFIG, tmp_path) as (client, _):
        for i in range(0, len(events), 3000):
            chunk = ndjson(events[i : i + 3000])
            response = await client.post("/v1/sources/orders/events", data=chunk)
            assert response.status == 200

        # order_by with ties broken by the default order (window, keys), then limit
        body = await (await client.get("/v1/views/by_country?order_by=-revenue&limit=7")).json()
        ranked = sorted(expected, key=lambda r: -r["revenue"])
        assert body["rows"] == ranked[:7]
        assert body["truncated"] is True
        body = await (await client.get("/v1/views/by_country?order_by=lo&limit=5")).json()
        assert body["rows"] == sorted(expected, key=lambda r: r["lo"])[:5]

        # IN filter on a key plus a half-open time range
        lo, hi = ref.iso(ref_start(raw) + 2 * FIVE_MIN), ref.iso(ref_start(raw) + 9 * FIVE_MIN)
        pairs = [("country", "FR"), ("country", "JP"), ("from", lo), ("to", hi)]
        got = await fetch_all(client, "/v1/views/by_country", pairs)
        assert got == [
            r for r in expected if r["country"] in ("FR", "JP") and lo <= r["minute"] < hi
        ]

        # projection, CSV and NDJSON carry the same rows
        got = await fetch_all(client, "/v1/views/totals", columns="country,n")
        assert got == [{"country": r["country"], "n": r["n"]} for r in totals_rows(raw)]
        csv_text = await (await client.get("/v1/views/totals?format=csv&limit=1000")).text()
        lines = csv_text.strip().split("\n")
        assert lines[0] == "status,country,n,revenue"
        assert lines[1:] == [
            f"{r['status']},{r['country']},{r['n']},{r['revenue']}" for r in totals_rows(raw)
        ]
        nd = await (await client.get("/v1/views/totals?format=ndjson&limit=1000")).read()
        assert [orjson.loads(line) for line in nd.splitlines()] == totals_rows(raw)


def ref_start(raw: list[dict[str, Any]]) -> int:
    return int(min(e["_ts"] for e in raw)) // FIVE_MIN * FIVE_MIN
