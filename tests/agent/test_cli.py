"""``bonus-agent``'s command line as the systemd unit and the runbook write it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from agent.cli import main


@pytest.mark.parametrize("where", ["before", "after"])
def test_the_configuration_file_may_come_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """The unit runs ``bonus-agent serve --config …``; the runbook ``bonus-agent --config …
    backup PATH``: both read the file."""
    config = tmp_path / "agent.toml"
    config.write_text('store_id = "apteka-017"\n', encoding="utf-8")
    args = ["--config", str(config)]
    code = main([*args, "check-config"] if where == "before" else ["check-config", *args])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["store_id"] == "apteka-017"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``bonus-agent --version`` names the release of pyproject.toml."""
    root = Path(__file__).resolve().parents[2]
    release = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"bonus-agent {release}"
