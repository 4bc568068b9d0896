"""The load-test suite's command line (also ``tallyd bench``).

    python -m benchmarks run SCENARIO (--url URL | --config tallyd.toml) [--out DIR]
    python -m benchmarks targets [--quick] [--only ...]      (every target, peers included)
    python -m benchmarks list                                 (the bundled scenarios)

SCENARIO is a TOML file or the name of a bundled one (``shop-ingest``, ``query``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from benchmarks import load, report


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


async def run(scenario: load.Scenario, url: str | None, config: Path | None) -> dict[str, Any]:
    if url is not None:
        return await load.run(scenario, url.rstrip("/"), progress=_progress)
    assert config is not None
    from benchmarks.server import ServerProcess

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(config, Path(tmp) / "data", Path(tmp) / "server.log")
        await server.start()
        try:
            result = await load.run(scenario, server.url, progress=_progress)
            assert server.proc is not None
            rss = rss_mb(server.proc.pid)
            if rss is not None:
                result["server_rss_mb"] = rss
            return result
        finally:
            server.terminate()


SCENARIOS = Path(__file__).parent / "scenarios"


def scenario_path(text: str) -> Path:
    path = Path(text)
    if path.exists() or path.suffix == ".toml":
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["targets"]:
        from benchmarks import targets

        targets.main(argv[1:])
        return 0
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
    commands.add_parser("list", help="list the bundled scenarios")
    commands.add_parser("targets", help="measure every target of the reference workload")
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
    result = asyncio.run(run(scenario, args.url, args.config))
    print(report.markdown(result), end="")
    for path in report.write(result, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
