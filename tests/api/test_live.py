"""Live answers over SSE: first answer, exact changes, resume, one computation for many, drops."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from api.live import QUEUE, Hub, Message, Subscriber, Topic
from tests.helpers import MINUTE_CONFIG, minute_orders, running, until

URL = "/v1/views/per_minute"


async def next_event(stream: aiohttp.StreamReader) -> dict[str, Any]:
    """The next SSE event (comments skipped): {"id", "event", "data"}."""
    event: dict[str, Any] = {}
    while True:
        line = (await asyncio.wait_for(stream.readline(), 10)).decode().rstrip("\n")
        if not line:
            if event:
                event["data"] = orjson.loads(event["data"])
                return event
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        event[name] = value


def apply_change(rows: list[dict[str, Any]], change: dict[str, Any]) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["country"], r["minute"])

    out = {key(r): r for r in rows}
    for gone in change.get("delete", []):
        out.pop(key(gone), None)
    for row in change.get("upsert", []):
        out[key(row)] = row
    return sorted(out.values(), key=lambda r: (r["minute"], r["country"]))


@pytest.mark.asyncio
async def test_first_answer_then_exact_changes_then_resume(tmp_path: Path) -> None:
    async with running(MINUTE_CONFIG, tmp_path) as (client, engine):
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 1.0)]))
        live = await client.get(f"{URL}/subscribe?interval=100ms")
        assert live.headers["Content-Type"] == "text/event-stream"
        first = await next_event(live.content)
        assert first["event"] == "answer"
        answer = await (await client.get(URL)).json()
        assert first["data"]["rows"] == answer["rows"]
        assert first["data"]["freshness"] == answer["freshness"]

        await client.post(
            "/v1/sources/orders/events", data=minute_orders([(0, "FR", 2.0), (1, "DE", 5.0)])
        )
        change = await next_event(live.content)
        assert change["event"] == "change"
        now = await (await client.get(URL)).json()
        assert change["data"]["delete"] == []
        assert sorted(change["data"]["upsert"], key=lambda r: r["country"]) == [
            r for r in sorted(now["rows"], key=lambda r: r["country"])
        ]  # both rows changed (FR grew, DE is new): exactly those
        assert apply_change(first["data"]["rows"], change["data"]) == now["rows"]
        last_id = change["id"]
        live.close()

        # Missed while away: two more changes; a reconnect with Last-Event-ID gets just those.
        topic = next(iter(engine.hub.topics.values()))
        await client.post("/v1/sources/orders/events", data=minute_orders([(2, "US", 7.0)]))
        await until(lambda: _settled(topic, engine), timeout=10)
        await client.post("/v1/sources/orders/events", data=minute_orders([(2, "US", 1.0)]))
        held = await client.get(f"{URL}/subscribe?interval=100ms")  # keeps the topic alive
        await next_event(held.content)
        await until(lambda: _settled(topic, engine), timeout=10)
        back = await client.get(
            f"{URL}/subscribe?interval=100ms", headers={"Last-Event-ID": last_id}
        )
        rows = now["rows"]
        while rows != (await (await client.get(URL)).json())["rows"]:
            missed = await next_event(back.content)
            assert missed["event"] == "change"
            rows = apply_change(rows, missed["data"])
        # An id from another epoch (a restart) or too old: a full answer instead.
        fresh = await client.get(
            f"{URL}/subscribe?interval=100ms", headers={"Last-Event-ID": "0-1"}
        )
        full = await next_event(fresh.content)
        assert full["event"] == "answer"
        assert full["data"]["rows"] == rows
        for stream in (held, back, fresh):
            stream.close()


async def _settled(topic: Topic, engine: Any) -> bool:
    return bool(topic.answered_at == engine.registry.sources["orders"].version)


@pytest.mark.asyncio
async def test_a_thousand_subscribers_cost_one_computation_per_interval(tmp_path: Path) -> None:
    async with running(MINUTE_CONFIG, tmp_path) as (client, engine):
        engine.hub.linger = 0.2
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 1.0)]))
        url = str(client.make_url(f"{URL}/subscribe?interval=200ms&country=FR"))
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            streams = await asyncio.gather(*[session.get(url) for _ in range(1000)])
            firsts = await asyncio.gather(*[next_event(s.content) for s in streams])
            assert {f["event"] for f in firsts} == {"answer"}
            (topic,) = engine.hub.topics.values()
            assert len(topic.subscribers) == 1000
            before = topic.computations
            await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 4.0)]))
            changes = await asyncio.gather(*[next_event(s.content) for s in streams])
            assert {orjson.dumps(c["data"]) for c in changes} == {orjson.dumps(changes[0]["data"])}
            assert changes[0]["data"]["upsert"][0]["revenue"] == 5
            # One computation for the change, for all 1,000 (the counter, not a timer).
            assert topic.computations == before + 1
            for s in streams:
                s.close()
        await until(lambda: _no_topics(engine), timeout=10)  # the last one gone: topic ends


async def _no_topics(engine: Any) -> bool:
    return not bool(engine.hub.topics)


@pytest.mark.asyncio
async def test_a_subscriber_that_stops_reading_is_dropped(tmp_path: Path) -> None:
    async with running(MINUTE_CONFIG, tmp_path) as (client, engine):
        await client.post("/v1/sources/orders/events", data=minute_orders([(0, "FR", 1.0)]))
        host, port = client.server.host, client.server.port
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(
            f"GET {URL}/subscribe?interval=100ms&limit=10000 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        await until(lambda: _subscribed(engine), timeout=10)
        (topic,) = engine.hub.topics.values()
        (stuck,) = topic.subscribers
        # Each batch changes the same 500 rows: big messages, and the client reads none.
        batches = 0
        while not stuck.dropped:
            batches += 1
            batch = [(1, f"c{i}", 1.0) for i in range(500)]
            await client.post("/v1/sources/orders/events", data=minute_orders(batch))
            assert stuck.queue.qsize() <= QUEUE  # bounded while it lasts
            await until(lambda: _settled(topic, engine), timeout=10)  # the change is offered
            assert batches < 500, "never dropped"
        assert engine.hub.dropped == 1
        assert stuck not in topic.subscribers
        sock.close()


async def _subscribed(engine: Any) -> bool:
    return any(bool(t.subscribers) for t in engine.hub.topics.values())


def test_offer_to_a_full_queue_drops_and_closes() -> None:
    closed = []
    hub = Hub()
    topic = Topic(("k",), lambda: {}, lambda: 0, "rows", 1.0, hub)
    subscriber = Subscriber(lambda: closed.append(True))
    topic.subscribers.add(subscriber)
    message = Message("e-1", "change", b"{}")
    for _ in range(QUEUE):
        topic.offer(subscriber, message)
    assert not subscriber.dropped
    topic.offer(subscriber, message)
    assert subscriber.dropped
    assert closed == [True]
    assert subscriber not in topic.subscribers
    assert subscriber.queue.qsize() == QUEUE  # the last slot holds the end marker


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "missing"),
    [
        ("columns=revenue", "minute, country"),
        ("columns=country,revenue", "minute"),
        ("columns=revenue&bucket=all", "country"),
        ("columns=revenue&group_by=", "minute"),  # one row per minute: the window tells
        ("columns=minute,revenue&group_by=", None),
        ("columns=country,n&bucket=all", None),
        ("columns=minute,country,n", None),
    ],
)
async def test_a_live_projection_keeps_what_tells_its_rows_apart(
    tmp_path: Path, query: str, missing: str | None
) -> None:
    """Changes name rows by window and keys: a columns= leaving one out is a 400 saying which,
    not a stream whose changes merge rows."""
    async with running(MINUTE_CONFIG, tmp_path) as (client, _):
        response = await client.get(f"/v1/views/per_minute/subscribe?{query}")
        if missing is None:
            assert response.status == 200
            response.close()
            return
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["param"] == "columns"
        assert error["message"].endswith(f"keep {missing} in columns")
