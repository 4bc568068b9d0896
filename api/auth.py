"""Who may do what: tokens with scopes, checked on every request; CORS from an allowlist.

Tokens are declared in the config by their SHA-256 (never the secret itself), each with scopes:

    [auth]
    tokens = [
      { name = "dashboard", sha256 = "…", scopes = ["read"] },                  # every view
      { name = "shop", sha256 = "…", scopes = ["read:revenue_by_country", "append:orders"] },
      { name = "ops", sha256 = "…", scopes = ["admin"] },                       # everything
    ]
    cors_origins = ["https://app.example.com"]

``tallyd token create --name NAME --scopes read`` prints a new secret once, and the line to paste.
A request presents its secret as ``Authorization: Bearer <secret>`` or, for what a browser loads by
URL (charts, dashboards, live streams), as ``?token=<secret>``. Secrets are random 256-bit
values, so one SHA-256 is the right hash; the lookup compares against every token with
``hmac.compare_digest`` and never stops early.

With no tokens, authorization is off — allowed only on a loopback address (``tallyd serve``
refuses anything else and says how to add a token).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from views.durations import parse_duration

ACTIONS = ("read", "append", "admin")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what a POSIX shell can export


class AuthError(ValueError):
    """A bad [auth] table; the message names the field."""


@dataclass(frozen=True)
class Token:
    name: str
    digest: bytes
    scopes: frozenset[str]
    # Embed tokens: filters forced onto every read (group key -> allowed values, as text).
    filters: tuple[tuple[str, frozenset[str]], ...] = ()

    @property
    def key(self) -> str:
        """What limits count against: the token's name, or for an embed token its grant (a
        tenant's tokens share their limits)."""
        if self.digest:
            return self.name
        return "embed:" + repr((sorted(self.scopes), self.filters))

    def allows(self, action: str, target: str | None) -> bool:
        # "admin" allows everything; admin actions have no target, and the config refuses a
        # scope "admin:X", so no other scope allows one.
        if "admin" in self.scopes:
            return True
        if action in self.scopes:
            return True
        return target is not None and f"{action}:{target}" in self.scopes

    def readable(self, views: list[str]) -> list[str]:
        return [v for v in views if self.allows("read", v)]


TOKEN = web.RequestKey("tallyd_token", Token)  # the request's token, when authorization is on
# A secret that came as ?token=: pages pass it on to the URLs they load (an iframe's fetches and
# EventSource cannot send an Authorization header).
URL_SECRET = web.RequestKey("tallyd_url_secret", str)


@dataclass(frozen=True)
class Auth:
    tokens: tuple[Token, ...] = ()
    cors_origins: tuple[str, ...] = ()
    embed_key: bytes | None = None  # HMAC key of embed tokens (from the environment)
    embed_max_ttl: int = 24 * 3600  # seconds an embed token may live, at most

    @property
    def enabled(self) -> bool:
        return bool(self.tokens) or self.embed_key is not None

    def embedded(self, secret: str) -> Token | None:
        """A valid, unexpired embed token (a JWT signed HS256 with ``embed_key``), or None.
        Claims: ``views`` (list), ``filters`` ({key: value or [values]}), ``exp``, ``iat``."""
        if self.embed_key is None or secret.count(".") != 2:
            return None
        try:
            claims = jwt.decode(
                secret,
                self.embed_key,
                algorithms=["HS256"],
                options={"require": ["exp", "iat", "views"]},
            )
        except jwt.PyJWTError:
            return None
        views, filters = claims.get("views"), claims.get("filters", {})
        if claims["exp"] - claims["iat"] > self.embed_max_ttl:
            return None  # minted to live longer than allowed
        if not isinstance(views, list) or not all(isinstance(v, str) for v in views):
            return None
        if not isinstance(filters, dict):
            return None
        forced = []
        for key, value in sorted(filters.items()):
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str | int | bool) for v in values):
                return None
            texts = frozenset(_text(v) for v in values)
            forced.append((str(key), texts))
        return Token("embed", b"", frozenset(f"read:{v}" for v in views), tuple(forced))

    def identify(self, secret: str) -> Token | None:
        digest = hashlib.sha256(secret.encode()).digest()
        found = None
        for token in self.tokens:  # constant time: every token compared, no early exit
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found


