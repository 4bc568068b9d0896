"""Idempotency-Key: a request's events counted once, however often the client retries it.

On an HTTP source the receipt is logged with the batch (``ingest.http``): one log sees every
attempt. A post to a clustered Kafka source (``ingest.kafka``) has no such log: the member a
client retries on is often not the one it first posted to, and the first attempt may have died
with its member half-appended to the topic. So the request is made recognisable *in the topic*,
and each partition's owner drops the records it has counted already:

- **The writer** (``route``, ``request_header``) sends each event to a partition fixed by the
  request alone — by ``partition_by`` (murmur2, as Kafka's own producers pick it), or without it
  in contiguous blocks over the partitions, starting at one the key picks — and numbers the
  request's events per partition 0, 1, 2, … in the order it sends them. Every record carries the
  header ``tallyd-request: "<number> <digest> <key>"``. A retry (same key, same body)
  sends the same records to the same partitions under the same numbers.
- **The owner** (``TopicKeys``) keeps, per partition and key, which numbers it has counted
  (``Seen``) and drops a record already counted, or one whose digest differs from the first one
  seen for the key (the key reused for another body: the first body wins; counted as a conflict
  and logged). The partition's position still moves past a dropped record. This record lives in
  the part file beside the state and the position it goes with, so a restart or a hand-over keeps
  it; keys older (by record time) than ``idempotency_ttl`` are forgotten, as on an HTTP source.

The writer also remembers the keys it acknowledged itself (``Receipts``): a retry to the same
member is answered from memory (``Idempotent-Replayed: true``) without appending again, and a key
reused there for another body is refused with 422, as on an HTTP source. A retry to another member
appends again and is answered 200 with the new records' positions; their owners drop them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import murmur2

log = logging.getLogger("tallyd.idempotency")

KEY_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))  # visible ASCII: no space in a key
KEY_RULE = "header 'Idempotency-Key': 1 to 255 visible ASCII characters (a UUID is typical)"
TTL_MS = 24 * 3_600_000  # how long a key is remembered (``idempotency_ttl``)
MAX_KEYS = 100_000  # most keys remembered (``idempotency_max_keys``); the oldest forgotten first
HEADER = "tallyd-request"


@dataclass(frozen=True)
class KeyLimits:
    """How long keys are remembered and how many at most (per writer; per owned partition)."""

    ttl_ms: int = TTL_MS
    max_keys: int = MAX_KEYS


DEFAULT_LIMITS = KeyLimits()


def valid_key(key: str) -> bool:
    return 1 <= len(key) <= 255 and set(key) <= KEY_CHARS


def request_digest(source: str, on_error: str, body: bytes) -> str:
    """What makes two requests the same one: the source, the error mode and the body."""
    return hashlib.sha256(b"%s\0%s\0%s" % (source.encode(), on_error.encode(), body)).hexdigest()


# -- the writer ---------------------------------------------------------------------------------


def _hash(data: bytes) -> int:
    return int(murmur2(data)) & 0x7FFFFFFF


def route(
    values: Sequence[Any], partitions: Sequence[int], key: str
) -> list[tuple[int, bytes | None]]:
    """Per event, its partition and record key. ``values``: each event's ``partition_by`` value
    (None: the event has none, or the source sets no ``partition_by``). An event with a value
    goes where Kafka's default partitioner puts that key; the others go in contiguous blocks
    over the partitions, from one the Idempotency-Key picks: the same request, the same places."""
    count = len(partitions)
    block = max(1, -(-sum(v is None for v in values) // count))
    start = _hash(key.encode())
    out: list[tuple[int, bytes | None]] = []
    blocked = 0  # events placed in blocks so far
    for value in values:
        if value is None:
            out.append((partitions[(start + blocked // block) % count], None))
            blocked += 1
        else:
            record_key = str(value).encode()
            out.append((partitions[_hash(record_key) % count], record_key))
    return out


def request_headers(
    places: Sequence[tuple[int, bytes | None]], digest: str, key: str
) -> list[bytes]:
    """Each record's ``tallyd-request`` header: its number among the request's records in its
    partition, the request's digest and its key."""
    numbers: dict[int, int] = {}
    out = []
    tail = f" {digest} {key}".encode()
    for partition, _ in places:
        number = numbers.get(partition, 0)
        numbers[partition] = number + 1
        out.append(b"%d%s" % (number, tail))
    return out


def carries_requests(messages: Sequence[Any]) -> bool:
    """Whether any of these Kafka records has headers, so might carry a request
    (``TopicKeys.screen`` has nothing to do otherwise: which records count cannot depend on the
    records counted before)."""
    return any(m.headers for m in messages)


def parse_header(headers: Sequence[tuple[str, bytes]]) -> tuple[int, str, str] | None:
    """(number, digest, key) from a record's headers; None if it carries no request
    (posted without a key, or written by another producer) or the header is not one of ours."""
    for name, value in headers:
        if name == HEADER:
            try:
                number, digest, key = value.decode("ascii").split(" ", 2)
                return int(number), digest, key
            except (UnicodeDecodeError, ValueError):
                return None
    return None


