"""Embed tokens: a browser sees only its tenant's rows, whatever it asks; expired or tampered
tokens are 401 without detail."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from api.auth import mint_embed, new_token
from tests.helpers import MINUTE_CONFIG, minute_orders, running

KEY = "k" * 48
WRITER, WRITER_LINE = new_token("backend", ["append:orders"])
CONFIG = (
    MINUTE_CONFIG
    + f"""
[views.totals]
sql = "SELECT count(*) AS n FROM orders"

[auth]
tokens = [{WRITER_LINE}]
embed_secret_env = "TALLYD_TEST_EMBED_KEY"
embed_max_ttl = "2h"
"""
)
WRITE = {"Authorization": f"Bearer {WRITER}"}


@pytest.fixture(autouse=True)
def embed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYD_TEST_EMBED_KEY", KEY)


def token(views: list[str], filters: dict[str, Any], ttl: int = 600, key: str = KEY) -> str:
    return mint_embed(key.encode(), views, filters, ttl, int(time.time()))


async def countries(client: Any, url: str) -> set[str]:
    response = await client.get(url)
    assert response.status == 200, await response.text()
    return {r["country"] for r in (await response.json())["rows"]}


@pytest.mark.asyncio
async def test_forced_filters_never_widen(tmp_path: Path) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        body = minute_orders([(m, c, 1.0) for m in range(3) for c in ("FR", "DE", "US")])
        assert (
            await client.post("/v1/sources/orders/events", data=body, headers=WRITE)
        ).status == 200
        fr = token(["per_minute"], {"country": "FR"})
        auth = {"Authorization": f"Bearer {fr}"}
        assert await countries(client, f"/v1/views/per_minute?token={fr}") == {"FR"}
        assert await countries(client, f"/v1/views/per_minute?country=FR&token={fr}") == {"FR"}
        rolled = await (
            await client.get("/v1/views/per_minute?group_by=&bucket=all", headers=auth)
        ).json()
        assert rolled["rows"][0]["n"] == 3  # a rollup only over the tenant's rows
        series = await (
            await client.get("/v1/views/per_minute/series?metric=n&split_by=country", headers=auth)
        ).json()
        assert [s["name"] for s in series["series"]] == ["FR"]
        live = await client.get(f"/v1/views/per_minute/subscribe?token={fr}")
        first = await live.content.readuntil(b"\n\n")
        assert b'"country":"FR"' in first
        assert b'"DE"' not in first
        live.close()
        for widening in ("country=DE", "country=FR&country=DE"):
            response = await client.get(f"/v1/views/per_minute?{widening}", headers=auth)
            assert response.status == 403  # refused, not silently merged
        # Views outside the token, and views its filters cannot apply to: 403.
        assert (await client.get("/v1/views/totals", headers=auth)).status == 403
        both = token(["per_minute", "totals"], {"country": "FR"})
        response = await client.get("/v1/views/totals", headers={"Authorization": f"Bearer {both}"})
        assert response.status == 403
        listed = await (await client.get("/v1/views", headers=auth)).json()
        assert [v["name"] for v in listed["views"]] == ["per_minute"]
        # Embed tokens only read.
        post = await client.post("/v1/sources/orders/events", data=body, headers=auth)
        assert post.status == 403


@pytest.mark.asyncio
async def test_expired_tampered_foreign_or_overlong_tokens_are_401_without_detail(
    tmp_path: Path,
) -> None:
    async with running(CONFIG, tmp_path) as (client, _):
        good = token(["per_minute"], {"country": "FR"})
        header, _, signature = good.split(".")
        claims = jwt.decode(good, KEY, algorithms=["HS256"])
        widened = jwt.encode({**claims, "filters": {}}, "x" * 48, algorithm="HS256").split(".")[1]
        bad_tokens = {
            "expired": mint_embed(KEY.encode(), ["per_minute"], {}, 60, int(time.time()) - 3600),
            "tampered payload": f"{header}.{widened}.{signature}",
            "other key": token(["per_minute"], {}, key="z" * 48),
            "alg none": jwt.encode(claims, None, algorithm="none"),
            "lives too long": token(["per_minute"], {}, ttl=3 * 3600),
        }
        for why, bad in bad_tokens.items():
            response = await client.get(
                "/v1/views/per_minute", headers={"Authorization": f"Bearer {bad}"}
            )
            assert response.status == 401, why
            message = (await response.json())["error"]["message"]
            assert "expired" not in message, why
            assert "signature" not in message, why


def test_embed_secret_must_be_set_and_long(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.auth import AuthError, parse_auth

    raw = {"embed_secret_env": "TALLYD_TEST_EMBED_KEY"}
    assert parse_auth(raw, "x.toml", ["v"], ["s"]).embed_key == KEY.encode()
    monkeypatch.setenv("TALLYD_TEST_EMBED_KEY", "short")
    with pytest.raises(AuthError, match="at least 32 characters"):
        parse_auth(raw, "x.toml", ["v"], ["s"])
