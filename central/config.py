"""The central server's configuration: a TOML file plus ``BONUS_CENTRAL_*`` environment overrides."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from service.config import load_settings
from shared.phones import (
    PHONE_HASH_MEMORY_KIB_MAX,
    PHONE_HASH_MEMORY_KIB_MIN,
    PHONE_HASH_TIME_COST_MAX,
    PRODUCTION_PHONE_HASH,
    PhoneHashParams,
)

ENV_PREFIX = "BONUS_CENTRAL_"


class CentralConfig(BaseModel):
    """Everything the central server needs to run."""

    model_config = ConfigDict(extra="forbid")

    database_url: str = Field(
        "sqlite+aiosqlite:///var/central/central.sqlite3",
        description="SQLAlchemy URL: sqlite+aiosqlite:///PATH (default) or postgresql+asyncpg://…",
    )
    listen_host: str = Field("127.0.0.1", description="Address the server listens on.")
    listen_port: int = Field(8780, ge=1, le=65535, description="Port of the server.")
    tls_cert_file: Path | None = Field(
        None,
        description=(
            "Certificate chain (PEM) to serve HTTPS with, the server's certificate first; "
            "none = plain HTTP (behind a TLS-terminating proxy, or on loopback)."
        ),
    )
    tls_key_file: Path | None = Field(
        None, description="The private key (PEM) of tls_cert_file; both or neither."
    )
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

    metrics_token: SecretStr = Field(
        SecretStr(""),
        description=(
            "Bearer token that lets a client read GET /metrics from anywhere; empty = only "
            "clients on this machine (metrics_loopback)."
        ),
    )
    metrics_loopback: bool = Field(
        True,
        description=(
            "Clients on this machine (a loopback peer, no X-Forwarded-For) may read GET "
            "/metrics without the token."
        ),
    )

    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For names the client; "
            "anybody else's is ignored."
        ),
    )
    password_hashing_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="Password hashes computed at once per process (argon2, 64 MiB each); 0 = CPUs/2.",
    )
    password_hashing_queue_max: int = Field(
        8,
        ge=0,
        le=1000,
        description="Logins that may wait for a hashing thread; more are refused with login_busy.",
    )
    password_hashing_wait_s: float = Field(
        2.0, gt=0, le=30, description="Longest wait of a login for a hashing thread."
    )
    password_hashing_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness added to the hashing threads, so that store sync gets the CPU first.",
    )
    login_address_failures_free: int = Field(
        10,
        ge=1,
        le=1000,
        description="Failed logins from one client address before each further one is delayed.",
    )
    login_address_delay_max_s: int = Field(
        900, ge=1, le=86400, description="Longest delay imposed on one client address."
    )
    login_account_failures_free: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failed logins with one login name before each further one is delayed.",
    )
    login_account_delay_max_s: int = Field(
        300,
        ge=1,
        le=86400,
        description="Longest delay imposed on one login name (an address it logged in from skips it).",
    )
    login_failures_forget_s: int = Field(
        3600,
        ge=60,
        le=30 * 86400,
        description="Seconds after its last failure that a login name's or address's count resets.",
    )
    login_refusal_pause_s: float = Field(
        0.5,
        ge=0,
        le=5,
        description="Pause before a login refused as limited or busy is answered (slows a flood).",
    )
    login_refusal_pauses_max: int = Field(
        256,
        ge=0,
        le=100_000,
        description="Refused logins pausing at once per process; more are answered at once.",
    )
    login_known_address_days: int = Field(
        90,
        ge=1,
        le=3650,
        description="Days an address a login succeeded from stays known to that login.",
    )
    audit_refusals_window_s: int = Field(
        3600,
        ge=60,
        le=86400,
        description="Refused anonymous office requests are counted per source in windows this long.",
    )
    audit_refusals_rows_per_window_max: int = Field(
        500,
        ge=10,
        le=100_000,
        description="Sources counted apart in one window; the rest are counted together.",
    )
    audit_refusals_keep_days: int = Field(
        90, ge=1, le=3650, description="Days the counts of refused anonymous requests are kept."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item.strip(), strict=False)
        return [item.strip() for item in value]

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # The environment gives one string: BONUS_CENTRAL_TRUSTED_PROXIES="10.0.0.1,10.1.0.0/16".
        if isinstance(value, str):
            return [item for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> CentralConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        for name in ("tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path} does not exist (or is not a file)")
        return self

    @model_validator(mode="after")
    def _workers_need_postgresql(self) -> CentralConfig:
        if self.workers > 1 and not self.database_url.startswith("postgresql"):
            raise ValueError("workers > 1 needs PostgreSQL (SQLite has one writer)")
        return self


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> CentralConfig:
    """Read the TOML file (if any) and apply environment overrides; refuse anything invalid
    (``service/config.py`` holds the one rule of both services)."""
    return load_settings(
        CentralConfig, path, os.environ if environ is None else environ, ENV_PREFIX
    )
