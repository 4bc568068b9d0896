"""The ``ingest_path`` fixture's proof can fail: a test that ran the row path under ``columns``,
or a table under ``rows``, is caught. The proof is what keeps the parametrization honest, so it
gets tests of its own."""

from __future__ import annotations

import pytest

from ingest.decode import Decoder
from tests.helpers import HOUR_T0, IngestPath, ndjson
from views.config import parse
from views.registry import Batch, Registry

CONFIG = parse(
    {"sources": {"s": {"time": "ts"}}, "views": {"v": {"sql": "SELECT count(*) AS n FROM s"}}}
)
SPEC = CONFIG.sources["s"]
EVENTS = [{"ts": HOUR_T0 + i} for i in range(3)]


def spy(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[IngestPath, Registry]:
    path = IngestPath(name)
    path.install(monkeypatch)
    return path, Registry(CONFIG.sources, CONFIG.views)


@pytest.mark.parametrize("name", ["rows", "columns"])
def test_each_path_passes_its_own_proof(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path, registry = spy(name, monkeypatch)
    registry.apply(path.batch(SPEC, path.events(EVENTS), 1))
    path.check()
    assert path.tables == [path.columns]
    assert path.folds == [("v", name)]


def test_a_columns_test_that_ran_rows_fails_its_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    path, registry = spy("columns", monkeypatch)
    registry.apply(Batch("s", path.events(EVENTS), 1))  # large, but never read as a table
    with pytest.raises(AssertionError, match="no body was large enough"):
        path.check()


def test_a_body_the_column_reader_declined_fails_a_columns_proof(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, registry = spy("columns", monkeypatch)
    body = ndjson([*path.events(EVENTS), {"ts": "not a time"}])
    decoder = Decoder(SPEC, 1 << 20)
    assert decoder.columns(body) is None  # declined: the row decoder takes it
    registry.apply(Batch("s", decoder.decode(body).events, 1))
    with pytest.raises(AssertionError, match="declined"):
        path.check()


def test_a_table_in_a_rows_test_fails_its_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    path, registry = spy("rows", monkeypatch)
    registry.apply(IngestPath("columns").batch(SPEC, IngestPath("columns").events(EVENTS), 1))
    with pytest.raises(AssertionError, match="read column-wise in a rows test"):
        path.check()


@pytest.mark.parametrize(
    ("name", "says"), [("rows", "nothing was ingested"), ("columns", "no body was large enough")]
)
def test_a_test_that_ingested_nothing_fails_its_proof(
    name: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = spy(name, monkeypatch)
    with pytest.raises(AssertionError, match=says):
        path.check()
