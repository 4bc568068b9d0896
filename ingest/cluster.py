"""Who owns which partition, and where to reach it: the consumer group's own protocol, not ours.

With a ``[cluster]`` table, each Kafka source joins its consumer group offering the ``tallyd``
assignment protocol before the stock ``roundrobin`` one. Like Kafka Streams'
``application.server`` and Faust's assignor user data, every member puts its HTTP address in the
metadata it sends when it joins (``Membership.metadata``); the group leader's assignor splits the
partitions and hands every member, with its own partitions, the whole map — each member's address
and partitions, under one assignment id (``Membership.assign``); each member keeps that map until
the next rebalance (``Membership.on_assignment``). Membership, failure detection and rebalancing
stay Kafka's: a member that dies leaves the group after its session timeout and the leader's next
assignment leaves it out.

A group where some member does not offer ``tallyd`` (an older release, or no ``[cluster]``)
agrees on ``roundrobin``: partitions are still split, but no member knows the map, and says so.
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

log = logging.getLogger("tallyd.cluster")

PROTOCOL = "tallyd"
VERSION = 1
CLUSTER_FIELDS = {"advertise", "secret_env"}


class ClusterError(ValueError):
    pass


def advertised(table: dict[str, Any], listen: str, path: str = "<config>") -> str:
    """The URL other members reach this one at: ``[cluster] advertise``, or ``http://`` and the
    address the server listens on when that is one a peer can dial."""
    unknown = set(table) - CLUSTER_FIELDS
    if unknown:
        raise ClusterError(
            f"{path}: cluster: field '{sorted(unknown)[0]}': unknown field; known: "
            f"{sorted(CLUSTER_FIELDS)}"
        )
    url = table.get("advertise")
    if url is None:
        host = listen.rpartition(":")[0].strip("[]")
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 - we refuse it, not bind it
            raise ClusterError(
                f"{path}: cluster: field 'advertise': the server listens on {listen}, which is "
                'not an address peers can dial; set advertise = "http://HOST:PORT" to the '
                "address the other members reach this one at"
            )
        return f"http://{listen}"
    if not isinstance(url, str):
        raise ClusterError(f"{path}: cluster: field 'advertise': expected a string URL")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise ClusterError(
            f"{path}: cluster: field 'advertise': {url!r} is not an http(s)://HOST:PORT URL"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ClusterError(
            f"{path}: cluster: field 'advertise': {url!r}: the address only, no path or query"
        )
    return f"{parts.scheme}://{parts.netloc}"


def cluster_secret(
    table: dict[str, Any],
    path: str = "<config>",
    environ: Mapping[str, str] | None = None,
    read: bool = True,
) -> bytes:
    """The secret members present to each other (``Authorization: Bearer``), read from the
    environment variable ``[cluster] secret_env`` names: the same on every member. ``read``
    False checks the name only (``tallyd check`` runs where the secret is not)."""
    name = table.get("secret_env")
    if not isinstance(name, str) or not name.isidentifier():
        raise ClusterError(
            f"{path}: cluster: field 'secret_env': name the environment variable that holds the "
            'secret the members share, e.g. secret_env = "TALLYD_CLUSTER_SECRET"'
        )
    if not read:
        return b""
    value = (os.environ if environ is None else environ).get(name, "")
    if len(value) < 16:
        raise ClusterError(
            f"{path}: cluster: field 'secret_env': ${name} is "
            + ("not set" if not value else "shorter than 16 characters")
            + "; give every member the same long random value (e.g. `openssl rand -hex 32`)"
        )
    return value.encode()


@dataclass(frozen=True)
class Member:
    member: str  # the group's member id
    url: str | None  # what it advertised
    partitions: tuple[str, ...]  # "topic:partition", sorted


@dataclass(frozen=True)
class Topology:
    """One assignment of the group, as the leader made it."""

    assignment: str  # an id of this assignment, the same on every member
    members: tuple[Member, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "assignment": self.assignment,
            "members": [
                {"member": m.member, "url": m.url, "partitions": list(m.partitions)}
                for m in self.members
            ],
        }

    @staticmethod
    def from_json(data: Any) -> Topology:
        members = tuple(
            Member(str(m["member"]), m["url"], tuple(m["partitions"])) for m in data["members"]
        )
        return Topology(str(data["assignment"]), members)


def _url(metadata: ConsumerProtocolMemberMetadata) -> str | None:
    try:
        url = orjson.loads(metadata.user_data or b"{}").get("url")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return url if isinstance(url, str) else None


class Membership(AbstractPartitionAssignor):  # type: ignore[misc]
    """The ``tallyd`` assignment protocol of one member (an instance: it carries this member's
    address and the map it was last given)."""

    name = PROTOCOL
    version = VERSION

    def __init__(self, url: str) -> None:
        self.url = url
        self.topology: Topology | None = None  # None: not assigned by this protocol (yet)

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        user_data = orjson.dumps({"url": self.url, "version": VERSION})
        return ConsumerProtocolMemberMetadata(VERSION, sorted(topics), user_data)

    def assign(
        self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        """Round robin over the sorted partitions of every subscribed topic and the members
        sorted by id (a member gets only topics it subscribes to); every member is sent the
        whole map with its own partitions."""
        topics = sorted({t for m in members.values() for t in m.subscription})
        owned: dict[str, dict[str, list[int]]] = {m: defaultdict(list) for m in members}
        order = sorted(members)
        every: list[tuple[str, int]] = []
        for topic in topics:
            partitions = cluster.partitions_for_topic(topic)
            if partitions is None:
                log.warning("event=no_partition_metadata topic=%s", topic)
                continue
            every += [(topic, p) for p in sorted(partitions)]
        turn = itertools.cycle(order)
        for topic, partition in every:  # one turn across topics, as the stock round robin
            member = next(turn)
            while topic not in members[member].subscription:  # someone subscribes: it is there
                member = next(turn)
            owned[member][topic].append(partition)
        urls = {m: _url(members[m]) for m in order}
        shared = [u for u in urls.values() if u is not None]
        if len(shared) != len(set(shared)):
            log.warning("event=duplicate_advertise urls=%s", ",".join(sorted(shared)))
        topology = Topology(
            uuid.uuid4().hex,
            tuple(
                Member(
                    m,
                    urls[m],
                    tuple(f"{t}:{p}" for t in sorted(owned[m]) for p in owned[m][t]),
                )
                for m in order
            ),
        )
        user_data = orjson.dumps(topology.to_json())
        return {
            m: ConsumerProtocolMemberAssignment(
                VERSION, sorted((t, ps) for t, ps in owned[m].items() if ps), user_data
            )
            for m in order
        }

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        try:
            self.topology = Topology.from_json(orjson.loads(assignment.user_data))
        except (orjson.JSONDecodeError, KeyError, TypeError) as err:
            log.warning("event=bad_assignment_user_data error=%r", str(err))
            self.topology = None

    def forget(self) -> None:
        """A rebalance has begun: the map this member had is no longer the group's."""
        self.topology = None

    def status(self) -> dict[str, Any]:
        """What this member knows of the group, for ``/v1/status`` and ``/v1/sources``."""
        if self.topology is None:
            return {
                "advertise": self.url,
                "protocol": None,
                "assignment": None,
                "members": None,
                "note": "no tallyd assignment yet: rebalancing, or a member of the group does "
                "not offer the tallyd protocol (an older release, or no [cluster] table)",
            }
        urls = [m.url for m in self.topology.members if m.url is not None]
        duplicate = len(urls) != len(set(urls))
        return {
            "advertise": self.url,
            "protocol": PROTOCOL,
            **self.topology.to_json(),
            "members": [
                {**entry, "self": entry["url"] == self.url}
                for entry in self.topology.to_json()["members"]
            ],
            "note": "two members advertise the same address: set [cluster] advertise on each"
            if duplicate
            else None,
        }
