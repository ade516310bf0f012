"""The one configuration rule of both services (service/config.py): a TOML file, then the
environment, text settings as written and the others as JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config as load_agent
from central.config import load_config as load_central
from service.config import ConfigError


def test_text_settings_keep_what_looks_like_json(tmp_path: Path) -> None:
    config = load_agent(
        None,
        {
            "BONUS_AGENT_STORE_ID": "0042",  # a string: not the number 42
            "BONUS_AGENT_CENTRAL_TOKEN": "12345",
            "BONUS_AGENT_LISTEN_PORT": "8800",
            "BONUS_AGENT_TILL_TOKENS": '{"till-1": "007"}',
            "BONUS_AGENT_PROVIDER__KIND": "file",
            "BONUS_AGENT_DATA_DIR": str(tmp_path),
        },
    )
    assert config.store_id == "0042"
    assert config.central_token.get_secret_value() == "12345"
    assert config.listen_port == 8800
    assert config.till_tokens["till-1"].get_secret_value() == "007"


def test_the_central_server_reads_the_environment_by_the_same_rule() -> None:
    config = load_central(
        None,
        {
            "BONUS_CENTRAL_WORKERS": "1",
            "BONUS_CENTRAL_METRICS_LOOPBACK": "false",
            "BONUS_CENTRAL_METRICS_TOKEN": "123",
            "BONUS_CENTRAL_TRUSTED_PROXIES": "10.0.0.5,10.1.0.0/16",
        },
    )
    assert config.workers == 1
    assert config.metrics_loopback is False
    assert config.metrics_token.get_secret_value() == "123"
    assert config.trusted_proxies == ["10.0.0.5", "10.1.0.0/16"]


@pytest.mark.parametrize("load", [load_agent, load_central])
def test_both_refuse_alike(tmp_path: Path, load: object) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("listen_port = [", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load(broken, {})  # type: ignore[operator]
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.toml", {})  # type: ignore[operator]