def parse_auth(
    raw: dict[str, Any],
    path: str,
    views: list[str],
    sources: list[str],
    environ: Mapping[str, str] = os.environ,
    *,
    read_secrets: bool = True,
) -> Auth:
    """The [auth] table, validated. ``read_secrets=False`` checks where secrets come from (the names
    of environment variables) but not their values, and leaves ``embed_key`` None: ``tallyd
    check`` validates a config in CI, which has no production secrets; serving needs them."""

    def fail(field: str, message: str) -> AuthError:
        return AuthError(f"{path}: auth: field '{field}': {message}")

    unknown = set(raw) - {"tokens", "cors_origins", "embed_secret_env", "embed_max_ttl"}
    if unknown:
        raise fail(
            sorted(unknown)[0],
            "unknown field; known: tokens, cors_origins, embed_secret_env, embed_max_ttl",
        )
    tokens = []
    names: set[str] = set()
    for i, item in enumerate(raw.get("tokens", [])):
        where = f"tokens[{i}]"
        if not isinstance(item, dict) or set(item) != {"name", "sha256", "scopes"}:
            raise fail(where, 'must be { name = "...", sha256 = "...", scopes = [...] }')
        name, digest, scopes = item["name"], item["sha256"], item["scopes"]
        if not isinstance(name, str) or not name or name in names:
            raise fail(f"{where}.name", f"{name!r}: a unique, non-empty name")
        names.add(name)
        try:
            raw_digest = bytes.fromhex(digest)
        except (TypeError, ValueError):
            raw_digest = b""
        if len(raw_digest) != 32:
            raise fail(
                f"{where}.sha256",
                "64 hex digits: the SHA-256 of the secret, as `tallyd token create` prints it",
            )
        if not isinstance(scopes, list) or not scopes:
            raise fail(f"{where}.scopes", 'a non-empty list, e.g. ["read"]')
        for scope in scopes:
            _check_scope(fail, f"{where}.scopes", scope, views, sources)
        tokens.append(Token(name, raw_digest, frozenset(scopes)))
    origins = raw.get("cors_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise fail("cors_origins", 'a list of origins like "https://app.example.com"')
    for origin in origins:
        if origin == "*" or not origin.startswith(("https://", "http://")) or origin.endswith("/"):
            raise fail(
                "cors_origins",
                f"{origin!r}: an exact origin (scheme://host[:port], no path); '*' is never "
                "allowed",
            )
    embed_key = None
    env = raw.get("embed_secret_env")
    if env is not None:
        if not isinstance(env, str) or not ENV_NAME.fullmatch(env):
            raise fail(
                "embed_secret_env",
                f"{env!r}: the name of an environment variable, e.g. TALLYD_EMBED_SECRET",
            )
        if read_secrets:
            embed_key = _embed_key(fail, env, environ)
    try:
        max_ttl = parse_duration(str(raw.get("embed_max_ttl", "24h"))) // 1000
    except ValueError as err:
        raise fail("embed_max_ttl", str(err)) from None
    return Auth(tuple(tokens), tuple(origins), embed_key, max_ttl)


def _embed_key(fail: Any, env: str, environ: Mapping[str, str]) -> bytes:
    value = environ.get(env)
    hint = (
        "the embed signing key, at least 32 characters "
        "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
    )
    if value is None:
        raise fail("embed_secret_env", f"${env} is not set; it must hold {hint}")
    if len(value) < 32:
        raise fail("embed_secret_env", f"${env} must hold {hint}")
    return value.encode()


def _check_scope(fail: Any, field: str, scope: Any, views: list[str], sources: list[str]) -> None:
    if not isinstance(scope, str):
        raise fail(field, f"{scope!r} is not a string")
    action, _, target = scope.partition(":")
    if action not in ACTIONS or (action == "admin" and target):
        raise fail(field, f"{scope!r}: scopes are read, read:VIEW, append, append:SOURCE, admin")
    if action == "read" and target and target not in views:
        raise fail(field, f"{scope!r}: no view named {target!r}")
    if action == "append" and target and target not in sources:
        raise fail(field, f"{scope!r}: no source named {target!r}")


def _text(value: str | int | bool) -> str:
    """How a filter value is written in a query string (views.query.key_text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def mint_embed(
    key: bytes, views: list[str], filters: dict[str, list[str]], ttl: int, now: int
) -> str:
    """An embed token for a browser: these views only, these filters forced, ``ttl`` seconds."""
    claims = {"views": views, "filters": filters, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, key, algorithm="HS256")


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token(name: str, scopes: list[str]) -> tuple[str, str]:
    """A new secret, and the config line that declares it (by hash)."""
    secret = "tly_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    quoted = ", ".join(f'"{s}"' for s in scopes)
    return secret, f'{{ name = "{name}", sha256 = "{digest}", scopes = [{quoted}] }}'
