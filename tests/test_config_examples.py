"""The example configuration files in systemd/ name every setting of the real models, no
unknown one, each with a comment, at its default value."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agent import config as agent_config
from central import config as central_config

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"

EXAMPLES: list[tuple[str, Any, type[BaseModel], dict[str, type[BaseModel]]]] = [
    (
        "agent.toml.example",
        agent_config.load_config,
        agent_config.AgentConfig,
        {"provider": agent_config.ProviderConfig},
    ),
    ("central.toml.example", central_config.load_config, central_config.CentralConfig, {}),
]


def _names(
    data: dict[str, Any], model: type[BaseModel], tables: dict[str, type[BaseModel]]
) -> set[str]:
    names = set()
    for key, value in data.items():
        if key in tables:
            names |= {f"{key}.{inner}" for inner in value}
        else:
            names.add(key)
    return names


def _settings(model: type[BaseModel], tables: dict[str, type[BaseModel]]) -> set[str]:
    names = set()
    for name in model.model_fields:
        if name in tables:
            names |= {f"{name}.{inner}" for inner in tables[name].model_fields}
        else:
            names.add(name)
    return names


@pytest.mark.parametrize(
    ("file", "load", "model", "tables"), EXAMPLES, ids=[e[0] for e in EXAMPLES]
)
def test_the_example_names_every_setting_at_its_default(
    file: str, load: Any, model: type[BaseModel], tables: dict[str, type[BaseModel]]
) -> None:
    path = SYSTEMD_DIR / file
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    named = _names(data, model, tables)
    expected = _settings(model, tables)
    # A setting without a default value (None: TOML has no null) is shown commented out.
    unset = set(re.findall(r"^# ([a-z_]+) = ", text, flags=re.MULTILINE))
    assert all(model.model_fields[name].default is None for name in unset), unset
    named |= unset
    assert not expected - named, f"{file} lacks {sorted(expected - named)}"
    assert not named - expected, f"{file} names unknown {sorted(named - expected)}"
    # What the service reads from it: the defaults, as the comments say.
    assert load(path, {}) == model()


@pytest.mark.parametrize("file", [e[0] for e in EXAMPLES])
def test_every_setting_has_a_comment(file: str) -> None:
    lines = (SYSTEMD_DIR / file).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line and not line.startswith(("#", "[")):
            assert lines[number - 1].startswith("# "), f"{file}:{number + 1}: {line} has no comment"
