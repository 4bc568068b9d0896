"""The load-test suite's command line (also ``tallyd bench``).

    python -m benchmarks run SCENARIO (--url URL | --config tallyd.toml) [--out DIR]
        [--workers N]                                          (load generator processes)
        [--events FILE [--source S | --kafka HOST:PORT --topic T] [--rate N | --speedup X]
         [--retime]]                                           (your own events)
        [--auto [--save FILE]]                                 (your own views)
        [--subscribers N --view V]                             (live subscribers while it runs)
    python -m benchmarks targets [--quick] [--only ...]      (every target, peers included)
    python -m benchmarks list                                 (the bundled scenarios)
    python -m benchmarks compare A.json B.json [--fail-over PCT]   (exit 1 on a regression)

SCENARIO is a TOML file or the name of a bundled one (``shop-ingest``, ``query``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks import load, replay, report, workers


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def run(
    scenario: load.Scenario,
    url: str | None,
    config: Path | None,
    auto: Path | bool = False,
    processes: int = 1,
) -> dict[str, Any]:
    """``auto``: derive the [query] mix from the server's views first (a path: save it there);
    ``processes``: the load generator's worker processes (benchmarks.workers)."""
    if url is not None:
        scenario = await derived(scenario, url.rstrip("/"), auto)
        return await workers.run(scenario, url.rstrip("/"), processes, progress=_progress)
    assert config is not None
    from benchmarks.server import ServerProcess

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(config, Path(tmp) / "data", Path(tmp) / "server.log")
        await server.start()
        try:
            scenario = await derived(scenario, server.url, auto)
            result = await workers.run(scenario, server.url, processes, progress=_progress)
            assert server.proc is not None
            rss = rss_mb(server.proc.pid)
            if rss is not None:
                result["server_rss_mb"] = rss
            return result
        finally:
            server.terminate()


async def derived(scenario: load.Scenario, url: str, auto: Path | bool) -> load.Scenario:
    """The scenario with its [query] mix derived from the server's views (benchmarks.auto),
    shown first, and saved when ``auto`` is a path."""
    if auto is False:
        return scenario
    import aiohttp

    from benchmarks import auto as mix

    async with aiohttp.ClientSession() as session:
        query = await mix.derive(session, url)
    rate = scenario.raw.get("query", {}).get("rate", 1000)
    raw = {**scenario.raw, "query": {"rate": rate, **query}}
    text = mix.toml(
        {
            "name": f"{scenario.name}-auto",
            "duration": f"{round(scenario.duration * 1000)}ms",
            "connections": scenario.connections,
            "query": raw["query"],
        }
    )
    print(text, file=sys.stderr)
    if isinstance(auto, Path):
        auto.write_text(text)
        print(f"saved the derived scenario to {auto}", file=sys.stderr)
    return dataclasses.replace(scenario, name=f"{scenario.name}-auto", raw=raw)


SCENARIOS = Path(__file__).parent / "scenarios"


def scenario_path(text: str) -> Path:
    path = Path(text)
    if path.is_file() or path.suffix == ".toml":  # not the repository's ingest/ directory
        return path
    bundled = SCENARIOS / f"{text}.toml"
    if not bundled.exists():
        names = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.toml")))
        raise SystemExit(f"no scenario file or bundled scenario {text!r}; bundled: {names}")
    return bundled


def summary(path: Path) -> str:
    """A scenario's first sentence, from the comment that opens its file (which wraps lines)."""
    comment = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    text = " ".join(comment)
    # A sentence ends at a full stop before a new one, not in "e.g. x" or "50,000-event".
    end = re.search(r"[.!?](?=\s+[^a-z\s])", text)
    return text[: end.end()] if end else text


def own_events(scenario: load.Scenario, args: argparse.Namespace) -> load.Scenario:
    """The scenario with its [ingest] stream replaying ``--events`` (benchmarks.replay)."""
    if "ingest" not in scenario.raw:
        raise SystemExit(f"--events: scenario {scenario.name!r} has no [ingest] stream to replay")
    ingest = dict(scenario.raw["ingest"])
    for key, value in (("source", args.source), ("rate", args.rate), ("batch", args.batch)):
        if value is not None:
            ingest[key] = value
    ingest.pop("workload", None)
    if args.kafka is not None:  # to a topic instead: latency is the broker's acknowledgement
        ingest.update(via="kafka", bootstrap=args.kafka, topic=args.topic or ingest["source"])
    elif args.topic is not None:
        raise SystemExit("--topic: give --kafka too (the broker to produce to)")
    try:
        built = replay.build(
            args.events,
            int(ingest.get("batch", 1000)),
            args.time_field,
            int(time.time() * 1000),
            retime=args.retime,
            speedup=args.speedup,
        )
    except (OSError, ValueError) as err:
        raise SystemExit(f"--events: {err}") from None
    name = f"{scenario.name}-{args.events.name.split('.')[0]}"
    return dataclasses.replace(
        scenario, name=name, raw={**scenario.raw, "ingest": ingest}, replay=built
    )


