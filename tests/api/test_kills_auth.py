"""api/auth.py, function by function: what its mutants showed the endpoint tests never check.

Scopes and their targets, embed tokens at the edges of what they may claim, every [auth]
refusal naming its field and what would do, and the helpers the CLI and ``serve`` rely on.
Expected values come from the standard library (hashlib, tomllib, ipaddress) or from the token
the test itself minted, never from the module under test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import tomllib
from typing import Any

import jwt
import pytest

from api.auth import (
    Auth,
    AuthError,
    Token,
    loopback,
    mint_embed,
    new_token,
    parse_auth,
)
from views.durations import parse_duration

KEY = b"k" * 40
NOW = int(time.time())  # PyJWT checks exp against the clock
VIEWS = ["sales", "stock"]
SOURCES = ["orders"]


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


# -- scopes ----------------------------------------------------------------------------------


SCOPE_CASES = [
    # scopes, action, target, allowed
    (["admin"], "admin", None, True),
    (["admin"], "append", "orders", True),
    (["read"], "admin", None, False),
    (["read", "append"], "admin", None, False),
    (["read"], "read", "sales", True),
    (["read"], "read", None, True),
    (["read:sales"], "read", "sales", True),
    (["read:sales"], "read", "stock", False),
    (["read:sales"], "read", None, False),
    (["read:sales"], "append", "sales", False),
    (["append:orders"], "append", "orders", True),
    (["append:orders"], "read", "orders", False),
    (["append"], "read", "sales", False),
]


@pytest.mark.parametrize(("scopes", "action", "target", "allowed"), SCOPE_CASES)
def test_a_token_allows_exactly_its_scopes(
    scopes: list[str], action: str, target: str | None, allowed: bool
) -> None:
    token = Token("t", digest("s"), frozenset(scopes))
    assert token.allows(action, target) is allowed


def test_readable_keeps_the_views_a_token_may_read_in_order() -> None:
    views = ["stock", "sales", "other"]
    assert Token("a", b"x", frozenset({"read"})).readable(views) == views
    assert Token("a", b"x", frozenset({"read:sales"})).readable(views) == ["sales"]
    assert Token("a", b"x", frozenset({"append"})).readable(views) == []


def test_limits_count_per_named_token_and_per_embed_grant() -> None:
    named = Token("dashboard", digest("s"), frozenset({"read"}))
    assert named.key == "dashboard"
    grant = (frozenset({"read:sales"}), (("country", frozenset({"FR"})),))
    a, b = Token("embed", b"", *grant), Token("embed", b"", *grant)
    other = Token("embed", b"", frozenset({"read:sales"}), (("country", frozenset({"DE"})),))
    assert a.key == b.key
    assert a.key.startswith("embed:")
    assert a.key != other.key
    assert a.key != Token("embed", b"", frozenset({"read:stock"}), grant[1]).key


def test_authorization_is_on_with_tokens_or_an_embed_key() -> None:
    assert not Auth().enabled
    assert Auth(tokens=(Token("t", digest("s"), frozenset({"read"})),)).enabled
    assert Auth(embed_key=KEY).enabled


def test_identify_finds_the_token_whose_hash_matches_whatever_its_place() -> None:
    tokens = tuple(Token(f"t{i}", digest(f"secret{i}"), frozenset({"read"})) for i in range(4))
    auth = Auth(tokens=tokens)
    for i in range(4):
        found = auth.identify(f"secret{i}")
        assert found is not None
        assert found.name == f"t{i}"
    assert auth.identify("secret9") is None
    assert auth.identify("") is None


# -- embed tokens ----------------------------------------------------------------------------


def claims(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "views": ["sales"],
        "filters": {"country": "FR"},
        "iat": NOW,
        "exp": NOW + 600,
    }
    for k, v in changes.items():
        if v is None:
            out.pop(k)
        else:
            out[k] = v
    return out


def signed(body: dict[str, Any], key: bytes = KEY) -> str:
    return jwt.encode(body, key, algorithm="HS256")


def embed(secret: str, max_ttl: int = 3600, key: bytes | None = KEY) -> Token | None:
    return Auth(embed_key=key, embed_max_ttl=max_ttl).embedded(secret)


def test_an_embed_token_grants_its_views_and_forces_its_filters_as_text() -> None:
    token = embed(
        signed(claims(views=["sales", "stock"], filters={"z": [1, True], "a": ["x", "y"]}))
    )
    assert token is not None
    assert token.name == "embed"
    assert token.digest == b""
    assert token.scopes == frozenset({"read:sales", "read:stock"})
    assert token.filters == (("a", frozenset({"x", "y"})), ("z", frozenset({"1", "true"})))
    assert token.allows("read", "sales")
    assert not token.allows("read", "other")
    false = embed(signed(claims(filters={"paid": False})))
    assert false is not None
    assert false.filters == (("paid", frozenset({"false"})),)


def test_an_embed_token_without_filters_reads_its_views_whole() -> None:
    token = embed(signed(claims(filters=None)))
    assert token is not None
    assert token.filters == ()
    assert token.scopes == frozenset({"read:sales"})


def test_an_embed_token_may_live_exactly_the_longest_allowed() -> None:
    assert embed(signed(claims(exp=NOW + 3600)), max_ttl=3600) is not None
    assert embed(signed(claims(exp=NOW + 3601)), max_ttl=3600) is None


BAD_EMBEDS = {
    "no views": claims(views=None),
    "no exp": claims(exp=None),
    "no iat": claims(iat=None),
    "views not a list": claims(views="sales"),
    "a view not a string": claims(views=["sales", 3]),
    "filters not a table": claims(filters=["FR"]),
    "an empty filter": claims(filters={"country": []}),
    "a float filter value": claims(filters={"country": 1.5}),
    "a null filter value": claims(filters={"country": [None]}),
    "expired": claims(iat=NOW - 700, exp=NOW - 100),
}


@pytest.mark.parametrize("why", sorted(BAD_EMBEDS))
def test_an_embed_token_that_claims_too_much_or_too_little_is_refused(why: str) -> None:
    assert embed(signed(BAD_EMBEDS[why])) is None, why


def test_an_embed_token_needs_the_key_it_was_signed_with_and_the_jwt_shape() -> None:
    good = signed(claims())
    assert embed(good) is not None
    assert embed(good, key=None) is None
    assert embed(signed(claims(), key=b"o" * 40)) is None
    assert embed(good + ".x") is None
    head, body, _ = good.split(".")
    assert embed(f"{head}.{body}") is None
    unsigned = jwt.encode(claims(), None, algorithm="none")
    assert embed(unsigned) is None


def test_mint_embed_signs_the_claims_a_server_accepts() -> None:
    secret = mint_embed(KEY, ["sales"], {"country": ["FR"]}, 600, NOW)
    body = secret.split(".")[1]
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert decoded == {
        "views": ["sales"],
        "filters": {"country": ["FR"]},
        "iat": NOW,
        "exp": NOW + 600,
    }
    token = embed(secret)
    assert token is not None
    assert token.filters == (("country", frozenset({"FR"})),)


# -- the [auth] table ------------------------------------------------------------------------


def line_token(line: str) -> dict[str, Any]:
    parsed: dict[str, Any] = tomllib.loads(f"t = {line}")["t"]
    return parsed


def test_new_token_prints_a_secret_and_a_line_declaring_only_its_hash() -> None:
    secret, line = new_token("shop", ["read:sales", "append:orders"])
    assert secret.startswith("tly_")
    assert len(secret) == len("tly_") + 43  # 256 random bits in unpadded base64url
    declared = line_token(line)
    assert declared == {
        "name": "shop",
        "sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "scopes": ["read:sales", "append:orders"],
    }
    assert secret not in line
    auth = parse_auth({"tokens": [declared]}, "x.toml", VIEWS, SOURCES)
    found = auth.identify(secret)
    assert found is not None
    assert (found.name, found.scopes) == ("shop", frozenset({"read:sales", "append:orders"}))
    assert found.digest == digest(secret)
    assert new_token("shop", ["read"])[0] != secret


def test_a_full_auth_table_is_read_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBED", "e" * 32)  # exactly the shortest key allowed
    _, line = new_token("ops", ["admin"])
    raw = {
        "tokens": [line_token(line)],
        "cors_origins": ["https://app.example.com", "http://localhost:3000"],
        "embed_secret_env": "EMBED",
        "embed_max_ttl": "2h",
    }
    auth = parse_auth(raw, "x.toml", VIEWS, SOURCES)
    assert [t.name for t in auth.tokens] == ["ops"]
    assert auth.cors_origins == ("https://app.example.com", "http://localhost:3000")
    assert auth.embed_key == b"e" * 32
    assert auth.embed_max_ttl == 7200
    assert type(auth.embed_max_ttl) is int  # whole seconds, as `tallyd token embed` prints them
    assert parse_auth({}, "x.toml", VIEWS, SOURCES) == Auth(embed_max_ttl=24 * 3600)


def test_checking_a_config_names_the_secret_variable_but_never_reads_it() -> None:
    raw = {"embed_secret_env": "UNSET_IN_CI"}
    auth = parse_auth(raw, "x.toml", VIEWS, SOURCES, environ={}, read_secrets=False)
    assert auth.embed_key is None
    with pytest.raises(AuthError, match=r"\$UNSET_IN_CI is not set"):
        parse_auth(raw, "x.toml", VIEWS, SOURCES, environ={})


HASH = "ab" * 32


def token_item(**changes: Any) -> dict[str, Any]:
    return {"name": "t", "sha256": HASH, "scopes": ["read"], **changes}


# raw [auth] table -> (field named, the message after "<file>: auth: field '<field>': ")
TABLE_SHAPE = 'must be { name = "...", sha256 = "...", scopes = [...] }'
HEX = "64 hex digits: the SHA-256 of the secret, as `tallyd token create` prints it"
SCOPES = "scopes are read, read:VIEW, append, append:SOURCE, admin"
ORIGIN = "an exact origin (scheme://host[:port], no path); '*' is never allowed"
ENV = "the name of an environment variable, e.g. TALLYD_EMBED_SECRET"
KEY_HINT = (
    "the embed signing key, at least 32 characters "
    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
)
REFUSALS: dict[str, tuple[dict[str, Any], str, str]] = {
    "unknown field": (
        {"token": []},
        "token",
        "unknown field; known: tokens, cors_origins, embed_secret_env, embed_max_ttl",
    ),
    "token not a table": ({"tokens": ["t"]}, "tokens[0]", TABLE_SHAPE),
    "token extra field": ({"tokens": [token_item(extra=1)]}, "tokens[0]", TABLE_SHAPE),
    "token missing scopes": ({"tokens": [{"name": "t", "sha256": HASH}]}, "tokens[0]", TABLE_SHAPE),
    "empty name": (
        {"tokens": [token_item(name="")]},
        "tokens[0].name",
        "'': a unique, non-empty name",
    ),
    "name not text": (
        {"tokens": [token_item(name=3)]},
        "tokens[0].name",
        "3: a unique, non-empty name",
    ),
    "repeated name": (
        {"tokens": [token_item(), token_item(sha256="cd" * 32)]},
        "tokens[1].name",
        "'t': a unique, non-empty name",
    ),
    "short hash": ({"tokens": [token_item(sha256="ab" * 31)]}, "tokens[0].sha256", HEX),
    "not hex": ({"tokens": [token_item(sha256="zz" * 32)]}, "tokens[0].sha256", HEX),
    "hash not text": ({"tokens": [token_item(sha256=5)]}, "tokens[0].sha256", HEX),
    "no scopes": (
        {"tokens": [token_item(scopes=[])]},
        "tokens[0].scopes",
        'a non-empty list, e.g. ["read"]',
    ),
    "scopes not a list": (
        {"tokens": [token_item(scopes="read")]},
        "tokens[0].scopes",
        'a non-empty list, e.g. ["read"]',
    ),
    "scope not text": (
        {"tokens": [token_item(scopes=[1])]},
        "tokens[0].scopes",
        "1 is not a string",
    ),
    "unknown action": (
        {"tokens": [token_item(scopes=["write"])]},
        "tokens[0].scopes",
        f"'write': {SCOPES}",
    ),
    "admin of something": (
        {"tokens": [token_item(scopes=["admin:sales"])]},
        "tokens[0].scopes",
        f"'admin:sales': {SCOPES}",
    ),
    "unknown view": (
        {"tokens": [token_item(scopes=["read:nope"])]},
        "tokens[0].scopes",
        "'read:nope': no view named 'nope'",
    ),
    "a source is not a view": (
        {"tokens": [token_item(scopes=["read:orders"])]},
        "tokens[0].scopes",
        "'read:orders': no view named 'orders'",
    ),
    "unknown source": (
        {"tokens": [token_item(scopes=["append:sales"])]},
        "tokens[0].scopes",
        "'append:sales': no source named 'sales'",
    ),
    "origins not a list": (
        {"cors_origins": "https://a.example"},
        "cors_origins",
        'a list of origins like "https://app.example.com"',
    ),
    "origin not text": (
        {"cors_origins": [3]},
        "cors_origins",
        'a list of origins like "https://app.example.com"',
    ),
    "any origin": ({"cors_origins": ["*"]}, "cors_origins", f"'*': {ORIGIN}"),
    "origin without scheme": (
        {"cors_origins": ["app.example.com"]},
        "cors_origins",
        f"'app.example.com': {ORIGIN}",
    ),
    "origin with a path": (
        {"cors_origins": ["https://a.example/"]},
        "cors_origins",
        f"'https://a.example/': {ORIGIN}",
    ),
    "env not a name": ({"embed_secret_env": "1BAD"}, "embed_secret_env", f"'1BAD': {ENV}"),
    "env with a dash": ({"embed_secret_env": "A-B"}, "embed_secret_env", f"'A-B': {ENV}"),
    "env not text": ({"embed_secret_env": 5}, "embed_secret_env", f"5: {ENV}"),
    "env unset": (
        {"embed_secret_env": "NOT_SET"},
        "embed_secret_env",
        f"$NOT_SET is not set; it must hold {KEY_HINT}",
    ),
    "key too short": (
        {"embed_secret_env": "SHORT"},
        "embed_secret_env",
        f"$SHORT must hold {KEY_HINT}",
    ),
}


@pytest.mark.parametrize("why", sorted(REFUSALS))
def test_a_bad_auth_table_is_refused_naming_the_field_and_what_would_do(why: str) -> None:
    raw, field, expected = REFUSALS[why]
    environ = {"SHORT": "s" * 31}
    with pytest.raises(AuthError) as caught:
        parse_auth(raw, "conf/x.toml", VIEWS, SOURCES, environ)
    assert str(caught.value) == f"conf/x.toml: auth: field '{field}': {expected}"


def test_a_bad_embed_lifetime_is_refused_with_what_a_duration_is() -> None:
    with pytest.raises(ValueError, match="soon") as duration:
        parse_duration("soon")
    with pytest.raises(AuthError) as caught:
        parse_auth({"embed_max_ttl": "soon"}, "x.toml", VIEWS, SOURCES)
    assert str(caught.value) == f"x.toml: auth: field 'embed_max_ttl': {duration.value}"


@pytest.mark.parametrize(
    "scope", ["read", "read:sales", "read:stock", "append", "append:orders", "admin"]
)
def test_every_documented_scope_is_accepted(scope: str) -> None:
    auth = parse_auth({"tokens": [token_item(scopes=[scope])]}, "x.toml", VIEWS, SOURCES)
    assert auth.tokens[0].scopes == frozenset({scope})
    assert auth.tokens[0].digest == bytes.fromhex(HASH)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("::", False),
        ("example.com", False),
        ("X127.0.0.1X", False),  # only IPv6's brackets are stripped
        ("", False),
    ],
)
def test_loopback_is_what_ipaddress_calls_loopback_or_localhost(host: str, expected: bool) -> None:
    assert loopback(host) is expected
