"""A snapshot encoded piece by piece is byte-identical to the state encoded at once."""

from __future__ import annotations

import random

import orjson
import pytest

from views.config import parse
from views.registry import Batch, Registry


@pytest.mark.parametrize("piece_groups", [1, 7, 250, 2_000])
def test_state_json_equals_the_whole_state_encoded_at_once(piece_groups: int) -> None:
    config = parse(
        {
            "sources": {
                "s": {"time": "ts"},
                "k": {
                    "time": "ts",
                    "from": "kafka",
                    "bootstrap": "x:1",
                    "topic": "t",
                    "group": "g",
                },
                "quiet": {"time": "ts"},
            },
            "views": {
                "v": {
                    "sql": "SELECT c, tumble(ts, '1 minute') AS m, count(*) AS n, sum(x) AS t, "
                    "p50(x) AS p FROM s GROUP BY c, m"
                },
                "w": {"sql": "SELECT top_k(c, 3) AS top, count(*) AS n FROM s"},
                "kv": {"sql": "SELECT count(*) AS n FROM k"},
                "empty": {"sql": "SELECT count(*) AS n FROM quiet"},
            },
        }
    )
    registry = Registry(config.sources, config.views)
    rng = random.Random(1)
    for i in range(1, 6):
        events = [
            {
                "ts": 1_790_000_000_000 + rng.randrange(600_000),
                "c": rng.choice("abcd"),
                "x": rng.random(),
            }
            for _ in range(200)
        ]
        registry.apply(Batch("s", events, i))
        registry.apply(Batch("k", [dict(e) for e in events], i, part="t:0"))
    extra = {"position": 5, "receipts": {"key": {"at": 1}}}  # a log's fields come first
    pieces = registry.state_json(extra, frozenset({"k"}), piece_groups)
    assert b"".join(pieces) == orjson.dumps(registry.to_state(extra, frozenset({"k"})))
    assert b"".join(registry.state_json()) == orjson.dumps(registry.to_state())
