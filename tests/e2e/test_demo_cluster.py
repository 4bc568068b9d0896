"""`tallyd demo --nodes 3`, as a newcomer runs it: a local broker, a topic of 6 partitions per
source, three members on consecutive ports, the generator posting to each in turn. Every member
answers for the whole topic (not partial, three nodes), the map names three addresses, and Ctrl-C
stops everything: no member is left running."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.server import free_ports

TALLYD = Path(sys.executable).with_name("tallyd")


async def whole(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        path = "/v1/views/revenue_by_country?bucket=all&group_by="
        async with session.get(url + path) as r:
            if r.status != 200:
                return None
            return dict(await r.json())
    except aiohttp.ClientError:
        return None


@pytest.mark.asyncio
async def test_demo_with_three_nodes_answers_as_one_and_stops_whole(tmp_path: Path) -> None:
    base = free_ports(3)
    urls = [f"http://127.0.0.1:{base + i}" for i in range(3)]
    demo = subprocess.Popen(
        [str(TALLYD), "demo", "--nodes", "3", "--listen", f"127.0.0.1:{base}", "--rate", "300"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        answers: list[dict[str, Any] | None] = [None] * 3
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert demo.poll() is None, demo.stdout.read() if demo.stdout else ""
                answers = [await whole(session, url) for url in urls]
                if all(
                    a is not None
                    and a["rows"]
                    and not a["freshness"]["partial"]
                    and a["freshness"]["nodes"] == 3
                    for a in answers
                ):
                    break
                await asyncio.sleep(0.5)  # polling a condition, bounded by the deadline
            else:
                raise AssertionError(f"the members never answered whole: {answers}")
            async with session.get(urls[0] + "/v1/sources") as r:
                sources = (await r.json())["sources"]
        for source in sources:
            cluster = source["status"]["cluster"]
            topic = source["status"]["topics"][0]
            mine = [
                m for m in cluster["members"] if any(p.startswith(topic) for p in m["partitions"])
            ]
            assert sorted(m["url"] for m in mine) == urls
            assert sorted(p for m in mine for p in m["partitions"]) == sorted(
                f"{topic}:{p}" for p in range(6)
            )
    finally:
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, output
    assert "every member shows the whole topic" in output
    for url in urls:  # every member stopped with the demo
        port = int(url.rpartition(":")[2])
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
