"""The ``tallyd`` command line: serve, check, demo, repair, token, bench (the README's "Commands").

Serving itself is api/server.py; ``bench`` is imported only when it runs (benchmarks/ needs the
``tallyd[bench]`` extras, and the server never loads it)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from api import logs
from api.auth import ACTIONS, AuthError, mint_embed, new_token, parse_auth
from api.demo import EXAMPLE, run_cluster_demo, run_demo
from api.server import open_without_tokens, serve
from api.settings import Settings, SettingsError, load_settings
from ingest import repair
from ingest.cluster import ClusterError, advertised, cluster_secret
from ingest.datadir import DataDirBusy, DataDirLock
from views.config import Config, ConfigError, load, parse
from views.durations import format_duration, parse_duration
from views.plan import diff

__all__ = ["EXAMPLE", "describe", "main", "parser"]

DESCRIPTION = (
    "tallyd: incremental aggregate views over event streams (Kafka, HTTP, files), answered over "
    "HTTP in milliseconds."
)
EPILOG = "Run 'tallyd COMMAND --help' for a command's options; the README explains each one."


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
    settings = load_settings(config.server, config.path, **overrides)
    if config.cluster is not None:  # fail early, by name
        advertised(config.cluster, settings.listen, config.path)
        cluster_secret(config.cluster, config.path)
    return config, settings


def _checked(config: Config) -> Config:
    # Secrets (the embed signing key) are the server's, not the config's: CI checks a config
    # without them, and only names are validated here.
    parse_auth(
        config.auth, config.path, list(config.views), list(config.sources), read_secrets=False
    )
    settings = load_settings(config.server, config.path)
    if config.cluster is not None:
        advertised(config.cluster, settings.listen, config.path)
        cluster_secret(config.cluster, config.path, read=False)
    return config


def _check(path: str) -> int:
    print(describe(_checked(load(path))))
    return 0


def _admin_config(base: str, token: str | None, body: bytes | None, timeout: float) -> Any:
    """GET (``body`` None) or POST ``/v1/admin/config`` of the server at ``base``: its JSON
    answer, or ``Refused`` saying what it answered (its error message) or that it did not."""
    url = base.rstrip("/") + "/v1/admin/config"
    request = urllib.request.Request(url, data=body)  # noqa: S310 - the user's own server
    if body is not None:
        request.add_header("Content-Type", "application/toml")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return orjson.loads(answer.read())
    except urllib.error.HTTPError as err:
        text = err.read()
        try:
            message = orjson.loads(text)["error"]["message"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            message = text[:300].decode(errors="replace")
        raise Refused(f"{url} answered {err.code}: {message}") from None
    except (urllib.error.URLError, TimeoutError) as err:
        raise Refused(f"{url} did not answer: {getattr(err, 'reason', err)}") from None


def _apply(args: argparse.Namespace) -> int:
    """POST the new config to the running server: 0 applied (or nothing to change), 1 refused
    (what changes only at a restart is named) or invalid."""
    _checked(load(args.config))
    done = _admin_config(args.url, args.token, Path(args.config).read_bytes(), timeout=60)
    changes = done["applied"]["changes"]
    for change in changes:
        print(f"applied: {change['kind']} {change['name']}: {change['action']}")
    print(f"{len(changes)} change(s) applied to {args.url}" if changes else "No changes.")
    if done.get("file"):
        print(f"note: {done['file']}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    """0: nothing would change; 2: something would (as ``terraform plan -detailed-exitcode``);
    1: a config is invalid or the server did not answer (the message says which)."""
    new = _checked(load(args.config))
    if args.url is not None:
        running = _admin_config(args.url, args.token, None, timeout=10)
        current = parse(running["config"], f"{args.url} ({running['path']})")
        current_name = f"{args.url} (running {running['path']})"
        sizes = running.get("history", {})
    else:
        current = load(args.current)
        current_name, sizes = args.current, {}
    plan = diff(current, new, current_name, args.config, sizes)
    print(orjson.dumps(plan.to_json()).decode() if args.json else plan.render())
    return 2 if plan.changes else 0


class Refused(Exception):
    """What a command was asked that it cannot do; the message says what to give instead."""


def _token_create(args: argparse.Namespace) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    bad_scopes = [s for s in scopes if s.partition(":")[0] not in ACTIONS]
    if not scopes or bad_scopes:
        raise Refused(
            f"scopes {bad_scopes or scopes}: use read, read:VIEW, append, append:SOURCE, admin"
        )
    secret, line = new_token(args.name, scopes)
    print(f"secret (shown once; give it to the client): {secret}")
    print("config line (add to [auth] tokens = [...]; it holds only the hash):")
    print(f"  {line}")
    return 0


def _embed_filters(config: Config, views: list[str], items: list[str]) -> dict[str, list[str]]:
    if not views:
        raise Refused("--views: name at least one view")
    unknown = [v for v in views if v not in config.views]
    if unknown:
        raise Refused(f"--views: no view {', '.join(unknown)}; known: {', '.join(config.views)}")
    filters: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Refused(f"--filter {item!r}: expected KEY=VALUE")
        filters.setdefault(key, []).append(value)
    for view in views:
        # The server answers 403 to a token filtering a view on a key it does not group by:
        # say so now rather than hand out a token that cannot read.
        keys = sorted(c.name for c in config.views[view].columns if c.role == "key")
        for key in filters:
            if key not in keys:
                raise Refused(f"--filter {key}=...: view {view} has no key {key!r} (keys: {keys})")
    return filters


def _token_embed(args: argparse.Namespace) -> int:
    config = load(args.config)
    auth = parse_auth(config.auth, config.path, list(config.views), list(config.sources))
    if auth.embed_key is None:
        raise Refused(f"{config.path}: set [auth] embed_secret_env first")
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    filters = _embed_filters(config, views, args.filter)
    try:
        ttl = parse_duration(args.ttl) // 1000
    except ValueError as err:
        raise Refused(f"--ttl: {err}") from None
    if not 0 < ttl <= auth.embed_max_ttl:
        raise Refused(f"--ttl {args.ttl}: 1 s to embed_max_ttl ({auth.embed_max_ttl} s)")
    print(mint_embed(auth.embed_key, views, filters, ttl, int(time.time())))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="tallyd", description=DESCRIPTION, epilog=EPILOG)
    commands = root.add_subparsers(dest="command", required=True, title="commands")
    p_serve = commands.add_parser("serve", help="run the server")
    p_serve.add_argument("--config", required=True, help="the tallyd TOML file")
    p_serve.add_argument("--data-dir", help="override [server] data_dir")
    p_serve.add_argument("--listen", help="override [server] listen (HOST:PORT)")
    _log_level(p_serve)
    p_check = commands.add_parser(
        "check", help="validate a config and describe its views (needs none of its secrets)"
    )
    p_check.add_argument("config", help="the tallyd TOML file")
    p_plan = commands.add_parser(
        "plan",
        help="what a new config would change on a running server (or against another file); "
        "exit 0: nothing, 2: something, 1: an error",
    )
    p_plan.add_argument("--config", required=True, help="the new tallyd TOML file")
    against = p_plan.add_mutually_exclusive_group(required=True)
    against.add_argument("--url", help="the running server (GET /v1/admin/config)")
    against.add_argument("--current", help="the config file it runs now")
    p_plan.add_argument(
        "--token",
        default=os.environ.get("TALLYD_TOKEN"),
        help="an admin token, when the server has tokens (default: $TALLYD_TOKEN)",
    )
    p_plan.add_argument("--json", action="store_true", help="the plan as JSON")
    p_apply = commands.add_parser(
        "apply",
        help="apply a new config to a running server without a restart (views added, removed, "
        "their options changed); exit 1 if it changes something only a restart can",
    )
    p_apply.add_argument("--config", required=True, help="the new tallyd TOML file")
    p_apply.add_argument("--url", required=True, help="the running server")
    p_apply.add_argument(
        "--token",
        default=os.environ.get("TALLYD_TOKEN"),
        help="an admin token, when the server has tokens (default: $TALLYD_TOKEN)",
    )
    p_demo = commands.add_parser("demo", help="serve examples/shop.toml with generated events")
    p_demo.add_argument("--rate", type=int, default=200, help="events per second (default 200)")
    p_demo.add_argument(
        "--data-dir", default="./tallyd-demo-data", help="its state (default %(default)s)"
    )
    p_demo.add_argument(
        "--listen", default="127.0.0.1:8080", help="HOST:PORT (default %(default)s)"
    )
    p_demo.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="N > 1: a cluster of N members on a local broker (needs the test extras' Tansu, "
        "or --bootstrap), on consecutive ports from --listen",
    )
    p_demo.add_argument("--bootstrap", help="with --nodes: an existing Kafka to use")
    _log_level(p_demo)
    p_repair = commands.add_parser(
        "repair",
        help="make a damaged data directory startable: keep what is consistent, move the rest "
        "aside",
    )
    p_repair.add_argument("--config", required=True, help="the tallyd TOML file")
    p_repair.add_argument("--data-dir", help="override [server] data_dir")
    p_repair.add_argument(
        "--dry-run", action="store_true", help="print what it would keep and drop; change nothing"
    )
    p_token = commands.add_parser("token", help="create an API token or a browser's embed token")
    token_commands = p_token.add_subparsers(dest="token_command", required=True)
    p_create = token_commands.add_parser("create", help="print a new secret and its config line")
    p_create.add_argument("--name", required=True)
    p_create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: read, read:VIEW, append, append:SOURCE, admin",
    )
    p_embed = token_commands.add_parser(
        "embed",
        help="print a short-lived token for a browser: these views, these filters forced",
    )
    p_embed.add_argument("--config", required=True, help="the tallyd TOML file")
    p_embed.add_argument("--views", required=True, help="comma-separated view names")
    p_embed.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="forced onto every read; repeat for more values or keys",
    )
    p_embed.add_argument(
        "--ttl", default="1h", help="how long it is valid (default 1h; at most embed_max_ttl)"
    )
    # Listed here for --help; its arguments are the load-test suite's own (main hands them on).
    commands.add_parser(
        "bench",
        help="load-test a tallyd: 'tallyd bench list | run SCENARIO ... | targets ...'",
        add_help=False,
    )
    return root


def _log_level(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default="info",
        help="least severe log lines shown (default %(default)s; debug adds every snapshot)",
    )


def _repair(args: argparse.Namespace) -> int:
    config = load(args.config)  # for its data_dir, resolved as serve resolves it
    data_dir = Path(load_settings(config.server, config.path, data_dir=args.data_dir).data_dir)
    if not data_dir.is_dir():
        raise Refused(f"{data_dir}: no such data directory")
    with DataDirLock.acquire(data_dir, doing="repair"):
        found = repair.plan(data_dir)
        quarantine = repair.quarantine_for(data_dir, time.time())
        if found.dropped and not args.dry_run:
            repair.carry_out(found, quarantine)
        print("\n".join(found.report(quarantine, done=not args.dry_run)))
    return 0


def _bench(argv: list[str]) -> int:
    try:
        from benchmarks.__main__ import main as bench
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] != "hdrh":  # a bug, not the extras: show it
            raise
        print(f"tallyd: bench needs: pip install 'tallyd[bench]' ({err})", file=sys.stderr)
        return 1
    return bench(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        # Before parsing: argparse would claim 'tallyd bench --help' as its own option.
        return _bench(argv[1:])
    args = parser().parse_args(argv)
    logs.configure(getattr(args, "log_level", "info"))
    try:
        if args.command == "check":
            return _check(args.config)
        if args.command == "plan":
            return _plan(args)
        if args.command == "apply":
            return _apply(args)
        if args.command == "serve":
            config, settings = _load(args.config, data_dir=args.data_dir, listen=args.listen)
            refusal = open_without_tokens(config, settings)
            if refusal is not None:
                print(f"tallyd: {refusal}", file=sys.stderr)
                return 1
            return asyncio.run(serve(config, settings))
        if args.command == "repair":
            return _repair(args)
        if args.command == "token" and args.token_command == "embed":  # noqa: S105 - a subcommand
            return _token_embed(args)
        if args.command == "token":
            return _token_create(args)
        config, settings = _load(str(EXAMPLE), data_dir=args.data_dir, listen=args.listen)
        if args.nodes > 1:
            return asyncio.run(run_cluster_demo(settings, args.rate, args.nodes, args.bootstrap))
        return asyncio.run(run_demo(config, settings, args.rate))
    except (
        ConfigError,
        SettingsError,
        ClusterError,
        AuthError,
        Refused,
        DataDirBusy,
        OSError,
    ) as err:
        print(f"tallyd: {err}", file=sys.stderr)
        return 1
