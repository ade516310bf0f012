"""``bonus-central staff add``: an office account made on the command line can log in."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from central import cli
from central.app import create_app
from central.db import Database, migrate
from tests.phonekeys import central_config

ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 60


def _staff_add(database_url: str, *args: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BONUS_CENTRAL_")}
    env["BONUS_CENTRAL_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "central.cli", "staff", "add", *args, "--password-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


async def test_staff_add_then_log_in(
    central_db_url: str,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The account goes into a ledger ``bonus-central migrate`` made (it refuses an empty one).
    db = Database(central_db_url)
    try:
        await migrate(db.engine)
    finally:
        await db.close()
    done = _staff_add(
        central_db_url,
        "ivanova",
        "--name",
        "Иванова Мария",
        "--permissions",
        "campaigns,zeroing",
        password="длинный пароль 1",
    )
    assert done.returncode == 0, done.stderr
    assert "ivanova" in done.stdout
    # Refusals (in this process, to spare three interpreter starts): a login taken, a short
    # password, an unknown permission; nothing is created.
    monkeypatch.setenv("BONUS_CENTRAL_DATABASE_URL", central_db_url)
    monkeypatch.setattr(cli, "setup_logging", lambda *_args, **_kwargs: None)
    for login, permissions, password, code in (
        ("ivanova", "journal", "12345678", 1),
        ("petrov", "journal", "1234567", 2),
        ("petrov", "root", "12345678", 2),
    ):
        monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
        argv = ["staff", "add", login, "--name", "X", "--permissions", permissions]
        assert await asyncio.to_thread(cli.main, [*argv, "--password-stdin"]) == code

    client = await aiohttp_client(create_app(central_config(central_db_url), run_expiry=False))
    response = await client.post(
        "/admin/v1/session", json={"login": "ivanova", "password": "длинный пароль 1"}
    )
    assert response.status == 201, await response.text()
    token = (await response.json())["token"]
    response = await client.get("/admin/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert await response.json() == {
        "login": "ivanova",
        "name": "Иванова Мария",
        "permissions": ["campaigns", "zeroing"],
    }
    response = await client.post(
        "/admin/v1/session", json={"login": "petrov", "password": "12345678"}
    )
    assert response.status == 401
