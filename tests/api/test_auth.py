"""Authorization, table-driven: every endpoint x every kind of caller -> the expected status; a
token never sees a view it may not read; secrets never reach the logs; CORS from the allowlist."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from api.auth import mint_embed, new_token
from api.server import open_without_tokens
from api.settings import load_settings
from tests.helpers import MINUTE_CONFIG, minute_orders, running
from views.config import parse

API_SECRETS: dict[str, str] = {}
LINES = []
for role, scopes in {
    "read": ["read"],
    "read_totals": ["read:totals"],
    "append": ["append:orders"],
    "admin": ["admin"],
}.items():
    API_SECRETS[role], line = new_token(role, scopes)  # API tokens do not expire
    LINES.append(line)
API_SECRETS["wrong"] = "tly_not-a-token-of-this-server"
EMBED_KEY = "e" * 48


@pytest.fixture(autouse=True)
def embed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYD_TEST_AUTH_EMBED_KEY", EMBED_KEY)  # read when the app starts


@pytest.fixture
def secrets() -> dict[str, str]:
    """Every caller's secret, embed tokens minted now, for this test: minted once at import,
    they would expire under a long run (or a debugger) and fail tests for no fault."""
    now = int(time.time())
    key = EMBED_KEY.encode()
    # Tenant A: the per_minute view, its own country only.
    embed_a = mint_embed(key, ["per_minute"], {"country": ["FR"]}, 3600, now)
    head, claims, signature = embed_a.split(".")
    return {
        **API_SECRETS,
        "embed_a": embed_a,
        "expired": mint_embed(key, ["per_minute"], {"country": ["FR"]}, 60, now - 7200),
        "tampered": f"{head}.{claims[:-4]}AAAA.{signature}",
    }


ORIGIN = "https://app.example.com"
CONFIG = (
    MINUTE_CONFIG
    + """
[views.totals]
sql = "SELECT country, count(*) AS n FROM orders GROUP BY country"

