"""``tallyd demo``: the shop example with a generator posting realistic events over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from pathlib import Path

import aiohttp
import orjson

from api.server import serve
from api.settings import Settings
from api.shop import order, request
from views.config import Config

log = logging.getLogger("tallyd.demo")
# A link to examples/shop.toml (where users browse it), shipped as package data, so that
# `tallyd demo` works from an installed wheel as well as from a clone.
EXAMPLE = Path(__file__).parent / "demo.toml"


async def generate(base: str, rate: int, stop: asyncio.Event, seed: int = 42) -> None:
    """Post ``rate`` events/s (orders and requests, 1:2) in batches every 200 ms until ``stop``."""
    rng = random.Random(seed)
    tick = 0.2
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
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
