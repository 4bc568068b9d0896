"""Uncached query latency on the ``flights`` views: before each query a one-event post changes the
source's version, so no answer comes from the cache; median and max of 8 per query.

    python benchmarks/probe_uncached.py http://127.0.0.1:18095   (after replaying some flights)
"""

from __future__ import annotations

import statistics
import sys
import time
import urllib.request

import orjson

EVENT = orjson.dumps(
    {
        "time_hour": "2013-06-01T10:00:00Z",
        "carrier": "UA",
        "origin": "EWR",
        "dest": "IAH",
        "tailnum": "N14228",
        "distance": 1400,
        "dep_delay": 1,
        "arr_delay": 1,
        "air_hours": 3,
        "speed": 370.0,
        "air_time": 200,
        "id": 1,
    }
)
PATHS = {
    "top10 tail_hours by miles": "/v1/views/tail_hours?order_by=-miles&limit=10",
    "top10 tail_hours by mean_speed": "/v1/views/tail_hours?order_by=-mean_speed&limit=10",
    "page tail_hours (default order)": "/v1/views/tail_hours?limit=100",
    "point tail_hours one plane": "/v1/views/tail_hours?tailnum=N14228",
    "top10 hourly by p95": "/v1/views/hourly?order_by=-p95_delay&limit=10",
}


def main(url: str) -> None:
    if not url.startswith(("http://", "https://")):  # the opens below take http(s) only
        raise SystemExit(f"{url}: give an http(s) URL")
    for name, path in PATHS.items():
        times = []
        for _ in range(8):
            post = urllib.request.Request(f"{url}/v1/sources/flights/events", EVENT, method="POST")  # noqa: S310
            urllib.request.urlopen(post, timeout=60).read()  # noqa: S310
            started = time.perf_counter()
            urllib.request.urlopen(url + path, timeout=60).read()  # noqa: S310
            times.append((time.perf_counter() - started) * 1000)
        print(f"{name:34} median {statistics.median(times):7.1f} ms  max {max(times):7.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1].rstrip("/"))