[auth]
tokens = [
  """
    + ",\n  ".join(LINES)
    + f"""
]
cors_origins = ["{ORIGIN}"]
embed_secret_env = "TALLYD_TEST_AUTH_EMBED_KEY"
"""
)
BODY = minute_orders([(0, "FR", 1.0)])
ROLES = (
    "none",
    "wrong",
    "read",
    "read_totals",
    "append",
    "admin",
    "embed_a",
    "expired",
    "tampered",
)
PUBLIC = dict.fromkeys(ROLES, 200)
UNKNOWN = {"none": 401, "wrong": 401, "expired": 401, "tampered": 401}
READ_ANY = {
    **UNKNOWN,
    "read": 200,
    "read_totals": 200,
    "append": 403,
    "admin": 200,
    "embed_a": 200,
}
READ_VIEW = {**READ_ANY, "read_totals": 403}
APPEND = {**UNKNOWN, **dict.fromkeys(("read", "read_totals", "embed_a"), 403)}
APPEND |= {"append": 200, "admin": 200}
ADMIN = {**UNKNOWN, **dict.fromkeys(("read", "read_totals", "append", "embed_a"), 403)}
ADMIN |= {"admin": 200}
ENDPOINTS: list[tuple[str, str, dict[str, int]]] = [
    ("GET", "/healthz", PUBLIC),
    ("GET", "/readyz", PUBLIC),
    ("GET", "/assets/uPlot.min.css", PUBLIC),
    ("GET", "/", READ_ANY),
    ("GET", "/v1/views", READ_ANY),
    ("GET", "/v1/views/per_minute", READ_VIEW),
    ("GET", "/v1/views/per_minute/series?metric=n", READ_VIEW),
    ("GET", "/v1/views/per_minute/chart?metric=n", READ_VIEW),
    ("GET", "/v1/views/per_minute/late", {**READ_VIEW, "embed_a": 403}),  # raw, unfiltered
    ("GET", "/v1/views/totals", {**READ_VIEW, "read_totals": 200, "embed_a": 403}),
    # Tenant A asking for tenant B's rows: refused, for every read of the view.
    ("GET", "/v1/views/per_minute?country=DE", {**READ_VIEW, "embed_a": 403}),
    ("GET", "/v1/views/per_minute/series?metric=n&country=DE", {**READ_VIEW, "embed_a": 403}),
    ("GET", "/v1/views/per_minute/chart?metric=n&country=DE", {**READ_VIEW, "embed_a": 403}),
    ("POST", "/v1/sources/orders/events", APPEND),
    ("GET", "/v1/sources", ADMIN),
    ("GET", "/v1/sources/orders/rejected", ADMIN),
    ("POST", "/v1/admin/snapshot", ADMIN),
    ("GET", "/v1/status", ADMIN),
    ("GET", "/metrics", ADMIN),
]


@pytest.mark.asyncio
async def test_every_endpoint_for_every_caller(
    tmp_path: Path, caplog: Any, secrets: dict[str, str]
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(CONFIG, tmp_path) as (client, _):
        both = minute_orders([(0, "FR", 1.0), (0, "DE", 2.0)])  # two tenants' rows
        admin = {"Authorization": f"Bearer {secrets['admin']}"}
        assert (
            await client.post("/v1/sources/orders/events", data=both, headers=admin)
        ).status == 200
        for method, path, expected in ENDPOINTS:
            for role, status in expected.items():
                for how in ("header", "query"):
                    headers, url = {}, path
                    if role != "none" and how == "header":
                        headers["Authorization"] = f"Bearer {secrets[role]}"
                    elif role != "none":
                        url += ("&" if "?" in path else "?") + f"token={secrets[role]}"
                    data = BODY if method == "POST" else None
                    response = await client.request(method, url, headers=headers, data=data)
                    assert response.status == status, (method, path, role, how)
                    if role == "embed_a" and status == 200:  # never another tenant's row
                        # As a JSON string: bare, DE turns up in the token the pages echo (its
                        # base64 claims, e.g. an expiry of 17961415xx, read "...NDE1...").
                        assert b'"DE"' not in await response.read(), (method, path)
                    if status == 403 and role != "embed_a":  # which scope would do it
                        message = (await response.json())["error"]["message"]
                        assert "scope" in message, message
                        assert f"{method} " in message, message
                    if status == 401:
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")
                        message = (await response.json())["error"]["message"]
                        assert role == "none" or secrets[role] not in message
    # tallyd's own log lines (the test server's access log is the harness's, not tallyd's:
    # `tallyd serve` runs without one) never carry a secret.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tallyd"))
    assert logged  # there were log lines to check
    assert all(secret not in logged for secret in secrets.values())


@pytest.mark.asyncio
async def test_a_token_sees_only_the_views_it_may_read(
    tmp_path: Path, secrets: dict[str, str]
) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        auth = {"Authorization": f"Bearer {secrets['read_totals']}"}
        listed = await (await client.get("/v1/views", headers=auth)).json()
        assert [v["name"] for v in listed["views"]] == ["totals"]
        page = await (await client.get("/", headers=auth)).text()
        assert '"name":"totals"' in page
        assert '"name":"per_minute"' not in page
        live = await client.get(f"/v1/views/per_minute/subscribe?token={secrets['read_totals']}")
        assert live.status == 403


@pytest.mark.asyncio
async def test_cors_answers_allowed_origins_only_and_charts_set_frame_ancestors(
    tmp_path: Path, secrets: dict[str, str]
) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        preflight = await client.options(
            "/v1/views/per_minute",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        auth = {"Authorization": f"Bearer {secrets['read']}"}
        ok = await client.get("/v1/views/per_minute", headers={**auth, "Origin": ORIGIN})
        assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
        other = await client.get(
            "/v1/views/per_minute", headers={**auth, "Origin": "https://evil.example"}
        )
        assert "Access-Control-Allow-Origin" not in other.headers
        chart = await client.get("/v1/views/per_minute/chart?metric=n", headers=auth)
        assert chart.headers["Content-Security-Policy"] == f"frame-ancestors 'self' {ORIGIN}"


def test_serving_beyond_loopback_without_tokens_is_refused_with_how_to_fix() -> None:
    config = parse({"sources": {"s": {"time": "ts"}}, "views": {}})
    public = load_settings({}, "x.toml", listen="0.0.0.0:8080")
    refusal = open_without_tokens(config, public)
    assert refusal is not None
    assert "tallyd token create" in refusal
    assert open_without_tokens(config, load_settings({}, "x.toml", listen="127.0.0.1:8080")) is None
    guarded = parse(
        {
            "sources": {"s": {"time": "ts"}},
            "views": {},
            "auth": {"tokens": [{"name": "a", "sha256": "0" * 64, "scopes": ["admin"]}]},
        }
    )
    assert open_without_tokens(guarded, public) is None


def test_token_create_prints_a_secret_once_and_a_line_holding_only_its_hash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import hashlib
    import tomllib

    from api.cli import main

    assert main(["token", "create", "--name", "ci", "--scopes", "read,append:orders"]) == 0
    out = capsys.readouterr().out.splitlines()
    secret = out[0].rpartition(": ")[2]
    line = tomllib.loads(f"t = {out[-1].strip()}")["t"]
    assert line["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in out[-1]
    assert line["scopes"] == ["read", "append:orders"]
    assert main(["token", "create", "--name", "x", "--scopes", "write"]) == 1


def page_config(page: str) -> Any:
    import json
    import re

    found = re.search(r'id="config" type="application/json">(.*?)</script>', page)
    assert found is not None
    return json.loads(found.group(1))


@pytest.mark.asyncio
async def test_pages_loaded_with_a_url_token_pass_it_on_to_what_they_load(
    tmp_path: Path, secrets: dict[str, str]
) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        secret = secrets["read"]
        page = await (
            await client.get(f"/v1/views/per_minute/chart?metric=n&token={secret}")
        ).text()
        # the page's one element carries it: what tallyd.js loads (series, /v1/live) sends it
        assert f'token="{secret}"' in page
        series = await client.get(f"/v1/views/per_minute/series?metric=n&token={secret}")
        assert series.status == 200
        assert (await client.get("/v1/views/per_minute/series?metric=n")).status == 401
        dashboard = await (await client.get(f"/?token={secret}")).text()
        views = page_config(dashboard)
        for view in views:
            assert (await client.get(view["query"])).status == 200
            if view["chart"]:
                assert (await client.get(view["chart"])).status == 200
