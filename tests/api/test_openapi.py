"""Schemathesis fuzzes every operation of /openapi.json against a real server: no 5xx, and every
answer's status and content type allowed by the document (bounded examples, derandomized)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from api.app import ROUTES
from api.auth import new_token
from api.pages import ASSETS
from benchmarks.server import ServerProcess
from tests.helpers import MINUTE_CONFIG, minute_orders

ADMIN, ADMIN_LINE = new_token("fuzzer", ["admin"])
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("openapi")
    config = tmp / "tallyd.toml"
    config.write_text(MINUTE_CONFIG + f"\n[auth]\ntokens = [{ADMIN_LINE}]\n")
    process = ServerProcess(config, tmp / "data", tmp / "server.log")
    asyncio.run(process.start())
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - our own server on 127.0.0.1
        f"{process.url}/v1/sources/orders/events",
        data=minute_orders([(m, c, 2.5) for m in range(5) for c in ("FR", "DE")]),
        method="POST",
        headers=AUTH,
    )
    with urllib.request.urlopen(request) as response:  # noqa: S310 - our own server
        assert response.status == 200
    yield process
    assert process.terminate() == 0
    assert "internal_error" not in (tmp / "server.log").read_text()


@pytest.fixture(scope="module")
def api_schema(server: ServerProcess) -> Any:
    loaded = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    # A live stream never ends: it is tested in test_live.py, not fuzzed. Applying a config
    # changes the server's views under the other operations' feet: test_apply_config.py.
    return loaded.exclude(path="/v1/views/{view}/subscribe").exclude(
        method="POST", path="/v1/admin/config"
    )


def test_every_route_is_in_the_document(server: ServerProcess) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/openapi.json") as response:  # noqa: S310
        document = json.load(response)
    described = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert described == {(m, p) for m, p, *_ in ROUTES}


def test_fuzz_every_operation(api_schema: Any) -> None:
    """Each operation with bounded, derandomized examples (Hypothesis drives Schemathesis'
    strategies directly: its pytest plugin does not run under this pytest)."""
    fuzzed = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=AUTH, timeout=10)

        run()
        fuzzed.append(operation.label)
    # Every operation but the live stream, applying a config, and the document itself
    # (Schemathesis skips it).
    skipped = {"GET /v1/views/{view}/subscribe", "POST /v1/admin/config", "GET /openapi.json"}
    assert set(fuzzed) == {f"{m} {p}" for m, p, *_ in ROUTES} - skipped


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_each_asset_answers_as_documented(api_schema: Any, name: str) -> None:
    """Fuzzing reaches a real asset name only by chance (it once did: the CSS was answered with
    a type the document did not list); every asset, checked every time."""
    operation = api_schema.find_operation_by_path("GET", "/assets/{name}")
    operation.Case(path_parameters={"name": name}).call_and_validate(headers=AUTH, timeout=10)
