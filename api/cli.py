"""``tallyd serve | check | demo``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from api import logs
from api.auth import ACTIONS, AuthError, mint_embed, new_token, parse_auth
from api.demo import EXAMPLE, run_demo
from api.server import open_without_tokens, serve
from api.settings import Settings, SettingsError, load_settings
from views.config import Config, ConfigError, load
from views.durations import format_duration, parse_duration

__all__ = ["EXAMPLE", "describe", "main"]  # EXAMPLE: where tests and benchmarks found it first


def describe(config: Config) -> str:
    lines = [f"{config.path}: {len(config.sources)} source(s), {len(config.views)} view(s)"]
    for name, source in config.sources.items():
        fields = ", ".join(f"{f}:{t}" for f, t in sorted(source.schema.items())) or "-"
        lines.append(f"  source {name}: time={source.time_field} fields: {fields}")
    for name, view in config.views.items():
        window = "none (all-time totals)"
        if view.window is not None:
            w = view.window
            window = f"{w.kind} {format_duration(w.size)}" + (
                f" every {format_duration(w.slide)}" if w.kind == "hop" else ""
            )
            window += f" as {w.name}"
        lines.append(f"  view {name} (from {view.source}): keys={list(view.keys)} window={window}")
        for column in view.columns:
            extra = f" = {column.sql}" if column.sql else ""
            lines.append(f"    {column.name}: {column.type} ({column.role}){extra}")
    return "\n".join(lines)


def _load(path: str, **overrides: str | None) -> tuple[Config, Settings]:
    config = load(path)
    parse_auth(config.auth, config.path, list(config.views), list(config.sources))  # fail early
    return config, load_settings(config.server, config.path, **overrides)


def _embed(args: argparse.Namespace) -> int:
    config = load(args.config)
    auth = parse_auth(config.auth, config.path, list(config.views), list(config.sources))
    if auth.embed_key is None:
        print(f"tallyd: {config.path}: set [auth] embed_secret_env first", file=sys.stderr)
        return 1
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    unknown = [v for v in views if v not in config.views]
    filters: dict[str, list[str]] = {}
    for item in args.filter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"tallyd: --filter {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 1
        filters.setdefault(key, []).append(value)
    ttl = parse_duration(args.ttl) // 1000
    if unknown or not views or not 0 < ttl <= auth.embed_max_ttl:
        print(
            f"tallyd: views {unknown or views} / ttl {args.ttl}: name known views and a ttl "
            f"up to embed_max_ttl ({auth.embed_max_ttl} s)",
            file=sys.stderr,
        )
        return 1
    print(mint_embed(auth.embed_key, views, filters, ttl, int(time.time())))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tallyd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p_serve = commands.add_parser("serve", help="run the server")
    p_serve.add_argument("--config", required=True, help="the tallyd TOML file")
    p_serve.add_argument("--data-dir", help="override [server] data_dir")
    p_serve.add_argument("--listen", help="override [server] listen (HOST:PORT)")
    p_check = commands.add_parser("check", help="validate a config and describe its views")
    p_check.add_argument("config")
    p_demo = commands.add_parser("demo", help="serve examples/shop.toml with generated events")
    p_demo.add_argument("--rate", type=int, default=200, help="events per second (default 200)")
    p_demo.add_argument("--data-dir", default="./tallyd-demo-data")
    p_demo.add_argument("--listen", default="127.0.0.1:8080")
    p_token = commands.add_parser("token", help="create an API token: 'tallyd token create'")
    token_commands = p_token.add_subparsers(dest="token_command", required=True)
    p_create = token_commands.add_parser("create", help="print a new secret and its config line")
    p_create.add_argument("--name", required=True)
    p_create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: read, read:VIEW, append, append:SOURCE, admin",
    )
    p_bench = commands.add_parser(
        "bench",
        help="load-test a tallyd: 'tallyd bench run SCENARIO ...' or 'tallyd bench targets ...'",
        add_help=False,
    )
    p_bench.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "bench":
        try:
            from benchmarks.__main__ import main as bench
        except ImportError as err:  # the load generator's extras are not installed
            print(f"tallyd: bench needs: pip install 'tallyd[bench]' ({err})", file=sys.stderr)
            return 1
        return bench(args.rest)
    logs.configure()
    try:
        if args.command == "check":
            config, _ = _load(args.config)
            print(describe(config))
            return 0
        if args.command == "serve":
            config, settings = _load(args.config, data_dir=args.data_dir, listen=args.listen)
            refusal = open_without_tokens(config, settings)
            if refusal is not None:
                print(f"tallyd: {refusal}", file=sys.stderr)
                return 1
            return asyncio.run(serve(config, settings))
        if args.command == "token" and args.token_command == "embed":  # noqa: S105 - a subcommand
            return _embed(args)
        if args.command == "token":
            scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
            bad_scopes = [s for s in scopes if s.partition(":")[0] not in ACTIONS]
            if not scopes or bad_scopes:
                print(
                    f"tallyd: scopes {bad_scopes or scopes}: use read, read:VIEW, append, "
                    "append:SOURCE, admin",
                    file=sys.stderr,
                )
                return 1
            secret, line = new_token(args.name, scopes)
            print(f"secret (shown once; give it to the client): {secret}")
            print("config line (add to [auth] tokens = [...]; it holds only the hash):")
            print(f"  {line}")
            return 0
        config, settings = _load(str(EXAMPLE), data_dir=args.data_dir, listen=args.listen)
        return asyncio.run(run_demo(config, settings, args.rate))
    except (ConfigError, SettingsError, AuthError) as err:
        print(f"tallyd: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"tallyd: {err}", file=sys.stderr)
        return 1
