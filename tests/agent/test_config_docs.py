"""docs/agent-config.md is tested: every setting is documented with its real default and whether
it is hot-reloadable, and its examples are valid configurations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.config import HOT_RELOADABLE, AgentConfig, ProviderConfig, load_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "agent-config.md"
#: A row of a settings table: | `name` | `default` | hot or restart | description |
ROW = re.compile(
    r"^\|\s*`(?P<name>[a-z0-9_.]+)`\s*\|\s*(?:`(?P<default>[^`]*)`|(?P<text>[^|]*?))\s*\|"
    r"\s*(?P<hot>hot|restart)\s*\|\s*(?P<description>[^|]+?)\s*\|$"
)


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def rows() -> dict[str, re.Match[str]]:
    found = {}
    for line in doc_text().splitlines():
        match = ROW.match(line.strip())
        if match:
            assert match["name"] not in found, f"{match['name']} is documented twice"
            found[match["name"]] = match
    return found


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", doc_text(), flags=re.DOTALL)


AGENT_FIELDS = [name for name in AgentConfig.model_fields if name != "provider"]


@pytest.mark.parametrize("name", AGENT_FIELDS)
def test_every_agent_setting_is_documented_with_its_default(name: str) -> None:
    row = rows().get(name)
    assert row is not None, f"{name} has no row in docs/agent-config.md"
    assert row["default"] is not None, f"{name}: write the default as `value`"
    documented = AgentConfig.model_validate({name: json.loads(row["default"])})
    assert getattr(documented, name) == getattr(AgentConfig(), name)
    assert row["hot"] == ("hot" if name in HOT_RELOADABLE else "restart"), name
    assert row["description"].strip()


@pytest.mark.parametrize("name", list(ProviderConfig.model_fields))
def test_every_provider_setting_is_documented_with_its_default(name: str) -> None:
    row = rows().get(f"provider.{name}")
    assert row is not None, f"provider.{name} has no row in docs/agent-config.md"
    assert row["default"] is not None
    documented = ProviderConfig.model_validate({name: json.loads(row["default"])})
    assert getattr(documented, name) == getattr(ProviderConfig(), name)
    assert row["hot"] == ("hot" if "provider" in HOT_RELOADABLE else "restart")


def test_the_provider_table_itself_is_documented() -> None:
    row = rows().get("provider")
    assert row is not None
    assert row["hot"] == ("hot" if "provider" in HOT_RELOADABLE else "restart")


def test_no_unknown_setting_is_documented() -> None:
    known = {
        *AgentConfig.model_fields,
        *(f"provider.{name}" for name in ProviderConfig.model_fields),
    }
    assert set(rows()) - known == set()


def test_the_hot_reload_section_names_every_hot_setting() -> None:
    section = doc_text().split("## Hot reload", 1)[1]
    for name in HOT_RELOADABLE:
        assert f"`{name}`" in section or f"`[{name}]`" in section, name
    for name in set(AgentConfig.model_fields) - HOT_RELOADABLE:
        assert f"`{name}`" in section, f"{name} needs a restart: say so"


def test_the_toml_example_is_a_valid_configuration(tmp_path: Path) -> None:
    [example] = code_blocks("toml")
    path = tmp_path / "agent.toml"
    path.write_text(example, encoding="utf-8")
    config = load_config(path, environ={})
    assert config.store_id == "apteka-017"
    assert set(config.till_tokens) == {"till-1", "till-2"}
    assert config.provider.kind == "stream_telecom"


def test_the_environment_examples_are_valid_overrides() -> None:
    [example] = code_blocks("sh")
    environ = dict(
        line.split("=", 1) for line in example.splitlines() if line.startswith("BONUS_AGENT_")
    )
    assert "BONUS_AGENT_PROVIDER__KIND" in environ
    config = load_config(None, environ=environ)
    assert config.provider.kind == "file"
    assert config.listen_port == 8766
    assert config.store_id == "017"  # an id stays text even when it looks like a number
    assert config.till_tokens["till-1"].get_secret_value() == "4f1c0e9a-first-till"
    assert config.provider.sms_timeout_s == 5
