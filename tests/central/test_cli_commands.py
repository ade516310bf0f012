"""``bonus-central``'s commands on the database they are pointed at: only ``migrate`` creates a
schema, and it says what it did; the others refuse a database without one, naming it."""

from __future__ import annotations

import asyncio
import os
import tomllib
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection

from central import cli
from central.db import Database, _alembic_config, head_revision
from tests.phonekeys import TEST_CENTRAL_ENV

OLDER = "0005_phone_hashes"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BONUS_CENTRAL_"):
            monkeypatch.delenv(name)
    for name, value in TEST_CENTRAL_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "setup_logging", lambda *_args, **_kwargs: None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


COMMANDS = [
    ("staff", "add", "ivanova", "--name", "Иванова", "--permissions", "journal"),
    ("store", "add", "store-9", "--name", "Аптека №9"),
    ("store", "list"),
    ("settings", "show"),
    ("check",),
    ("expire",),
    ("phone-key", "export", "-"),
    ("serve",),
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: " ".join(argv[:2]))
def test_a_command_run_elsewhere_creates_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: str
) -> None:
    """The default database is relative: run from another directory, a command used to make a
    fresh one there, report success and leave the real ledger without the account."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert "sqlite+aiosqlite:///var/central/central.sqlite3" in err
    assert str(tmp_path / "var" / "central" / "central.sqlite3") in err
    assert "bonus-central migrate" in err
    assert out == ""
    assert list(tmp_path.iterdir()) == []


def test_migrate_says_what_it_did_and_the_others_then_work(
    central_db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On an empty database (a new SQLite file, an empty PostgreSQL database) every command but
    ``migrate`` refuses; ``migrate`` creates the schema and says so; run again it does nothing."""
    monkeypatch.setenv("BONUS_CENTRAL_DATABASE_URL", central_db_url)
    if central_db_url.startswith("sqlite"):
        Path(central_db_url.removeprefix("sqlite+aiosqlite:///")).touch()  # an empty file
    code, out, err = run(capsys, "check")
    assert code == 1
    assert "has no schema" in err
    assert "bonus-central migrate" in err

    code, out, _ = run(capsys, "migrate")
    assert code == 0
    assert f"created the schema at revision {head_revision()}" in out

    code, out, _ = run(capsys, "migrate")
    assert code == 0
    assert f"already at revision {head_revision()}: nothing to do" in out

    code, out, err = run(capsys, "check")
    assert code == 0, err
    assert out.strip().endswith("ok")


def test_migrate_names_the_revisions_of_an_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite3'}"
    monkeypatch.setenv("BONUS_CENTRAL_DATABASE_URL", url)
    assert (run(capsys, "migrate"))[0] == 0
    asyncio.run(_downgrade(url, OLDER))
    code, out, _ = run(capsys, "migrate")
    assert code == 0
    assert f"upgraded {url} from revision {OLDER} to {head_revision()}" in out


def test_a_password_in_the_url_is_not_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "BONUS_CENTRAL_DATABASE_URL", "postgresql+asyncpg://bonus:s3cret@127.0.0.1:1/x"
    )
    code, _, err = run(capsys, "store", "list")
    assert code == 1
    assert "postgresql+asyncpg://bonus:***@127.0.0.1:1/x" in err
    assert "s3cret" not in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_the_configuration_file_may_come_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """The unit runs ``bonus-central serve --config …``: read the file wherever it is written."""
    config = tmp_path / "central.toml"
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite3'}"
    config.write_text(f'database_url = "{url}"\n', encoding="utf-8")
    args = ["--config", str(config)]
    for argv in (["migrate"], ["store", "list"], ["settings", "show"]):
        full = [*args, *argv] if where == "before" else [*argv, *args]
        code, _, err = run(capsys, *full)
        assert code == 0, (full, err)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"bonus-central {_pyproject_version()}"


async def _downgrade(url: str, revision: str) -> None:
    db = Database(url)

    def downgrade(sync_conn: Connection) -> None:
        command.downgrade(_alembic_config(sync_conn), revision)

    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(downgrade)
    finally:
        await db.close()


def _pyproject_version() -> str:
    root = Path(__file__).resolve().parents[2]
    return str(tomllib.loads((root / "pyproject.toml").read_text("utf-8"))["project"]["version"])
