"""The central server's configuration: a TOML file plus ``BONUS_CENTRAL_*`` environment overrides."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.phones import (
    PHONE_HASH_MEMORY_KIB_MAX,
    PHONE_HASH_MEMORY_KIB_MIN,
    PHONE_HASH_TIME_COST_MAX,
    PRODUCTION_PHONE_HASH,
    PhoneHashParams,
)

ENV_PREFIX = "BONUS_CENTRAL_"


class ConfigError(ValueError):
    """A configuration that cannot be used."""


class CentralConfig(BaseModel):
    """Everything the central server needs to run."""

    model_config = ConfigDict(extra="forbid")

    database_url: str = Field(
        "sqlite+aiosqlite:///var/central/central.sqlite3",
        description="SQLAlchemy URL: sqlite+aiosqlite:///PATH (default) or postgresql+asyncpg://…",
    )
    listen_host: str = Field("127.0.0.1", description="Address the server listens on.")
    listen_port: int = Field(8780, ge=1, le=65535, description="Port of the server.")
    expiry_hour: int = Field(
        1, ge=0, le=23, description="Hour of the day (program time zone) when the expiry job runs."
    )
    request_body_bytes_max: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_json: bool = Field(False, description="Write logs as JSON lines.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Server processes sharing the port (PostgreSQL only; about one per core: one "
            "process applies uploads on one core)."
        ),
    )
    authorization_hold_s: int = Field(
        120,
        ge=10,
        le=3600,
        description="How long an online redemption authorisation sets points aside.",
    )

    phone_hash_memory_kib: int = Field(
        PRODUCTION_PHONE_HASH.memory_kib,
        ge=PHONE_HASH_MEMORY_KIB_MIN,
        le=PHONE_HASH_MEMORY_KIB_MAX,
        description=(
            "Memory (KiB) of one phone hash (argon2id); travels to stores in the phone key "
            "file. Changing it is a key change (docs/security.md)."
        ),
    )
    phone_hash_time_cost: int = Field(
        PRODUCTION_PHONE_HASH.time_cost,
        ge=1,
        le=PHONE_HASH_TIME_COST_MAX,
        description="Passes over that memory of one phone hash; a key change too.",
    )
    phone_hash_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="Phone hashes computed at once (registrations in uploads, phones rehash).",
    )

    @property
    def phone_hash_params(self) -> PhoneHashParams:
        """The cost of the phone hashes this server makes."""
        return PhoneHashParams(self.phone_hash_memory_kib, self.phone_hash_time_cost)

    @model_validator(mode="after")
    def _workers_need_postgresql(self) -> CentralConfig:
        if self.workers > 1 and not self.database_url.startswith("postgresql"):
            raise ValueError("workers > 1 needs PostgreSQL (SQLite has one writer)")
        return self


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> CentralConfig:
    """Read the TOML file (if any) and apply environment overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"configuration file {path}: {exc}") from exc
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "CONFIG":
            data[name[len(ENV_PREFIX) :].lower()] = value
    try:
        return CentralConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