@dataclass
class Receipt:
    digest: str
    at: int  # ms
    answer: Any  # the Ack the request got


class Receipts:
    """The keys this member acknowledged (memory only: after a restart a retry appends again,
    and the partitions' owners drop it), and the keys being appended now."""

    def __init__(self, limits: KeyLimits) -> None:
        self.limits = limits
        self.done: dict[str, Receipt] = {}
        self.in_flight: set[str] = set()

    def get(self, key: str, now: int) -> Receipt | None:
        seen = self.done.get(key)
        return seen if seen is not None and seen.at >= now - self.limits.ttl_ms else None

    def remember(self, key: str, receipt: Receipt) -> None:
        self.done.pop(key, None)  # re-inserted last: the dict stays in arrival order
        self.done[key] = receipt
        _forget_old(self.done, receipt.at - self.limits.ttl_ms, self.limits.max_keys)


# -- the owner ----------------------------------------------------------------------------------


@dataclass
class Seen:
    """Which of one request's records in one partition are counted: every number below
    ``upto``, and those in ``above`` (only a producer without idempotence that lost a batch and
    sent the next leaves a gap below them)."""

    digest: str
    at: int  # ms: the time of the first record seen
    upto: int = 0
    above: set[int] = field(default_factory=set)

    def has(self, number: int) -> bool:
        return number < self.upto or number in self.above

    def add(self, number: int) -> None:
        if number != self.upto:
            self.above.add(number)
            return
        self.upto += 1
        while self.upto in self.above:
            self.above.remove(self.upto)
            self.upto += 1

    def copy(self) -> Seen:
        return Seen(self.digest, self.at, self.upto, set(self.above))

    def row(self, key: str) -> list[Any]:
        return [key, self.digest, self.at, self.upto, sorted(self.above)]


@dataclass
class Screened:
    """A fetch with the records already counted taken out, and what counting the rest changes."""

    kept: list[Any]
    seen: dict[str, Seen]  # key -> its record after this fetch
    dropped: int  # records counted before
    conflicts: dict[str, int]  # key -> records dropped because the key came with another body


def _forget_old(entries: dict[str, Any], before: int, most: int) -> None:
    """Drop the oldest entries (the dict is in arrival order) older than ``before`` or beyond
    ``most``."""
    while entries:
        oldest = next(iter(entries))
        if entries[oldest].at >= before and len(entries) <= most:
            return
        del entries[oldest]


class TopicKeys:
    """The owner's side: per partition, the requests it has counted (saved in its part file)."""

    def __init__(self, source: str, limits: KeyLimits) -> None:
        self.source = source
        self.limits = limits
        self.parts: dict[str, dict[str, Seen]] = {}
        self.dropped = 0  # records dropped as counted before (retries)
        self.conflicts = 0  # records dropped because their key came with another body

    def screen(self, part: str, messages: Sequence[Any]) -> Screened | None:
        """Take out of ``messages`` (Kafka records, in offset order) those counted already;
        None when none carries a request (the usual fetch: nothing to do). Changes nothing:
        ``commit`` does, in the step that applies the kept records."""
        if not carries_requests(messages):
            return None
        known = self.parts.get(part, {})
        seen: dict[str, Seen] = {}
        kept = []
        dropped = 0
        conflicts: dict[str, int] = {}
        for message in messages:
            request = parse_header(message.headers)
            if request is None:
                kept.append(message)
                continue
            number, digest, key = request
            entry = seen.get(key)
            if entry is None:
                old = known.get(key)
                entry = seen[key] = Seen(digest, message.timestamp) if old is None else old.copy()
            if entry.digest != digest:
                conflicts[key] = conflicts.get(key, 0) + 1
            elif entry.has(number):
                dropped += 1
            else:
                entry.add(number)
                kept.append(message)
        return Screened(kept, seen, dropped, conflicts)

    def commit(self, part: str, screened: Screened) -> None:
        known = self.parts.setdefault(part, {})
        known.update(screened.seen)
        newest = max(entry.at for entry in screened.seen.values()) if screened.seen else None
        if newest is not None:
            _forget_old(known, newest - self.limits.ttl_ms, self.limits.max_keys)
        self.dropped += screened.dropped
        if screened.conflicts:
            self.conflicts += sum(screened.conflicts.values())
            log.warning(
                "event=idempotency_conflict source=%s part=%s keys=%s: records of an "
                "Idempotency-Key already used with another body were dropped (the first body "
                "counts); use a new key for new events",
                self.source,
                part,
                ",".join(sorted(screened.conflicts)[:5]),
            )

    def save(self, part: str) -> list[list[Any]]:
        return [entry.row(key) for key, entry in self.parts.get(part, {}).items()]

    def load(self, part: str, rows: list[list[Any]] | None) -> None:
        self.parts[part] = {
            str(key): Seen(str(digest), int(at), int(upto), {int(n) for n in above})
            for key, digest, at, upto, above in rows or []
        }

    def drop(self, part: str) -> None:
        self.parts.pop(part, None)

    def status(self) -> dict[str, int]:
        return {
            "keys": sum(len(keys) for keys in self.parts.values()),
            "dropped": self.dropped,
            "conflicts": self.conflicts,
        }
