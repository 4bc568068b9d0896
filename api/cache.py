"""Encoded query answers, reused until their source changes.

Dashboards poll: a thousand browsers showing the same chart ask the same question, and between two
batches of events the answer cannot change. An answer is kept under its request (view, format,
parameters) together with the version of the view's source it was computed at (the registry bumps
it with every applied batch, partition hand-over or restore); a request finds it only while that
version is current. Freshness (watermark, position) is not cached: it is added per response.

Bounded by total bytes, least recently used out first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

Key = tuple[Any, ...]


@dataclass(frozen=True)
class Cached:
    version: Hashable  # the source's version; for a cluster's answer, every member's
    body: bytes
    meta: Any  # what the encoder needs besides the bytes (api.read.Encoded)


class AnswerCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Key, Cached] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Key, version: Hashable) -> Cached | None:
        entry = self.entries.get(key)
        if entry is None or entry.version != version:
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: Key, version: Hashable, body: bytes, meta: Any) -> None:
        if len(body) > self.max_bytes // 8:  # one huge answer must not flush everything else
            return
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)
        self.entries[key] = Cached(version, body, meta)
        self.bytes += len(body)
        while self.bytes > self.max_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= len(dropped.body)