def subscribed(scenario: load.Scenario, count: int | None, view: str | None) -> load.Scenario:
    """The scenario with ``count`` live subscribers to ``view`` (either may keep the
    scenario's own [subscribers] value)."""
    fans = dict(scenario.raw.get("subscribers", {}))
    if count is not None:
        fans["count"] = count
    if view is not None:
        fans["view"] = view
        fans.pop("path", None)
    if not isinstance(fans.get("count"), int) or fans["count"] < 1:
        raise SystemExit("--subscribers: give how many (N >= 1)")
    if "view" not in fans and "path" not in fans:
        raise SystemExit("--subscribers: give --view, the view they follow")
    if "ingest" not in scenario.raw or scenario.raw["ingest"].get("via", "http") != "http":
        raise SystemExit(
            "--subscribers: their delay runs from acknowledged writes: the scenario needs an "
            "[ingest] stream over HTTP (e.g. 'run ingest')"
        )
    return dataclasses.replace(scenario, raw={**scenario.raw, "subscribers": fans})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["targets"]:
        from benchmarks import targets

        targets.main(argv[1:])
        return 0
    if argv[:1] == ["compare"]:
        from benchmarks import compare

        return compare.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="tallyd bench",
        description=load.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p_run = commands.add_parser("run", help="run one scenario and write its report")
    p_run.add_argument("scenario", type=scenario_path, help="a TOML file or a bundled name")
    target = p_run.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running tallyd, e.g. http://127.0.0.1:8080")
    target.add_argument("--config", type=Path, help="start tallyd serve with this config")
    p_run.add_argument("--out", type=Path, default=Path("bench-reports"))
    p_run.add_argument(
        "--workers",
        type=int,
        default=workers.default_workers(),
        help="load generator processes (default: one per core, at most 4: %(default)s here)",
    )
    own = p_run.add_argument_group(
        "your own events (the scenario's [ingest] stream replays them: e.g. 'run ingest')"
    )
    own.add_argument("--events", type=Path, help="an NDJSON file of events (.gz too)")
    own.add_argument("--source", help="the source to post them to (default: the scenario's)")
    own.add_argument("--kafka", metavar="HOST:PORT", help="produce them to Kafka instead")
    own.add_argument("--topic", help="with --kafka: the topic (default: the source's name)")
    pace = own.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="events per second (default: the scenario's)")
    pace.add_argument("--speedup", type=float, help="N times the events' own pace")
    own.add_argument("--retime", action="store_true", help="move the events' times to now")
    own.add_argument("--batch", type=int, help="events per request (default: the scenario's)")
    own.add_argument("--time-field", default="ts", help="the events' time field (default: ts)")
    mixed = p_run.add_argument_group("your own views (the scenario's [query] stream)")
    mixed.add_argument(
        "--auto", action="store_true", help="derive the query mix from the server's views"
    )
    mixed.add_argument("--save", type=Path, help="with --auto: write the derived scenario here")
    live = p_run.add_argument_group(
        "live subscribers (the delay from each acknowledged write to the message carrying it)"
    )
    live.add_argument("--subscribers", type=int, metavar="N", help="open N SSE subscribers")
    live.add_argument("--view", help="the view they follow (one that every write changes)")
    commands.add_parser("list", help="list the bundled scenarios")
    commands.add_parser("targets", help="measure every target of the reference workload")
    commands.add_parser("compare", help="two runs' reports side by side; exit 1 on a regression")
    args = parser.parse_args(argv)
    if args.command == "list":
        for path in sorted(SCENARIOS.glob("*.toml")):
            print(
                textwrap.fill(
                    summary(path),
                    100,
                    initial_indent=f"{path.stem:16} ",
                    subsequent_indent=" " * 17,
                )
            )
        return 0
    scenario = load.Scenario.load(args.scenario)
    if args.events is not None:
        scenario = own_events(scenario, args)
    else:
        given = [
            flag
            for flag, value in (
                ("--source", args.source),
                ("--kafka", args.kafka),
                ("--topic", args.topic),
                ("--rate", args.rate),
                ("--speedup", args.speedup),
                ("--retime", args.retime or None),
                ("--batch", args.batch),
            )
            if value is not None
        ]
        if given:  # they shape a replay: without one they would be silently ignored
            raise SystemExit(f"{', '.join(given)}: give --events too (the file to replay)")
    if args.subscribers is not None or args.view is not None:
        scenario = subscribed(scenario, args.subscribers, args.view)
    if args.save is not None and not args.auto:
        raise SystemExit("--save: give --auto too (it saves the derived scenario)")
    auto: Path | bool = args.save if args.save is not None else bool(args.auto)
    if args.workers < 1:
        raise SystemExit("--workers: give at least 1")
    result = asyncio.run(run(scenario, args.url, args.config, auto, args.workers))
    print(report.markdown(result), end="")
    for path in report.write(result, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
