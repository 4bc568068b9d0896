"""``serve``: run the app on its address until SIGTERM/SIGINT or a fatal engine error.

Apart from the command line (api/cli.py) so that what serves — the demo included — never imports
the command line, which imports everything (the benchmarks too, for ``tallyd bench``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from api.app import make_app
from api.auth import loopback, parse_auth
from api.engine import ENGINE
from api.settings import Settings
from ingest.datadir import DataDirBusy, DataDirLock
from views.config import Config

GIL_SWITCH_S = 0.0005
log = logging.getLogger("tallyd")


def open_without_tokens(config: Config, settings: Settings) -> str | None:
    """Why serving is refused: a non-loopback address and no token to guard it."""
    auth = parse_auth(config.auth, config.path, list(config.views), list(config.sources))
    if auth.enabled or loopback(settings.host):
        return None
    return (
        f"refusing to listen on {settings.listen} without any token: anyone who can reach it "
        "could read every view and post events. Create one with\n"
        "  tallyd token create --name NAME --scopes admin\n"
        f"and paste the line it prints into [auth] tokens = [...] in {config.path}, "
        "or listen on 127.0.0.1"
    )


async def serve(
    config: Config,
    settings: Settings,
    on_ready: str | None = None,
    stopping: asyncio.Event | None = None,
) -> int:
    """Serve until a signal or a fatal error; 1 (said on stderr) if the data directory is
    another process's: locked before the app exists, so a refused server never binds its port
    nor reads a byte of the directory. ``stopping`` is set as the server begins to stop (the
    demo's generator stops posting then, instead of failing against a closed port)."""
    try:
        lock = DataDirLock.acquire(Path(settings.data_dir))
    except DataDirBusy as err:
        print(f"tallyd: {err}", file=sys.stderr)
        return 1
    with lock:
        return await _serve(config, settings, on_ready, stopping or asyncio.Event())


async def _serve(
    config: Config, settings: Settings, on_ready: str | None, stopping: asyncio.Event
) -> int:
    # Worker threads (column-wise batches, snapshot encoding) keep the GIL up to the switch
    # interval each time the event loop asks for it back, and a query asks several times (every
    # socket operation): at CPython's default 5 ms a busy worker adds tens of ms to each query
    # (the convoy effect). benchmarks/README.md has the figures behind this value.
    sys.setswitchinterval(float(os.environ.get("TALLYD_GIL_SWITCH_S", GIL_SWITCH_S)))
    app = make_app(config, settings, manage_gc=True)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    engine = app[ENGINE]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()  # SIGHUP: the config file read again, applied live

    def reload() -> None:
        task = asyncio.create_task(engine.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    log.info("event=listening url=http://%s data_dir=%s", settings.listen, settings.data_dir)
    stopper = asyncio.create_task(stop.wait())
    failer = asyncio.create_task(engine.fatal.wait())
    if on_ready:
        asyncio.create_task(_announce(engine.ready, on_ready))  # noqa: RUF006 - one-shot print
    await asyncio.wait([stopper, failer], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    failer.cancel()
    log.info("event=stopping reason=%s", "fatal" if engine.fatal.is_set() else "signal")
    stopping.set()
    await runner.cleanup()
    if engine.fatal.is_set():
        print(f"tallyd: {engine.fatal_reason}", file=sys.stderr)
        return 1
    return 0


async def _announce(ready: asyncio.Event, text: str) -> None:
    await ready.wait()
    print(text, flush=True)
