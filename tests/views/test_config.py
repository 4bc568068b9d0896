"""Bad definitions fail at load/check time naming the file, the view and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from api.demo import EXAMPLE
from views.config import ConfigError, load

HEADER = '[sources.orders]\ntime = "ts"\n'


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(HEADER + body)
    return path


REFUSED = [
    ("SELECT country, count(*) AS n FROM nope GROUP BY country", "no such source"),
    ("SELECT country, count(*) AS n FROM orders", "must be in GROUP BY"),
    ("SELECT count(*) FROM orders", "name the aggregate with AS"),
    ("SELECT median(x) AS m FROM orders", "not a supported aggregate"),
    ("SELECT count(*) AS n FROM orders ORDER BY n", "ORDER is not supported"),
    ("SELECT count(*) AS n FROM orders WHERE x LIKE 'a%'", "not a supported condition"),
    ("SELECT count(*) AS n FROM a JOIN b ON a.x = b.x", "JOINS is not supported"),
    ("SELECT tumble(ts, '1 month') AS m, count(*) AS n FROM orders GROUP BY m", "no fixed length"),
    ("SELECT tumble(other, '1m') AS m, count(*) AS n FROM orders GROUP BY m", "time field 'ts'"),
    ("SELECT hop(ts, '1h', '7m') AS m, count(*) AS n FROM orders GROUP BY m", "slide must divide"),
    (
        "SELECT sum(status) AS s, count(*) AS n FROM orders WHERE status = 'x'",
        "used both as a number and as a string",
    ),
    ("SELECT count(*) AS n, sum(a) AS n FROM orders", "used twice"),
    ("SELECT top_k(p, 0) AS t FROM orders", "k must be a whole number"),
    ("SELECT approx_percentile(x, 2) AS q FROM orders", "between 0 and 1"),
    ("SELECT count(*) AS n FROM orders WHERE", "does not parse"),
    ("DELETE FROM orders", "only SELECT"),
    ("SELECT min(x, y) AS m FROM orders", "min takes one argument"),  # was: y silently ignored
    ("SELECT max(x, y) AS m FROM orders", "max takes one argument"),
]


@pytest.mark.parametrize(("sql", "message"), REFUSED)
def test_refused_sql_names_file_view_field(tmp_path: Path, sql: str, message: str) -> None:
    path = _write(tmp_path, f'[views.v1]\nsql = "{sql}"\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: view 'v1': field 'sql': "), text
    assert message in text, text


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            '[views.v]\nsql = "SELECT count(*) AS n FROM orders"\nretention = "soon"\n',
            "view 'v': field 'retention'",
        ),
        (
            '[views.v]\nsql = "SELECT count(*) AS n FROM orders"\nmax_group = 3\n',
            "view 'v': field 'max_group'",
        ),
        (
            '[views.v]\nsql = "SELECT count(*) AS n FROM orders"\nretention = "1d"\n',
            "view 'v': field 'retention'",
        ),
        (
            "[views.v]\nsql = \"SELECT tumble(ts, '1m') AS m, count(*) AS n FROM orders "
            'GROUP BY m"'
            '\nretention = "1m"\ngrace = "1h"\n',
            "view 'v': field 'grace'",
        ),
        ("[sources.x]\ntime = 3\n", "source 'x': field 'time'"),
        ('[sources.x]\ntime = "ts"\nfields = { a = "decimal" }\n', "source 'x': field 'fields.a'"),
    ],
)
def test_other_fields_are_named(tmp_path: Path, body: str, where: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError, match=f"^{path}: {where}: "):
        load(path)


def test_declared_type_conflict_names_the_view(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[sources.o]\ntime = "ts"\nfields = { amount = "string" }\n'
        '[views.rev]\nsql = "SELECT sum(amount) AS r FROM o"\n'
    )
    with pytest.raises(
        ConfigError,
        match="view 'rev': field 'sql': field 'amount' is used as a "
        "number, but the declared fields",
    ):
        load(path)


def test_check_command(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "api", "check", str(EXAMPLE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert "view revenue_by_country (from orders): keys=['country'] window=tumble 1m" in good.stdout
    assert "p95_amount: float (aggregate)" in good.stdout
    path = _write(tmp_path, '[views.broken]\nsql = "SELECT nope(x) AS y FROM orders"\n')
    bad = subprocess.run(
        [sys.executable, "-m", "api", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert f"{path}: view 'broken': field 'sql': 'NOPE(x)' is not a supported" in bad.stderr
