"""Test-only launcher: ``python -m tests.e2e.crashpoint POINT AFTER serve ARGS...`` arms one named
crash point of ingest/faults.py, then runs ``tallyd serve``. Production never arms one."""

from __future__ import annotations

import sys

from api.cli import main
from ingest import faults

if __name__ == "__main__":
    point, after, *rest = sys.argv[1:]
    faults.arm(point, int(after))
    sys.exit(main(rest))
