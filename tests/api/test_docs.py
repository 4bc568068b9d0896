"""Every setting and every route is documented in the README (as datasette's test_docs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.app import ROUTES
from api.settings import SETTINGS
from views.config import SOURCE_FIELDS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", [s.name for s in SETTINGS])
def test_setting_documented(name: str) -> None:
    assert f"| `{name}` |" in README


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, *_ in ROUTES])
def test_route_documented(method: str, path: str) -> None:
    assert f"| {method} | `{path}` |" in README


@pytest.mark.parametrize(
    ("kind", "option"),
    [(kind, option) for kind, options in SOURCE_FIELDS.items() for option in sorted(options)],
)
def test_source_option_documented(kind: str, option: str) -> None:
    assert f"{option} = " in README or f"`{option}`" in README, (kind, option)
