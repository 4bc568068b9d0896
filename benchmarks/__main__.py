"""``python -m benchmarks run SCENARIO.toml (--url URL | --config tallyd.toml) [--out DIR]``"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
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


async def run(scenario: load.Scenario, url: str | None, config: Path | None) -> dict[str, Any]:
    if url is not None:
        return await load.run(scenario, url.rstrip("/"))
    assert config is not None
    from benchmarks.server import ServerProcess

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(config, Path(tmp) / "data", Path(tmp) / "server.log")
        await server.start()
        try:
            result = await load.run(scenario, server.url)
            assert server.proc is not None
            rss = rss_mb(server.proc.pid)
            if rss is not None:
                result["server_rss_mb"] = rss
            return result
        finally:
            server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=load.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p_run = commands.add_parser("run", help="run one scenario and write its report")
    p_run.add_argument("scenario", type=Path)
    target = p_run.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running tallyd, e.g. http://127.0.0.1:8080")
    target.add_argument("--config", type=Path, help="start tallyd serve with this config")
    p_run.add_argument("--out", type=Path, default=Path("bench-reports"))
    args = parser.parse_args()
    scenario = load.Scenario.load(args.scenario)
    result = asyncio.run(run(scenario, args.url, args.config))
    print(report.markdown(result), end="")
    for path in report.write(result, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
