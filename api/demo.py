"""``tallyd demo``: the shop example with a generator posting realistic events over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import secrets
import shutil
import signal
import time
from pathlib import Path

import aiohttp
import orjson
from aiokafka.errors import TopicAlreadyExistsError

from api.server import serve
from api.settings import Settings
from api.shop import order, request
from views.config import Config

log = logging.getLogger("tallyd.demo")
# A link to examples/shop.toml (where users browse it), shipped as package data, so that
# `tallyd demo` works from an installed wheel as well as from a clone.
EXAMPLE = Path(__file__).parent / "demo.toml"


async def generate(base: str | list[str], rate: int, stop: asyncio.Event, seed: int = 42) -> None:
    """Post ``rate`` events/s (orders and requests, 1:2) in batches every 200 ms until ``stop``;
    to several servers (a cluster's members) in turn."""
    rng = random.Random(seed)
    tick = 0.2
    bases = itertools.cycle([base] if isinstance(base, str) else base)
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            base = next(bases)
            now = int(time.time() * 1000)
            count = max(1, round(rate * tick))
            orders = [order(rng, now - rng.randrange(2000)) for _ in range(count // 3 or 1)]
            requests = [request(rng, now - rng.randrange(2000)) for _ in range(count - len(orders))]
            for source, events in (("orders", orders), ("requests", requests)):
                body = b"\n".join(orjson.dumps(e) for e in events)
                try:
                    async with session.post(f"{base}/v1/sources/{source}/events", data=body) as r:
                        if r.status != 200:
                            log.warning("event=demo_post_failed status=%d", r.status)
                except aiohttp.ClientError as err:
                    if not stop.is_set():  # a post in flight as the server stops is expected
                        log.warning("event=demo_post_failed error=%r", str(err))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)


def examples(base: str) -> str:
    # The example event takes its time from the shell when it is pasted (``date``), not from
    # when this was printed: pasted a minute later, a fixed time would be older than the views'
    # watermark minus grace, and every view would count it as late.
    event = (
        '\'{"country": "FR", "amount": 12.5, "status": "paid", "user_id": "u1", '
        '"product": "p1", "ts": "\'"$(date -u +%FT%TZ)"\'"}\''
    )
    return f"""
tallyd demo is running at {base}  (Ctrl-C to stop; state persists in the data dir)

  Open {base}/ in a browser: every view as a live chart and table.

Try:
  curl -s '{base}/v1/views' | python3 -m json.tool
  curl -s '{base}/v1/views/revenue_by_country?order_by=-revenue&limit=5'
  curl -s '{base}/v1/views/revenue_by_country?country=FR&country=DE&bucket=1h&group_by='
  curl -s '{base}/v1/views/latency_by_device?bucket=all&format=csv'
  curl -s '{base}/v1/views/top_products'
  curl -s '{base}/v1/views/revenue_by_country/series?metric=revenue&split_by=country&top=5'
  curl -sN '{base}/v1/views/order_status/subscribe'          # live, Server-Sent Events
  curl -s '{base}/v1/views/order_status?format=ndjson'
  echo {event} |
       curl -s --data-binary @- '{base}/v1/sources/orders/events'   # says what each view did
"""


async def run_demo(config: Config, settings: Settings, rate: int) -> int:
    base = f"http://{settings.listen}"
    stop = asyncio.Event()
    server = asyncio.create_task(serve(config, settings, examples(base), stopping=stop))
    # Start posting once the server answers readyz; stop with the server.
    async with aiohttp.ClientSession() as session:
        while not server.done():
            try:
                async with session.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    generator = asyncio.create_task(generate(base, rate, stop))
    code = await server
    stop.set()
    await generator
    return code


DEMO_SECRET = "TALLYD_DEMO_CLUSTER_SECRET"  # noqa: S105 - a variable's name
DEMO_PARTITIONS = 6


def cluster_config(text: str, bootstrap: str, topics: dict[str, str], shared: Path) -> str:
    """The demo's config as members of a cluster: each source a Kafka topic."""
    for source, topic in topics.items():
        text = text.replace(
            f"[sources.{source}]\n",
            f'[sources.{source}]\nfrom = "kafka"\nbootstrap = "{bootstrap}"\ntopic = "{topic}"\n'
            f'group = "tallyd-demo"\nstate_dir = "{shared}"\nsession_timeout = "6s"\n',
            1,
        )
    return text.replace("[sources.", f'[cluster]\nsecret_env = "{DEMO_SECRET}"\n\n[sources.', 1)


def cluster_examples(urls: list[str]) -> str:
    first, *others = urls
    return f"""
tallyd demo: a cluster of {len(urls)} members on a local Kafka-protocol broker (Tansu),
each source a topic of {DEMO_PARTITIONS} partitions split among them (Ctrl-C to stop).

  Open any of {", ".join(u + "/" for u in urls)} in a browser: every member shows the whole topic.

Try:
  curl -s '{first}/v1/sources' | python3 -m json.tool        # status.cluster: who owns what
  curl -s '{first}/v1/views/revenue_by_country?bucket=all&group_by=' | python3 -m json.tool
  curl -s '{others[0]}/v1/views/revenue_by_country?bucket=all&group_by='   # the same, elsewhere
  Stop a member (kill its pid from '{first}/v1/sources'): the others answer for the whole topic,
  flagged "partial" until the group has moved its partitions.
"""


async def run_cluster_demo(settings: Settings, rate: int, nodes: int, bootstrap: str | None) -> int:
    """``tallyd demo --nodes N``: a broker (Tansu, unless ``bootstrap``), a topic per source and
    N members on consecutive ports from ``--listen``, with the generator posting to each in
    turn. Its data directory is started afresh: the broker it starts keeps nothing."""
    from benchmarks.broker import broker_unless, create_topic  # the test extras' broker
    from benchmarks.server import ServerProcess

    root = Path(settings.data_dir) / "cluster"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.environ.setdefault(DEMO_SECRET, secrets.token_hex(16))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    with broker_unless(bootstrap, root) as kafka:
        topics = {}
        for source in ("orders", "requests"):
            topics[source] = f"tallyd-demo-{source}"
            with contextlib.suppress(TopicAlreadyExistsError):  # --bootstrap: a Kafka that has it
                await create_topic(kafka, DEMO_PARTITIONS, topics[source])
        path = root / "cluster.toml"
        path.write_text(cluster_config(EXAMPLE.read_text(), kafka, topics, root / "shared"))
        members = [
            ServerProcess(path, root / f"node-{i}", root / f"node-{i}.log", port=settings.port + i)
            for i in range(nodes)
        ]
        try:
            for member in members:
                await member.start(timeout=120)
            urls = [f"http://{settings.host}:{m.port}" for m in members]
            print(cluster_examples(urls), flush=True)
            generator = asyncio.create_task(generate(urls, rate, stop))
            await stop.wait()
            await generator
        finally:
            for member in members:
                if member.proc is not None and member.proc.poll() is None:
                    member.terminate()
    return 0
