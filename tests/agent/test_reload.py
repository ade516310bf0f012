"""Configuration hot reload: safe settings apply at run time, the rest waits for a restart, and
a broken edit changes nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.app import create_app
from agent.clock import FakeClock
from agent.config import ENV_PREFIX, load_config
from agent.http import CONFIG_KEY
from agent.reload import apply_config_file
from service.logs import JsonFormatter, setup_logging
from tests.agent.conftest import PHONE, Agent, ClientFactory, assert_error
from tests.phonekeys import write_key_file

WATCH_TIMEOUT_S = 8.0


def toml(tmp_path: Path, **settings: Any) -> str:
    """A configuration file's text: the test's directories plus these top-level settings."""
    lines = [f"data_dir = {json.dumps(str(tmp_path))}"]
    key_file = tmp_path / "phone-key"
    if not key_file.exists():
        write_key_file(key_file)
    lines.append(f"phone_key_file = {json.dumps(str(key_file))}")
    provider = settings.pop("provider", {})
    for name, value in settings.items():
        if isinstance(value, dict):
            pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{name} = {{{pairs}}}")
        else:
            lines.append(f"{name} = {json.dumps(value)}")
    lines.append("[provider]")
    provider = {"kind": "file", "file_path": str(tmp_path / "messages.jsonl"), **provider}
    lines.extend(f"{name} = {json.dumps(value)}" for name, value in provider.items())
    return "\n".join(lines) + "\n"


def write(config_path: Path, prefix: str = "", **settings: Any) -> None:
    """Edit the configuration file: these settings (and raw top-level text) over the defaults."""
    config_path.write_text(prefix + toml(config_path.parent, **settings), encoding="utf-8")


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(row) for row in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file alone decides: no BONUS_AGENT_* override from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def restore_log_level() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(toml(tmp_path), encoding="utf-8")
    return path


@pytest.fixture
async def reloadable(tmp_path: Path, config_path: Path, aiohttp_client: ClientFactory) -> Agent:
    """An agent started from the configuration file, watching it."""
    config = load_config(config_path)
    clock = FakeClock()
    app = create_app(config, clock=clock, config_path=config_path)
    client = await aiohttp_client(app)
    return Agent(app, client, clock, config.provider.file_path)


async def lookup(agent: Agent, **headers: str) -> tuple[int, Any]:
    return await agent.post("/pos/v1/cards/lookup", {"phone": PHONE}, headers=headers)


async def test_till_tokens_and_log_level_are_applied(
    reloadable: Agent, tmp_path: Path, config_path: Path
) -> None:
    agent = reloadable
    await agent.register()
    status, _ = await lookup(agent)
    assert status == 200
    write(config_path, till_tokens={"till-1": "secret"}, log_level="DEBUG")
    applied = apply_config_file(agent.app, config_path)
    assert applied == {"till_tokens", "log_level"}
    assert agent.app[CONFIG_KEY].log_level == "DEBUG"
    assert logging.getLogger().level == logging.DEBUG
    status, body = await lookup(agent)
    assert_error(status, body, "unauthorized", 401)
    status, body = await lookup(agent, Authorization="Bearer wrong")
    assert_error(status, body, "unauthorized", 401)
    status, body = await lookup(agent, Authorization="Bearer secret")
    assert status == 200, body
    # And back: tokens removed, no token needed.
    write(config_path)
    assert apply_config_file(agent.app, config_path) == {"till_tokens", "log_level"}
    status, body = await lookup(agent)
    assert status == 200, body


async def test_an_unchanged_file_applies_nothing(reloadable: Agent, config_path: Path) -> None:
    before = reloadable.app[CONFIG_KEY].model_dump()
    assert apply_config_file(reloadable.app, config_path) == set()
    assert reloadable.app[CONFIG_KEY].model_dump() == before


@pytest.mark.parametrize(
    "broken",
    [
        'log_level = "DEBUG"\ntill_tokens = {"till-1" = \n',  # not TOML
        'log_level = "DEBUG"\nlog_level = "INFO"\n',  # a key twice is not TOML either
        'log_level = "LOUD"\n',  # not a log level
        'till_tokens = "secret"\n',  # not a table
        'listen_port = "eighty"\n',  # not a number
        "sync_interval_s = 1\n",  # below its minimum
        "no_such_setting = 1\n",  # unknown
    ],
)
async def test_a_broken_edit_is_refused_and_the_agent_keeps_serving(
    reloadable: Agent,
    tmp_path: Path,
    config_path: Path,
    broken: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = reloadable
    await agent.register()
    before = agent.app[CONFIG_KEY].model_dump()
    # Top-level settings come before the [provider] table.
    write(config_path, broken)
    with caplog.at_level(logging.INFO, logger="agent.reload"):
        assert apply_config_file(agent.app, config_path) == set()
    assert agent.app[CONFIG_KEY].model_dump() == before
    assert any("refused" in record.getMessage() for record in caplog.records)
    status, body = await lookup(agent)
    assert status == 200, body


async def test_a_file_that_disappears_is_refused(reloadable: Agent, config_path: Path) -> None:
    before = reloadable.app[CONFIG_KEY].model_dump()
    config_path.unlink()  # noqa: ASYNC240 - a test of a vanished file
    assert apply_config_file(reloadable.app, config_path) == set()
    assert reloadable.app[CONFIG_KEY].model_dump() == before


async def test_a_new_listen_port_needs_a_restart(
    reloadable: Agent, tmp_path: Path, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = reloadable
    write(config_path, listen_port=9999)
    with caplog.at_level(logging.WARNING, logger="agent.reload"):
        assert apply_config_file(agent.app, config_path) == set()
    assert agent.app[CONFIG_KEY].listen_port == 8765
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "listen_port" in warning.getMessage()
    assert "restart" in warning.getMessage()
    status, _ = await agent.get("/pos/v1/status")
    assert status == 200


async def test_a_mixed_change_applies_the_safe_part(
    reloadable: Agent, tmp_path: Path, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = reloadable
    write(config_path, listen_port=9999, store_id="store-2", log_level="WARNING")
    with caplog.at_level(logging.WARNING, logger="agent.reload"):
        assert apply_config_file(agent.app, config_path) == {"log_level"}
    config = agent.app[CONFIG_KEY]
    assert (config.listen_port, config.store_id, config.log_level) == (8765, "store-1", "WARNING")
    warning = next(r for r in caplog.records if "restart" in r.getMessage())
    assert "listen_port" in warning.getMessage()
    assert "store_id" in warning.getMessage()
    _, body = await agent.get("/pos/v1/status")
    assert body["store_id"] == "store-1"


async def test_a_new_body_limit_is_applied(
    reloadable: Agent, tmp_path: Path, config_path: Path
) -> None:
    agent = reloadable
    body = {"phone": PHONE, "padding": "x" * 4000}
    status, answer = await agent.post("/pos/v1/cards/lookup", body)
    assert_error(status, answer, "validation_error", 422)  # read, then refused for "padding"
    write(config_path, request_body_bytes_max=2048)
    assert apply_config_file(agent.app, config_path) == {"request_body_bytes_max"}
    status, answer = await agent.post("/pos/v1/cards/lookup", body)
    assert_error(status, answer, "payload_too_large", 413)
    write(config_path, request_body_bytes_max=1024 * 1024)
    apply_config_file(agent.app, config_path)
    status, answer = await agent.post(
        "/pos/v1/cards/lookup", {"phone": PHONE, "padding": "x" * (512 * 1024)}
    )
    assert_error(status, answer, "validation_error", 422)


async def test_a_new_provider_file_is_used_for_the_next_code(
    reloadable: Agent, tmp_path: Path, config_path: Path
) -> None:
    agent = reloadable
    card = await agent.new_card()
    moved = tmp_path / "elsewhere" / "codes.jsonl"
    write(config_path, provider={"file_path": str(moved)})
    assert apply_config_file(agent.app, config_path) == {"provider"}
    status, body = await agent.ask_code(card)
    assert status == 201, body
    [message] = read_lines(moved)
    assert message["request_id"] == body["verification_id"]
    assert len(agent.messages()) == 1  # the old file has the registration's code only


async def test_the_watcher_applies_an_edit_by_itself(
    reloadable: Agent, tmp_path: Path, config_path: Path
) -> None:
    agent = reloadable
    await agent.register()
    # Give the watcher a moment to start watching before the edit.
    await asyncio.sleep(0.3)
    write(config_path, till_tokens={"till-1": "secret"})
    async with asyncio.timeout(WATCH_TIMEOUT_S):
        while True:
            status, _ = await lookup(agent)
            if status == 401:
                break
            await asyncio.sleep(0.1)
    status, body = await lookup(agent, Authorization="Bearer secret")
    assert status == 200, body


async def test_a_new_log_format_is_applied(reloadable: Agent, config_path: Path) -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        setup_logging("INFO", as_json=False)
        write(config_path, log_json=True)
        assert apply_config_file(reloadable.app, config_path) == {"log_json"}
        assert any(isinstance(handler.formatter, JsonFormatter) for handler in root.handlers)
    finally:
        root.handlers[:] = saved
        logging.getLogger("aiohttp.access").setLevel(logging.NOTSET)
        logging.getLogger("alembic").setLevel(logging.NOTSET)
