"""A real ``tallyd serve`` subprocess on 127.0.0.1: benchmarks start one, tests kill one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import aiohttp


def _ephemeral() -> range:
    """The ports the kernel hands out to outgoing connections and ``bind(0)``."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive ports free now, below the ephemeral range: a port the
    kernel may hand to any process's next outgoing connection (as ``bind(0)`` finds) can be
    taken between this check and the server's own bind — which tests running in parallel
    workers, each opening connections, did. Below that range only an explicit bind takes one."""
    ephemeral = _ephemeral()
    low, high = 20_000, min(ephemeral.start, 65_536)
    if high - low < 1000:  # an unusual ephemeral range: above it, then
        low, high = ephemeral.stop, 65_536
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - count)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no run of {count} free ports in {low}-{high}")


def free_port() -> int:
    return free_ports(1)


class ServerProcess:
    # Every process started and not yet reaped: ``stop_all`` kills what a failing test or an
    # interrupted run left behind, so no server outlives its caller.
    started: ClassVar[set[subprocess.Popen[bytes]]] = set()

    def __init__(
        self,
        config: Path,
        data_dir: Path,
        log: Path,
        launcher: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.config, self.data_dir, self.log = config, data_dir, log
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # What runs ``serve ...``: tallyd itself, or a test-only launcher that arms a crash point.
        self.launcher = launcher or [sys.executable, "-m", "api"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *self.launcher,
                    "serve",
                    "--config",
                    str(self.config),
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.add(self.proc)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)  # polling a readiness condition, with a deadline
        raise TimeoutError(f"server not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.started.discard(self.proc)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(30)
        self.started.discard(self.proc)
        return code

    @classmethod
    def stop_all(cls, keep: frozenset[subprocess.Popen[bytes]] = frozenset()) -> int:
        """Kill every server still running but those in ``keep``; returns how many."""
        left = [proc for proc in cls.started - keep if proc.poll() is None]
        for proc in left:
            proc.kill()
            proc.wait(10)
        cls.started &= keep
        return len(left)


async def post_bodies(
    session: aiohttp.ClientSession,
    url: str,
    next_body: Callable[[], bytes | None],
    clients: int = 2,
) -> tuple[int, float, list[float]]:
    """``clients`` clients posting ``next_body()`` back to back until it gives None: (events
    accepted, seconds, each request's seconds). Every answer must be a 200."""
    accepted = 0
    latencies: list[float] = []

    async def client() -> None:
        nonlocal accepted
        while (body := next_body()) is not None:
            sent = time.perf_counter()
            async with session.post(url, data=body) as response:
                answer = await response.json()
            assert response.status == 200, answer
            latencies.append(time.perf_counter() - sent)
            accepted += answer["accepted"]

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted, time.perf_counter() - began, latencies
