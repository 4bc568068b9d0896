"""Live answers over Server-Sent Events: one computation per interval per query, any number of
subscribers.

A *topic* is one question (view, kind = rows | series, parameters). Its task wakes every
``interval``; if the view's source changed since the last answer, it computes the answer once,
diffs it against the previous one and hands the change to every subscriber's bounded queue. So a
thousand browsers on one chart cost one computation per interval, and a quiet view costs nothing.

Messages carry ids ``<topic epoch>-<sequence>``. A reconnect with ``Last-Event-ID`` gets the changes
it missed from the topic's short history (a topic lives on for ``linger`` seconds after its last
subscriber leaves), or — when they are gone, or the id is from another topic epoch (a restart) — a
fresh full answer. A subscriber whose queue is full (it stopped reading) is
dropped: server memory never grows with a slow client. Heartbeat comments keep proxies from closing
idle streams.

A connection follows a *feed* of one or more topics: ``/subscribe`` one, ``/v1/live`` several
(a page's every table and chart over one connection, since browsers open at most six per host).
A multiplexed message says which subscription it is for, ``{"s": index, "data": payload}``, and its
id lists every subscription's last topic id, comma-separated, so ``Last-Event-ID`` resumes each
subscription exactly as it would resume alone.

Change data: for rows, ``{"upsert": [rows], "delete": [row keys]}`` (a row's key is its window and
group-key values); for series, ``{"x": [...], "points": [[series, x, value], ...], "removed":
[series]}`` — ``x`` only when the buckets moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger("tallyd.live")

Answer = dict[str, Any]
QUEUE = 32  # messages a subscriber may fall behind before it is dropped
HISTORY = 64  # change messages kept per topic for reconnects


@dataclass
class Message:
    id: str
    event: str  # "answer" (full) or "change"
    data: bytes

    def encode(self) -> bytes:
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (
            self.id.encode(),
            self.event.encode(),
            self.data,
        )


@dataclass(eq=False)  # identity: kept in sets
class Subscriber:
    """One connection, subscribed to every topic of its feed: one bounded queue for all of them,
    so a connection costs the same memory however many questions it follows."""

    close: Callable[[], None] | None = None  # aborts its connection
    queue: asyncio.Queue[tuple[Topic, Message] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE)
    )
    dropped: bool = False


class Topic:
    def __init__(
        self,
        key: tuple[Any, ...],
        compute: Callable[[], Answer],
        version: Callable[[], Hashable],
        kind: str,
        interval: float,
        hub: Hub,
        update: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.key = key
        self.compute = compute
        self.version = version
        # awaited before each refresh: a cluster member's topic fetches its peers' state here
        self.update = update
        self.kind = kind
        self.interval = interval
        self.hub = hub
        self.epoch = format(int(time.time() * 1000), "x")
        self.seq = 0
        self.answer: Answer | None = None
        self.answered_at: Hashable | None = None  # source version of ``answer``
        self.history: deque[Message] = deque(maxlen=HISTORY)
        self.subscribers: set[Subscriber] = set()
        self.computations = 0
        self.task: asyncio.Task[None] | None = None

    def _id(self) -> str:
        return f"{self.epoch}-{self.seq}"

    def refresh(self) -> Message | None:
        """Recompute if the source changed; the change message, or None when nothing changed."""
        version = self.version()
        if self.answer is not None and version == self.answered_at:
            return None
        new = self.compute()
        self.computations += 1
        old, self.answer, self.answered_at = self.answer, new, version
        if old is None:
            return None
        if old.get("columns") != new.get("columns"):  # the view's definition changed (a swap)
            self.seq += 1
            message = self.full()
            self.history.append(message)
            return message
        change = diff_rows(old, new) if self.kind == "rows" else diff_series(old, new)
        if change is None:
            return None
        self.seq += 1
        message = Message(self._id(), "change", orjson.dumps({**change, **_fresh(new)}))
        self.history.append(message)
        return message

    def full(self) -> Message:
        assert self.answer is not None
        return Message(self._id(), "answer", orjson.dumps(self.answer))

    def since(self, last_id: str | None) -> list[Message]:
        """What a (re)connecting subscriber needs first."""
        if last_id is not None:
            epoch, _, seq_text = last_id.partition("-")
            if epoch == self.epoch and seq_text.isdigit():
                seq = int(seq_text)
                if seq == self.seq:
                    return []
                missed = [m for m in self.history if int(m.id.rpartition("-")[2]) > seq]
                if missed and int(missed[0].id.rpartition("-")[2]) == seq + 1:
                    return missed
        return [self.full()]

    async def run(self) -> None:
        # A topic outlives its last subscriber by ``hub.linger`` seconds, still following its
        # view, so a client that reconnects (a page reload, a network blip) resumes without a gap.
        alone_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            if self.subscribers:
                alone_since = None
            elif alone_since is None:
                alone_since = loop.time()
            elif loop.time() - alone_since >= self.hub.linger:
                break
            await asyncio.sleep(self.interval)
            try:
                if self.update is not None:
                    await self.update()
                message = self.refresh()
            except Exception:  # a view that cannot answer any more: tell, and end
                log.exception("event=live_compute_failed topic=%r", self.key)
                message = None
            if message is not None:
                for subscriber in list(self.subscribers):
                    self.offer(subscriber, message)
        if self.hub.topics.get(self.key) is self:  # not a newer topic of the same question
            del self.hub.topics[self.key]

    def offer(self, subscriber: Subscriber, message: Message) -> None:
        if subscriber.dropped:  # dropped by another topic of its feed: its connection is ending
            self.subscribers.discard(subscriber)
            return
        try:
            subscriber.queue.put_nowait((self, message))
        except asyncio.QueueFull:  # it stopped reading: drop it, never buffer without bound
            subscriber.dropped = True
            self.subscribers.discard(subscriber)
            self.hub.dropped += 1
            with contextlib.suppress(asyncio.QueueEmpty):
                subscriber.queue.get_nowait()
            subscriber.queue.put_nowait(None)  # wakes its writer, which ends the response
            if subscriber.close is not None:  # ... or is stuck writing to a full socket
                subscriber.close()


class Hub:
    def __init__(self, linger: float = 30.0) -> None:
        self.topics: dict[tuple[Any, ...], Topic] = {}
        self.dropped = 0
        self.linger = linger
        self.streams = 0  # open connections: a /v1/live stream of many subscriptions is one

    def topic(
        self,
        key: tuple[Any, ...],
        compute: Callable[[], Answer],
        version: Callable[[], Hashable],
        kind: str,
        interval: float,
        update: Callable[[], Awaitable[None]] | None = None,
    ) -> Topic:
        """The topic of a question, with its answer: a new topic computes its first answer here,
        so a bad question fails (and is forgotten) before any stream. Its task starts at once:
        a topic that nobody ends up subscribing to (a later subscription of the same request was
        refused) lingers out like any other, never kept without a task."""
        topic = self.topics.get(key)
        if topic is None:
            topic = Topic(key, compute, version, kind, interval, self, update)
            topic.refresh()
            self.topics[key] = topic
            self._start(topic)
        return topic

    def subscribe(self, feed: Feed, close: Callable[[], None] | None = None) -> Subscriber:
        subscriber = Subscriber(close)
        self.streams += 1
        for topic in feed.distinct:
            topic.subscribers.add(subscriber)
            if topic.task is None or topic.task.done():  # it lingered out meanwhile
                self.topics.setdefault(topic.key, topic)
                self._start(topic)
        return subscriber

    @staticmethod
    def _start(topic: Topic) -> None:
        topic.task = asyncio.create_task(topic.run(), name="tallyd-live")

    def unsubscribe(self, feed: Feed, subscriber: Subscriber) -> None:
        self.streams -= 1
        for topic in feed.distinct:
            topic.subscribers.discard(subscriber)

    async def close(self) -> None:
        tasks = [t.task for t in self.topics.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.topics.clear()


class Feed:
    """What one connection follows: a topic per subscription, in the order asked (a question
    asked twice is one topic, and one subscriber of it)."""

    def __init__(self, topics: list[Topic], multiplexed: bool) -> None:
        self.topics = topics
        self.multiplexed = multiplexed
        self.indices: dict[Topic, list[int]] = {}
        for i, topic in enumerate(topics):
            self.indices.setdefault(topic, []).append(i)
        self.distinct = list(self.indices)
        self.ids = [""] * len(topics)  # the last topic id sent, per subscription

    def start(self, last_event_id: str | None) -> list[bytes]:
        """What a (re)connecting client needs first, subscription by subscription."""
        lasts: list[str | None] = [last_event_id]
        if self.multiplexed:
            parts = (last_event_id or "").split(",")
            lasts = list(parts) if len(parts) == len(self.topics) else [None] * len(self.topics)
        frames = []
        for i, topic in enumerate(self.topics):
            messages = topic.since(lasts[i])
            if not messages:  # already up to date: it goes on from the id it had
                self.ids[i] = lasts[i] or ""
            frames += [self._frame(i, m) for m in messages]
        return frames

    def frames(self, topic: Topic, message: Message) -> list[bytes]:
        return [self._frame(i, message) for i in self.indices[topic]]

    def _frame(self, i: int, message: Message) -> bytes:
        if not self.multiplexed:
            return message.encode()
        self.ids[i] = message.id
        data = b'{"s":%d,"data":%s}' % (i, message.data)
        return Message(",".join(self.ids), message.event, data).encode()


def _fresh(answer: Answer) -> Answer:
    return {"freshness": answer["freshness"]} if "freshness" in answer else {}


def _row_key(row: dict[str, Any], key_columns: list[str]) -> tuple[Any, ...]:
    return tuple(row.get(c) for c in key_columns)


def diff_rows(old: Answer, new: Answer) -> Answer | None:
    keys = [c["name"] for c in new["columns"] if c["role"] in ("key", "window")]
    before = {_row_key(r, keys): r for r in old["rows"]}
    after = {_row_key(r, keys): r for r in new["rows"]}
    upsert = [r for k, r in after.items() if before.get(k) != r]
    delete = [dict(zip(keys, k, strict=True)) for k in before if k not in after]
    if not upsert and not delete:
        return None
    return {"upsert": upsert, "delete": delete}


def diff_series(old: Answer, new: Answer) -> Answer | None:
    change: Answer = {}
    if old["x"] != new["x"]:
        change["x"] = new["x"]
    before = {
        (s["name"], x): v for s in old["series"] for x, v in zip(old["x"], s["values"], strict=True)
    }
    points = [
        [s["name"], x, v]
        for s in new["series"]
        for x, v in zip(new["x"], s["values"], strict=True)
        if before.get((s["name"], x), _MISSING) != v
    ]
    removed = sorted({s["name"] for s in old["series"]} - {s["name"] for s in new["series"]})
    if points:
        change["points"] = points
    if removed:
        change["removed"] = removed
    final = new.get("complete_until_ms")
    if "complete_until_ms" in new and (change or old.get("complete_until_ms") != final):
        change["complete_until"] = new["complete_until"]  # which buckets are final now
        change["complete_until_ms"] = new["complete_until_ms"]
    return change or None


_MISSING = object()
