"""Configuration hot reload: watch the file, apply what is safe, refuse the rest with a reason.

A broken edit (bad TOML, an invalid value) is logged and ignored: the store keeps running on the
configuration it has.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web
from watchfiles import awatch

from agent.config import config_diff, load_config
from agent.http import CONFIG_KEY, SESSION_KEY
from agent.providers import make_provider
from agent.routes import CTX_KEY, VERIFY_KEY
from service.config import ConfigError
from service.logs import setup_logging

log = logging.getLogger(__name__)


def apply_config_file(app: web.Application, path: Path) -> set[str]:
    """Re-read the file and apply what may change at run time; returns the settings applied."""
    old = app[CONFIG_KEY]
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("configuration change refused, keeping the running one: %s", exc)
        return set()
    applied, needs_restart = config_diff(old, new)
    if needs_restart:
        log.warning(
            "configuration change of %s needs a restart; not applied",
            ", ".join(sorted(needs_restart)),
        )
    if not applied:
        return set()
    merged = old.model_copy(update={name: getattr(new, name) for name in applied})
    # The config object is shared by the middlewares, the context and the loops: update in place.
    for name in applied:
        object.__setattr__(old, name, getattr(merged, name))
    if "log_json" in applied:
        setup_logging(old.log_level, as_json=old.log_json)
    elif "log_level" in applied:
        logging.getLogger().setLevel(old.log_level)
    if "provider" in applied and VERIFY_KEY in app:
        app[VERIFY_KEY].provider = make_provider(old.provider, app[SESSION_KEY])
    log.info("configuration applied at run time: %s", ", ".join(sorted(applied)))
    assert app[CTX_KEY].config is old
    return applied


async def watch_config(app: web.Application, path: Path) -> None:
    """Apply changes of the configuration file as they happen."""
    async for _changes in awatch(path, debounce=500, recursive=False):
        apply_config_file(app, path)
