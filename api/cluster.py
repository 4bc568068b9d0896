"""Any member answers for the whole topic: it asks each partition's owner for that partition's
state of the view, merges it with its own, and answers as a single node would.

The map of who owns what and where comes from the consumer group (``ingest.cluster``). A peer
answers ``GET /v1/cluster/parts/{view}`` — only to a caller presenting the cluster's shared secret
— with the state of the view's partitions it owns: the same per-partition state a part file
holds, in the snapshot codec (versioned, checksummed, never pickle), with each partition's
position and the peer's watermark. The asking member loads every partition's state, its own
included, into a scratch copy of the view and runs the query there: merging partitions is what
the engine does for one node's partitions already, so percentiles, distinct counts and top-k
merge exactly as they do on one node.

No silently short answer: while the group is rebalancing (no map) the member waits up to
``WAIT`` seconds for one; a peer that does not answer within ``PEER_TIMEOUT`` leaves its
partitions out, and the answer says ``"partial": true`` with the missing partitions in its
``freshness`` (a header for CSV and NDJSON).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import MultiDict, MultiMapping

from api.context import engine_of, view_of
from api.engine import Engine
from api.errors import ApiError
from api.params import bad
from ingest.cluster import Member, Membership, Topology
from views import snapshot
from views.timefmt import format_optional
from views.view import View

PARTS_PATH = "/v1/cluster/parts/{view}"
WAIT = 5.0  # seconds an answer waits for the group to agree on a map
PEER_TIMEOUT = 5.0  # seconds a peer has to send its partitions


def membership_of(engine: Engine, source: str) -> Membership | None:
    membership = getattr(engine.sources[source], "membership", None)
    return membership if isinstance(membership, Membership) else None


def _authorized(request: web.Request, engine: Engine) -> None:
    if engine.cluster_secret is None:
        raise ApiError(404, "this server is not a cluster member (no [cluster] table)")
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
    if not hmac.compare_digest(given, engine.cluster_secret):
        raise ApiError(403, "cluster calls need the cluster's shared secret ([cluster] secret_env)")


async def view_parts(request: web.Request) -> web.Response:
    """The peer's side: this member's partitions of a view, as the snapshot codec encodes them."""
    engine = engine_of(request)
    _authorized(request, engine)
    view = view_of(engine, request)
    source = view.spec.source
    membership = membership_of(engine, source)
    if membership is None:
        raise ApiError(404, f"view '{view.spec.name}' is not over a clustered Kafka source")
    # The ETag: this member's assignment and the version of the source here (bumped by every
    # batch, hand-over and restore): an asking member that has this state already gets a 304.
    etag = f'"{_assignment(membership)}-{engine.registry.sources[source].version}"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    async with engine.committer.step():  # no batch lands while the parts are read and encoded
        etag = f'"{_assignment(membership)}-{engine.registry.sources[source].version}"'
        owned = sorted(getattr(engine.sources[source], "owned", set()))
        positions = engine.registry.sources[source].positions
        body = {
            "assignment": _assignment(membership),
            "fingerprint": view.spec.fingerprint,
            "watermark": engine.watermark(source),
            "parts": {
                part: {"position": positions.get(part), "state": view.part_state(part)}
                for part in owned
            },
        }
        data = await asyncio.to_thread(snapshot.encode, body)
    return web.Response(body=data, content_type="application/octet-stream", headers={"ETag": etag})


def _assignment(membership: Membership) -> str | None:
    return None if membership.topology is None else membership.topology.assignment


@dataclass
class Whole:
    """A view over every partition the group has: which it lacks, and a version that changes
    whenever any member's state of it may have (the answer cache's key)."""

    engine: Engine
    local: View
    freshness: dict[str, Any]
    partial: bool
    version: tuple[Any, ...]
    remote: list[tuple[Member, dict[str, Any]]]  # each answering peer's partitions
    positions: dict[str, int | None]  # every partition's, as included

    def reached(self, wanted: dict[str, int]) -> bool:
        """Has every partition of ``wanted`` been applied up to its position?"""
        return all((self.positions.get(p) or 0) >= n for p, n in wanted.items())

    @property
    def watermark(self) -> int | None:
        """The whole topic's watermark: the oldest of the members' (each is its partitions')."""
        value = self.freshness["watermark_ms"]
        return None if value is None else int(value)

    async def view(self) -> View:
        """Every partition's state, this member's own included, in a scratch copy of the view."""
        local, engine = self.local, self.engine
        scratch = View(local.spec, local.time_field, local.keep)
        for member, answer in self.remote:
            for part, entry in answer["parts"].items():
                if part in member.partitions:
                    scratch.load_part(part, entry["state"])
        source = local.spec.source
        async with engine.committer.step():  # this member's own partitions, as of now
            mine = sorted(getattr(engine.sources[source], "owned", set()))
            states = {p: local.part_state(p) for p in mine}
            data = await asyncio.to_thread(snapshot.encode, {"parts": states})  # a copy
        for part, state in snapshot.decode(data)["parts"].items():
            scratch.load_part(part, state)
        return scratch


async def whole_view(engine: Engine, view: View) -> Whole | None:
    """The view over the whole topic, or None when its source is not clustered (answer locally,
    as before)."""
    source = view.spec.source
    membership = membership_of(engine, source)
    if membership is None:
        return None
    topology = await _topology(membership)
    # A group may hold several sources' consumers (one per source per member): only the members
    # and partitions of this source's topics count, one call per member's address.
    topics = set(getattr(engine.sources[source], "options", {}).get("topics", []))
    ours = [] if topology is None else [_of(m, topics) for m in topology.members]
    peers = _by_url([m for m in ours if m.partitions and m.url != membership.url])
    fetched = await asyncio.gather(*(_fetch(engine, m.url, view.spec.name) for m in peers))
    remote: list[tuple[Member, dict[str, Any]]] = []
    tags: list[str | None] = []
    positions: dict[str, int | None] = {}
    watermarks: list[int] = []
    for member, got in zip(peers, fetched, strict=True):
        tag, answer = got if got is not None else (None, None)
        usable = (
            answer is not None
            and answer.get("fingerprint") == view.spec.fingerprint
            and topology is not None
            and answer.get("assignment") == topology.assignment  # not a newer or older map's
        )
        tags.append(tag if usable else None)
        if not usable or answer is None:
            continue  # its partitions are reported missing below
        remote.append((member, answer))
        for part, entry in answer["parts"].items():
            if part in member.partitions:
                positions[part] = entry["position"]
        if answer.get("watermark") is not None:
            watermarks.append(int(answer["watermark"]))
    registry = engine.registry.sources[source]
    for part in sorted(getattr(engine.sources[source], "owned", set())):
        positions[part] = registry.positions.get(part)
    own = engine.watermark(source)
    if own is not None:
        watermarks.append(own)
    every = {p for m in ours for p in m.partitions}
    missing = sorted(every - set(positions), key=_order)
    partial = topology is None or bool(missing)
    freshness = {
        "source": source,
        "watermark": format_optional(min(watermarks) if watermarks else None),
        "watermark_ms": min(watermarks) if watermarks else None,
        "position": ",".join(
            f"{p}@{'' if positions[p] is None else positions[p]}"
            for p in sorted(positions, key=_order)
        ),
        "partial": partial,
        "missing_partitions": None if topology is None else missing,
        "nodes": 1 + len(remote),
    }
    version = (_assignment(membership), registry.version, tuple(tags))
    return Whole(engine, view, freshness, partial, version, remote, positions)


MIN_POSITION_WAIT = 10.0  # seconds a read with min_position waits for the cluster to get there


async def whole_at(
    engine: Engine, view: View, params: MultiMapping[str]
) -> tuple[Whole | None, MultiMapping[str]]:
    """The whole view (None when not clustered) and the query's parameters without
    ``min_position``; with it — the ``position`` a post to any member answered — the read waits,
    up to ``MIN_POSITION_WAIT``, until every partition named has been applied that far
    (read-your-writes across members), then says in its freshness whether it got there."""
    text = params.get("min_position")
    rest: MultiMapping[str] = MultiDict((k, v) for k, v in params.items() if k != "min_position")
    whole = await whole_view(engine, view)
    if text is None:
        return whole, rest
    if whole is None:
        raise bad("min_position", "only reads of a clustered Kafka source wait for a position")
    wanted = {}
    for item in text.split(","):
        part, _, number = item.rpartition("@")
        if not part or not number.isdigit():
            raise bad("min_position", f"{item!r}: expected TOPIC:PARTITION@OFFSET, comma-separated")
        wanted[part] = int(number)
    deadline = time.monotonic() + MIN_POSITION_WAIT
    while not whole.reached(wanted) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the owners apply what the post appended; bounded
        whole = await whole_view(engine, view)
        assert whole is not None
    whole.freshness["min_position_reached"] = whole.reached(wanted)
    return whole, rest


def _of(member: Member, topics: set[str]) -> Member:
    """``member`` with only its partitions of ``topics``."""
    kept = tuple(p for p in member.partitions if p.rpartition(":")[0] in topics)
    return Member(member.member, member.url, kept)


def _by_url(members: list[Member]) -> list[Member]:
    """One entry per address, with the partitions of every entry of it (a member process with
    several consumers of the topics in one group)."""
    merged: dict[str | None, list[str]] = {}
    for m in members:
        merged.setdefault(m.url, []).extend(m.partitions)
    return [Member(url or "", url, tuple(parts)) for url, parts in merged.items()]


def _order(part: str) -> tuple[str, int]:
    topic, _, number = part.rpartition(":")
    return topic, int(number)


async def _topology(membership: Membership) -> Topology | None:
    """The group's current map, waiting up to ``WAIT`` while a rebalance is in flight."""
    deadline = time.monotonic() + WAIT
    while membership.topology is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the map arrives with the group's next assignment
    return membership.topology


async def _fetch(engine: Engine, url: str | None, view: str) -> tuple[str, dict[str, Any]] | None:
    """(the peer's ETag, its partitions of ``view``), from this member's copy while the peer's
    state is unchanged (a 304), or None when it does not answer in time."""
    if url is None:
        return None
    assert engine.cluster_secret is not None
    known = engine.peer_states.get((url, view))
    headers = {"Authorization": f"Bearer {engine.cluster_secret.decode()}"}
    if known is not None:
        headers["If-None-Match"] = known[0]
    if engine.peer_session is None:  # kept alive: a query costs a round trip, not a handshake
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT)
        engine.peer_session = aiohttp.ClientSession(timeout=timeout)
    session = engine.peer_session
    try:
        async with session.get(url + PARTS_PATH.format(view=view), headers=headers) as response:
            if response.status == 304 and known is not None:
                return known
            if response.status != 200:
                return None
            tag = response.headers.get("ETag", "")
            data = await response.read()
        decoded = await asyncio.to_thread(snapshot.decode, data)
    except (aiohttp.ClientError, TimeoutError, snapshot.SnapshotError, orjson.JSONDecodeError):
        return None
    engine.peer_states[(url, view)] = (tag, decoded)
    return tag, decoded
