"""One rule for paths (issue 14, item 6): in the config file, relative to the file's directory
(``data_dir``, a Kafka source's ``state_dir``, a file source's ``path``); on the command line,
relative to the working directory. ``tests/e2e/test_data_dir.py`` runs it as users do."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from api.engine import Engine
from api.settings import load_settings
from ingest.kafka import KafkaSource
from views.config import parse

KAFKA = """
[sources.{name}]
from = "kafka"
bootstrap = "127.0.0.1:9"
topic = "t"
group = "g"
time = "ts"
{state_dir}

[views.{name}_n]
sql = "SELECT count(*) AS n FROM {name}"
"""


def test_data_dir_in_the_file_is_next_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = str(tmp_path / "conf" / "app.toml")
    assert load_settings({"data_dir": "state"}, config).data_dir == str(tmp_path / "conf" / "state")
    assert load_settings({}, config).data_dir == str(tmp_path / "conf" / "data")  # the default
    assert load_settings({"data_dir": "../up"}, config).data_dir == str(tmp_path / "up")
    assert load_settings({"data_dir": "/abs/d"}, config).data_dir == "/abs/d"


def test_data_dir_on_the_command_line_is_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = str(tmp_path / "conf" / "app.toml")
    settings = load_settings({"data_dir": "state"}, config, data_dir="here")
    assert settings.data_dir == str(tmp_path / "here")
    assert os.path.isabs(load_settings({}, "<config>").data_dir)


@pytest.mark.asyncio
async def test_kafka_state_dir_is_next_to_the_config_and_defaults_under_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = KAFKA.format(name="a", state_dir='state_dir = "parts"') + KAFKA.format(
        name="b", state_dir=""
    )
    path = str(tmp_path / "conf" / "app.toml")
    config = parse(tomllib.loads(text), path)
    engine = Engine(config, load_settings(config.server, path, data_dir="d"))
    a, b = engine.sources["a"], engine.sources["b"]
    assert isinstance(a, KafkaSource)
    assert isinstance(b, KafkaSource)
    assert a.state_dir == tmp_path / "conf" / "parts"
    assert b.state_dir == tmp_path / "d" / "kafka" / "b"
