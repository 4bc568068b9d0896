"""Idempotency-Key through a Kafka topic (``ingest.idempotency``), without a broker: the writer's
routing is fixed by the request, and a partition owner that sees attempts of requests — whole,
cut short, with gaps, interleaved with other producers' records, in fetches of any size, across
part-file saves and loads — keeps each request's records exactly once. Checked against a plain
reference: the set of (request, event) pairs. The broker-backed end of it (a retry on another
member counted once) is in tests/kafka/test_cluster_write.py."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from ingest.idempotency import (
    HEADER,
    TTL_MS,
    KeyLimits,
    TopicKeys,
    parse_header,
    request_digest,
    request_headers,
    route,
)
from views import snapshot

PARTITIONS = [0, 1, 2, 3, 4, 5]


def record(offset: int, at: int, value: bytes, header: bytes | None) -> ConsumerRecord[Any, Any]:
    headers = [] if header is None else [(HEADER, header)]
    return ConsumerRecord("t", 0, offset, at, 0, None, value, None, 0, len(value), headers)


def test_a_retry_goes_where_the_first_attempt_went() -> None:
    values: list[Any] = [None] * 10 + ["shop-1", "shop-2", 7, None, None]
    first = route(values, PARTITIONS, "key-1")
    assert route(values, PARTITIONS, "key-1") == first
    # partition_by values go where Kafka's default partitioner puts their key, as without a key
    for (partition, record_key), value in zip(first, values, strict=True):
        if value is not None:
            assert record_key == str(value).encode()
            assert partition == DefaultPartitioner()(record_key, PARTITIONS, PARTITIONS)
    # the others in contiguous blocks, one block per partition, from one the key picks
    blocks = [p for p, k in first if k is None]
    assert len(set(blocks)) == len(PARTITIONS)
    assert blocks == sorted(blocks, key=blocks.index)  # each partition's block is contiguous
    assert route([None] * 12, PARTITIONS, "key-2") != route([None] * 12, PARTITIONS, "key-1")


def test_records_are_numbered_per_partition_and_parse_back() -> None:
    places = route([None] * 9 + ["a", "a"], PARTITIONS, "k")
    digest = request_digest("events", "fail", b"body")
    headers = request_headers(places, digest, "k")
    numbers: dict[int, list[int]] = {}
    for (partition, _), header in zip(places, headers, strict=True):
        parsed = parse_header([("other", b"x"), (HEADER, header)])
        assert parsed is not None
        number, got_digest, key = parsed
        assert (got_digest, key) == (digest, "k")
        numbers.setdefault(partition, []).append(number)
    assert all(ns == list(range(len(ns))) for ns in numbers.values())
    assert parse_header([]) is None
    assert parse_header([(HEADER, b"not-a-number d k")]) is None


@pytest.mark.parametrize("seed", range(6))
def test_an_owner_counts_each_retried_request_once(seed: int) -> None:
    """Requests posted one to three times (the first attempt often cut short, or with a gap a
    non-idempotent producer leaves); other producers' plain records between them; fetches of
    random sizes; the part file saved and loaded (a restart, a hand-over) at random points."""
    rng = random.Random(seed)
    stream: list[tuple[bytes | None, bytes]] = []  # (header, value) in offset order
    want: list[bytes] = []
    pending: list[list[tuple[bytes, bytes]]] = []  # attempts not yet appended
    for r in range(40):
        key, n = f"req-{seed}-{r}", rng.randrange(1, 30)
        events = [b"%d:%d" % (r, i) for i in range(n)]
        want += events
        digest = request_digest("events", "fail", b"".join(events))
        headers = request_headers([(0, None)] * n, digest, key)  # one partition's share
        attempts = rng.choice([1, 2, 3])
        for a in range(attempts):
            pairs = list(zip(headers, events, strict=True))
            if a < attempts - 1:  # not the last: cut short, perhaps with a gap
                pairs = pairs[: rng.randrange(0, n + 1)]
                if len(pairs) > 2 and rng.random() < 0.3:
                    del pairs[rng.randrange(len(pairs) - 1)]
            pending.append(pairs)
        if rng.random() < 0.5:  # another producer's records, with no request
            for i in range(rng.randrange(1, 5)):
                value = b"plain-%d-%d" % (r, i)
                stream.append((None, value))
                want.append(value)
        while pending and rng.random() < 0.6:  # attempts land later, interleaved
            stream += pending.pop(0)
    for pairs in pending:
        stream += pairs
    records = [record(i, 1_000 + i, v, h) for i, (h, v) in enumerate(stream)]

    owner = TopicKeys("events", KeyLimits())
    kept: list[bytes] = []
    dropped = 0  # by owners before a restart
    start = 0
    while start < len(records):
        fetch = records[start : start + rng.randrange(1, 50)]
        start += len(fetch)
        screened = owner.screen("t:0", fetch)
        if screened is None:
            kept += [m.value for m in fetch]
            continue
        owner.commit("t:0", screened)
        kept += [m.value for m in screened.kept]
        if rng.random() < 0.2:  # the part file written and read back: a restart or hand-over
            rows = snapshot.decode(snapshot.encode({"requests": owner.save("t:0")}))["requests"]
            dropped += owner.dropped
            owner = TopicKeys("events", KeyLimits())
            owner.load("t:0", rows)
    assert sorted(kept) == sorted(want)
    assert owner.conflicts == 0
    assert dropped + owner.dropped == len(records) - len(want)  # the retried records, only


def test_a_key_reused_for_another_body_counts_the_first_body_only() -> None:
    owner = TopicKeys("events", KeyLimits())
    first = request_headers([(0, None)] * 2, "d1", "k")
    other = request_headers([(0, None)] * 3, "d2", "k")
    fetch = [record(0, 1, b"a", first[0]), record(1, 1, b"b", first[1])]
    fetch += [record(2 + i, 2, b"x", h) for i, h in enumerate(other)]
    screened = owner.screen("t:0", fetch)
    assert screened is not None
    owner.commit("t:0", screened)
    assert [m.value for m in screened.kept] == [b"a", b"b"]
    assert owner.status() == {"keys": 1, "dropped": 0, "conflicts": 3}


def test_keys_are_forgotten_a_day_after_they_were_first_seen() -> None:
    owner = TopicKeys("events", KeyLimits())
    for i, at in enumerate([0, 10, TTL_MS + 5]):
        header = request_headers([(0, None)], f"d{i}", f"k{i}")[0]
        screened = owner.screen("t:0", [record(i, at, b"v", header)])
        assert screened is not None
        owner.commit("t:0", screened)
    # the newest came a day and 5 ms after the first: the first is forgotten, the second kept
    assert [row[0] for row in owner.save("t:0")] == ["k1", "k2"]
