"""What an installed tallyd needs at run time ships in its wheel, not only in a clone."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_the_demo_config_and_the_chart_assets(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("tallyd-*.whl")
    with zipfile.ZipFile(wheel) as built:
        names = set(built.namelist())
        assert built.read("api/demo.toml") == (ROOT / "examples" / "shop.toml").read_bytes()
    assert {"api/static/uPlot.iife.min.js", "api/static/uPlot.min.css"} <= names
    assert not any(name.startswith("tests/") for name in names)
