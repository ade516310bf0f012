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


def test_backup_of_a_missing_journal_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run where there is no journal (another directory, a wrong ``data_dir``), ``backup`` says so
    and makes neither an empty database nor a backup of one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BONUS_AGENT_DATA_DIR", raising=False)
    code = main(["backup", str(tmp_path / "copy.sqlite3")])
    assert code == 1
    assert "no agent database at var/agent/agent.sqlite3" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
