"""The mutation score per module, from mutmut's results (``make mutate`` prints it).

Reads ``mutmut results --all true`` (one ``name: status`` line per mutant, the results of the
last ``mutmut run``) and the mutants that ``docs/mutants.md`` explains as equivalent — and, under
its heading ``## Killed, checked by hand``, those killed only by a test mutmut does not run or
newer than the run's copy of the code (each seen to fail with its mutant applied by hand: they
count as killed) — and prints
per source file: mutants, killed, survived, equivalent (listed), unexplained (neither killed nor
listed), not run (a run stopped before them) and the score killed / mutants run. A timeout counts
as killed: the tests did not pass (the mutant loops); so does a segfault (the mutant crashed the
test process). A mutant no selected test runs ("no tests")
counts as not killed. A mutant listed as equivalent that the run killed is printed too: its
listing is stale (its function changed and the names were numbered anew).

It lives in tests/ because it is a test tool, like tests/reference.py: not shipped in the wheel
(only views, ingest, api and benchmarks are), yet type-checked and linted with the tests.

    python -m tests.mutation [--results FILE] [--equivalent docs/mutants.md]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# A segfault is a test process the mutant crashed (a loop growing without bound): not a pass.
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
# A mutant name: module path, then x_function or xǁClassǁmethod, then __mutmut_N.
NAME = re.compile(r"[A-Za-z_][\w.]*\.xǁ?[\wǁ]*__mutmut_\d+")
BY_HAND = "## Killed, checked by hand"


@dataclass
class Score:
    total: int = 0
    killed: int = 0
    survived: int = 0
    equivalent: int = 0
    unexplained: int = 0
    not_run: int = 0

    def add(self, other: Score) -> None:
        self.total += other.total
        self.killed += other.killed
        self.survived += other.survived
        self.equivalent += other.equivalent
        self.unexplained += other.unexplained
        self.not_run += other.not_run

    def percent(self) -> str:
        run = self.total - self.not_run
        return f"{100 * self.killed / run:.1f} %" if run else "-"


def parse_results(text: str) -> dict[str, str]:
    """``name: status`` lines (as ``mutmut results --all true`` prints them) -> {name: status}."""
    out = {}
    for line in text.splitlines():
        name, sep, status = line.strip().partition(": ")
        if sep and NAME.fullmatch(name):
            out[name] = status
    return out


def module_of(name: str) -> str:
    """The source file a mutant belongs to: ``views.aggregates.sums.xǁSumǁadd__mutmut_3`` ->
    ``views/aggregates/sums.py``."""
    module = re.split(r"\.xǁ|\.x_", name, maxsplit=1)[0]
    return module.replace(".", "/") + ".py"


def listed(text: str) -> tuple[set[str], set[str]]:
    """docs/mutants.md's text -> (the mutants listed as equivalent, those killed by hand)."""
    equivalent, _, by_hand = text.partition(BY_HAND)
    return set(NAME.findall(equivalent)), set(NAME.findall(by_hand))


def scores(
    results: dict[str, str], equivalent: set[str], by_hand: frozenset[str] = frozenset()
) -> dict[str, Score]:
    out: dict[str, Score] = {}
    for name, status in results.items():
        score = out.setdefault(module_of(name), Score())
        score.total += 1
        if status in KILLED or (name in by_hand and status != "not checked"):
            score.killed += 1
            continue
        score.survived += status == "survived"
        if status == "not checked":
            score.not_run += 1
        elif name in equivalent:
            score.equivalent += 1
        else:
            score.unexplained += 1
    return out


def stale(results: dict[str, str], equivalent: set[str]) -> list[str]:
    """Mutants listed as equivalent that the run killed: a listing left behind when its
    function changed and its mutants were numbered anew (the name is now another mutant's), one
    a newer test kills (the listing must go), or an equivalent mutant only slower, which a
    loaded machine timed out (a timeout counts as killed; the listing may stay). Check each."""
    return sorted(n for n in equivalent if results.get(n) in KILLED)


def table(by_module: dict[str, Score], groups: Iterable[str]) -> str:
    """The per-module table, then a total for each group (a folder prefix) and for everything."""
    head = (
        "module",
        "mutants",
        "killed",
        "survived",
        "equivalent",
        "unexplained",
        "not run",
        "score",
    )
    rows: list[tuple[str, ...]] = [head]

    def row(label: str, s: Score) -> tuple[str, ...]:
        figures = (s.total, s.killed, s.survived, s.equivalent, s.unexplained, s.not_run)
        return (label, *map(str, figures), s.percent())

    for module in sorted(by_module):
        rows.append(row(module, by_module[module]))
    for label, prefix in [*((g, g) for g in groups), ("all", "")]:
        total = Score()
        for module, score in by_module.items():
            if module.startswith(prefix):
                total.add(score)
        rows.append(row(label, total))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", help="a saved `mutmut results --all true` output")
    parser.add_argument("--equivalent", default="docs/mutants.md")
    parser.add_argument("--group", action="append", default=["views/aggregates/"])
    args = parser.parse_args(argv)
    if args.results:
        text = Path(args.results).read_text()
    else:
        command = [sys.executable, "-m", "mutmut", "results", "--all", "true"]
        text = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    results = parse_results(text)
    if not results:
        print("no mutmut results: run `mutmut run` (make mutate) first", file=sys.stderr)
        return 1
    doc = Path(args.equivalent)
    equivalent, by_hand = listed(doc.read_text()) if doc.exists() else (set(), set())
    print(table(scores(results, equivalent, frozenset(by_hand)), args.group))
    statuses = Counter(results.values())
    print("statuses: " + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items())))
    unexplained = sorted(
        n
        for n, s in results.items()
        if s not in KILLED and s != "not checked" and n not in equivalent | by_hand
    )
    if unexplained:
        print(f"\n{len(unexplained)} mutants run, neither killed nor in {doc}:")
        print("\n".join(f"  {n} ({results[n]})" for n in unexplained))
    wrong = stale(results, equivalent)
    if wrong:
        print(f"\n{len(wrong)} listed as equivalent in {doc}, yet killed (renumbered? slow?):")
        print("\n".join(f"  {n} ({results[n]})" for n in wrong))
    return 0


if __name__ == "__main__":
    sys.exit(main())
