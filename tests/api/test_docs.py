"""Every setting and every route is documented in the README (as datasette's test_docs)."""

from __future__ import annotations

import re
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


ROOT = Path(__file__).resolve().parents[2]
CODE_REFERENCE = re.compile(r"`((?:\w+/)*\w+\.py)(?::([A-Za-z_][\w.]*))?`")


@pytest.mark.parametrize("doc", ["README.md", "benchmarks/README.md"])
def test_code_the_docs_name_exists(doc: str) -> None:
    """Every `path.py` and `path.py:Class.method` a document names is there: the layout section
    is how a reader finds the engine, so it must not send them to code that moved."""
    text = (ROOT / doc).read_text()
    found = CODE_REFERENCE.findall(text)
    assert found, doc
    for path, symbol in found:
        source = ROOT / path
        assert source.is_file(), (doc, path)
        code = source.read_text()
        for name in filter(None, symbol.split(".")):
            assert re.search(rf"^\s*(?:async def|def|class) {name}\b", code, re.M), (
                doc,
                path,
                name,
            )
