"""``tallyd bench compare A.json B.json [--fail-over PCT]``: two load reports side by side.

For every stream both runs have (query, ingest, freshness, ...): its achieved throughput and
each latency percentile in A and in B, and the change in %. A *regression* is B worse than A by
more than ``--fail-over`` percent: throughput lower, or a latency higher. The command exits 1
when there is one (and says which), 0 when not, so a team can run it in CI against their
staging deployment, with A a saved baseline. A stream in only one of the runs is named, not
compared. A run whose generator was the limit says so in its report; its figures are then the
generator's, and comparing them says nothing about the server: compare warns.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

PERCENTILES = ("p50", "p90", "p99", "p99.9", "max")


@dataclass(frozen=True)
class Row:
    stream: str
    measure: str  # "throughput" or a percentile
    a: float
    b: float
    higher_is_better: bool

    @property
    def change(self) -> float | None:
        """B against A, in % (None when A is 0: no ratio)."""
        return None if self.a == 0 else (self.b - self.a) / self.a * 100

    def worse_by(self) -> float:
        """How much worse B is than A, in % (0 when it is not worse)."""
        change = self.change
        if change is None:  # A was 0: any step the wrong way counts as 100 %
            worse = self.b < self.a if self.higher_is_better else self.b > self.a
            return 100.0 if worse else 0.0
        return max(-change if self.higher_is_better else change, 0.0)


def rows(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[Row], list[str]]:
    """The rows of every stream both reports have; notes on those only one has."""
    out: list[Row] = []
    notes = []
    for name in sorted(set(a["streams"]) | set(b["streams"])):
        if name not in a["streams"] or name not in b["streams"]:
            where = "A" if name in a["streams"] else "B"
            notes.append(f"stream {name} is only in {where}: not compared")
            continue
        sa, sb = a["streams"][name], b["streams"][name]
        unit = f"{sa['unit']}/s"
        out.append(
            Row(name, f"throughput ({unit})", sa["achieved_rate"], sb["achieved_rate"], True)
        )
        for p in PERCENTILES:
            out.append(Row(name, f"{p} (ms)", sa["latency_ms"][p], sb["latency_ms"][p], False))
    for label, report in (("A", a), ("B", b)):
        if report.get("generator_limited"):
            notes.append(
                f"run {label}: the load generator, not the server, limited it "
                f"({report['generator_limited']}): its figures do not measure the server"
            )
    return out, notes


def table(found: list[Row], fail_over: float) -> str:
    lines = [
        "| stream | measure | A | B | change | |",
        "|---|---|---|---|---|---|",
    ]
    for row in found:
        change = "n/a" if row.change is None else f"{row.change:+.1f} %"
        flag = "REGRESSION" if row.worse_by() > fail_over else ""
        lines.append(
            f"| {row.stream} | {row.measure} | {row.a:,.3f} | {row.b:,.3f} | {change} | {flag} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tallyd bench compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a", type=Path, help="the baseline report (a run's .json)")
    parser.add_argument("b", type=Path, help="the report to compare with it")
    parser.add_argument(
        "--fail-over",
        type=float,
        default=10.0,
        help="exit 1 when B is worse than A by more than this %% (throughput or any latency)",
    )
    args = parser.parse_args(argv)
    a, b = (orjson.loads(path.read_bytes()) for path in (args.a, args.b))
    found, notes = rows(a, b)
    print(f"A: {args.a} ({a['scenario']}, {a['duration_s']} s)")
    print(f"B: {args.b} ({b['scenario']}, {b['duration_s']} s)\n")
    print(table(found, args.fail_over))
    for note in notes:
        print(f"note: {note}")
    worse = [r for r in found if r.worse_by() > args.fail_over]
    if worse:
        names = ", ".join(f"{r.stream} {r.measure.split(' (')[0]}" for r in worse)
        print(f"\n{len(worse)} regression(s) over {args.fail_over:g} %: {names}")
        return 1
    print(f"\nno regression over {args.fail_over:g} %")
    return 0
