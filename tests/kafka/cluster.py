"""What the cluster tests share: a Kafka source's config (as a member of a [cluster] or alone),
the secret members present to each other, and a wait until every member agrees on one map."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp

SECRET_ENV = "TALLYD_TEST_CLUSTER_SECRET"  # noqa: S105 - a variable's name
SECRET = "test-cluster-secret-0123456789abcdef"  # noqa: S105 - a test's own


def kafka_config(
    bootstrap: str,
    topic: str,
    shared: Path,
    views: str,
    *,
    group: str | None = None,
    cluster: bool = True,
    snapshot_every: str = "1s",
    extra: str = "",
) -> str:
    """A config with one Kafka source ``events`` (time ``ts``, a 6 s session) and ``views``;
    ``extra`` lines go into the source's table."""
    table = f'[cluster]\nsecret_env = "{SECRET_ENV}"\n' if cluster else ""
    return f"""
[server]
snapshot_every = "{snapshot_every}"

{table}
[sources.events]
from = "kafka"
bootstrap = "{bootstrap}"
topic = "{topic}"
group = "{group or f"g{uuid.uuid4().hex[:8]}"}"
time = "ts"
state_dir = "{shared}"
session_timeout = "6s"
{extra}
{views}"""


async def source_status(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/v1/sources") as r:
        assert r.status == 200
        return dict((await r.json())["sources"][0]["status"])


async def whole_status(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/v1/status") as r:
        assert r.status == 200
        return dict((await r.json())["sources"]["events"])


async def agreed(urls: list[str], timeout: float) -> dict[str, Any]:
    """The map, once every node reports the same assignment, naming exactly these nodes, and
    each node consumes exactly the partitions the map gives it."""

    async def poll() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            while True:
                statuses = [await source_status(session, url) for url in urls]
                maps = [s["cluster"] for s in statuses]
                ids = {m["assignment"] for m in maps}
                if None not in ids and len(ids) == 1:
                    members = maps[0]["members"]
                    by_url = {m["url"]: m["partitions"] for m in members}
                    if sorted(by_url) == sorted(urls) and all(
                        sorted(s["partitions"]) == sorted(by_url[url])
                        for url, s in zip(urls, statuses, strict=True)
                    ):
                        # /v1/status shows the same map (read after: a rebalance meanwhile
                        # makes it differ, and the poll goes on)
                        shown = [
                            (await whole_status(session, url))["cluster"]["assignment"]
                            for url in urls
                        ]
                        if shown == [maps[0]["assignment"]] * len(urls):
                            return {"maps": maps, "by_url": by_url}
                await asyncio.sleep(0.1)  # polling a condition, bounded by wait_for

    return await asyncio.wait_for(poll(), timeout)
