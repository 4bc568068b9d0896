"""The tallyd assignment protocol (ingest/cluster.py) without a broker: the leader's split of the
partitions, the map every member is sent through the group protocol's own encoding, and the
address each member advertises — checked against plain Python."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocol

from ingest.cluster import ClusterError, Membership, advertised
from views.config import ConfigError, parse


class Cluster:
    """What the assignor reads of the broker's metadata: each topic's partitions."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.partitions.get(topic)
        return None if count is None else set(range(count))


def join(
    members: dict[str, tuple[Membership, list[str]]], cluster: Cluster
) -> dict[str, list[str]]:
    """One rebalance as the group runs it: each member's metadata encoded as it goes to the
    broker, the leader's assign, each assignment encoded and decoded, then on_assignment."""
    metadata = {
        member: ConsumerProtocol.METADATA.decode(
            ConsumerProtocol.METADATA.encode(membership.metadata(topics))
        )
        for member, (membership, topics) in members.items()
    }
    leader = next(iter(members.values()))[0]
    got: dict[str, list[str]] = {}
    for member, assignment in leader.assign(cluster, metadata).items():
        decoded = ConsumerProtocol.ASSIGNMENT.decode(ConsumerProtocol.ASSIGNMENT.encode(assignment))
        members[member][0].on_assignment(decoded)
        got[member] = [f"{tp.topic}:{tp.partition}" for tp in decoded.partitions()]
    return got


@pytest.mark.parametrize("seed", range(20))
def test_every_partition_goes_to_one_subscriber_and_every_member_gets_the_same_map(
    seed: int,
) -> None:
    rng = random.Random(seed)
    topics = {f"t{i}": rng.randint(1, 12) for i in range(rng.randint(1, 3))}
    members = {}
    for i in range(rng.randint(1, 5)):
        subscribed = sorted(rng.sample(sorted(topics), rng.randint(1, len(topics))))
        members[f"member-{rng.random():.6f}"] = (Membership(f"http://10.0.0.{i}:8080"), subscribed)
    got = join(members, Cluster(topics))

    owners = Counter(p for parts in got.values() for p in parts)
    subscribed_to = {t for _, ts in members.values() for t in ts}
    expected = {f"{t}:{p}" for t in subscribed_to for p in range(topics[t])}
    assert set(owners) == expected
    assert set(owners.values()) == {1}
    for member, parts in got.items():  # only topics the member subscribes to
        assert {p.rpartition(":")[0] for p in parts} <= set(members[member][1])
    if all(ts == sorted(subscribed_to) for _, ts in members.values()):
        sizes = [len(parts) for parts in got.values()]
        assert max(sizes) - min(sizes) <= 1  # same subscriptions: balanced

    maps = [m.status() for m, _ in members.values()]
    assert len({s["assignment"] for s in maps}) == 1  # one assignment, the same id everywhere
    for (membership, _), status in zip(members.values(), maps, strict=True):
        assert status["protocol"] == "tallyd"
        assert status["note"] is None
        listed = {m["member"]: m for m in status["members"]}
        assert {k: v["partitions"] for k, v in listed.items()} == {
            k: sorted(v, key=lambda p: (p.rpartition(":")[0], int(p.rpartition(":")[2])))
            for k, v in got.items()
        }
        assert {k: v["url"] for k, v in listed.items()} == {
            k: m.url for k, (m, _) in members.items()
        }
        assert [m["url"] for m in status["members"] if m["self"]] == [membership.url]


def test_a_rebalance_forgets_the_map_until_the_next_assignment() -> None:
    a, b = Membership("http://a:1"), Membership("http://b:2")
    join({"a": (a, ["t"]), "b": (b, ["t"])}, Cluster({"t": 4}))
    first = a.status()["assignment"]
    a.forget()
    assert a.status()["members"] is None
    assert a.status()["protocol"] is None
    join({"a": (a, ["t"])}, Cluster({"t": 4}))  # b left: a owns all four
    after = a.status()
    assert after["assignment"] != first
    assert after["members"] == [
        {
            "member": "a",
            "url": "http://a:1",
            "partitions": ["t:0", "t:1", "t:2", "t:3"],
            "self": True,
        }
    ]


def test_two_members_with_one_address_are_flagged() -> None:
    a, b = Membership("http://127.0.0.1:8080"), Membership("http://127.0.0.1:8080")
    join({"a": (a, ["t"]), "b": (b, ["t"])}, Cluster({"t": 2}))
    assert "same address" in a.status()["note"]


@pytest.mark.parametrize(
    ("table", "listen", "url"),
    [
        ({}, "127.0.0.1:8081", "http://127.0.0.1:8081"),
        ({}, "node-3.internal:9000", "http://node-3.internal:9000"),
        (
            {"advertise": "https://node-1.example.com:443"},
            "0.0.0.0:8080",
            "https://node-1.example.com:443",
        ),
        ({"advertise": "http://10.1.2.3:8080/"}, "0.0.0.0:8080", "http://10.1.2.3:8080"),
    ],
)
def test_the_advertised_address(table: dict[str, str], listen: str, url: str) -> None:
    assert advertised(table, listen, "x.toml") == url


@pytest.mark.parametrize(
    ("table", "listen", "message"),
    [
        (
            {},
            "0.0.0.0:8080",
            "x.toml: cluster: field 'advertise': the server listens on 0.0.0.0:8080",
        ),
        ({"advertise": "10.1.2.3:8080"}, "0.0.0.0:8080", "is not an http(s)://HOST:PORT URL"),
        ({"advertise": "http://10.1.2.3"}, "0.0.0.0:8080", "is not an http(s)://HOST:PORT URL"),
        ({"advertise": "http://h:8080/tallyd"}, "0.0.0.0:8080", "the address only, no path"),
        ({"advertise": 8080}, "0.0.0.0:8080", "expected a string URL"),
        (
            {"adverise": "http://h:1"},
            "127.0.0.1:1",
            "x.toml: cluster: field 'adverise': unknown field",
        ),
    ],
)
def test_a_bad_cluster_table_is_refused_by_name(
    table: dict[str, object], listen: str, message: str
) -> None:
    with pytest.raises(ClusterError) as err:
        advertised(table, listen, "x.toml")
    assert str(err.value).startswith("x.toml: cluster: field")
    assert message in str(err.value)


def test_a_cluster_needs_a_kafka_source() -> None:
    raw = {
        "sources": {"s": {"time": "ts"}},
        "views": {"v": {"sql": "SELECT count(*) AS n FROM s"}},
        "cluster": {},
    }
    with pytest.raises(ConfigError) as err:
        parse(raw, "x.toml")
    assert str(err.value).startswith("x.toml: cluster: a cluster is the members of a Kafka")
