"""The agent's configuration: a TOML file plus ``BONUS_AGENT_*`` environment overrides.

Every setting has a default and a one-line description; ``docs/agent-config.md`` is checked
against this model.  Nested settings are overridden with a double underscore, for example
``BONUS_AGENT_PROVIDER__KIND=file``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from agent.tls import central_ssl_context
from service.config import load_settings

ENV_PREFIX = "BONUS_AGENT_"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ProviderConfig(BaseModel):
    """Which gateway sends confirmation codes, and its credentials."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["file", "stream_telecom", "smsprofi_call", "smsprofi_sms"] = Field(
        "file",
        description="file (demo, tests), stream_telecom (SMS) or smsprofi_call (flash call).",
    )
    file_path: Path = Field(
        Path("var/messages.jsonl"),
        description="Where the file provider appends one JSON line per message.",
    )
    stream_telecom_url: str = Field(
        "https://gateway.api.sc/get/", description="Stream Telecom HTTPS GET gateway address."
    )
    stream_telecom_login: str = Field("", description="Stream Telecom login (user).")
    stream_telecom_password: SecretStr = Field(
        SecretStr(""), description="Stream Telecom password (pwd)."
    )
    stream_telecom_sender: str = Field(
        "", description="Sender name registered with the operator (sadr)."
    )
    smsprofi_url: str = Field(
        "https://lcab.smsprofi.ru/json/v1.0", description="SMS-profi JSON API base address."
    )
    smsprofi_token: SecretStr = Field(
        SecretStr(""), description="SMS-profi API token (X-Token header)."
    )
    smsprofi_sender: str = Field("", description="SMS-profi sender name for SMS messages.")
    sms_timeout_s: float = Field(10.0, gt=0, le=60, description="Timeout of one SMS gateway call.")
    call_timeout_s: float = Field(
        40.0,
        gt=0,
        le=120,
        description="Timeout of one flash-call request (answers after the call is placed).",
    )
    code_text: str = Field(
        "Код подтверждения: {code}", description="SMS text; {code} is replaced by the code."
    )


class AgentConfig(BaseModel):
    """Everything a store agent needs to run."""

    model_config = ConfigDict(extra="forbid")

    store_id: str = Field(
        "store-1", min_length=1, max_length=64, description="This store's id at the central server."
    )
    listen_host: str = Field(
        "127.0.0.1", description="Address the till API listens on (loopback by default)."
    )
    listen_port: int = Field(8765, ge=1, le=65535, description="Port of the till API.")
    data_dir: Path = Field(
        Path("var/agent"), description="Directory of the local journal database."
    )
    phone_key_file: Path = Field(
        Path("/etc/pharmacy-bonus/phone-key"),
        description=(
            "The chain's phone key file (bonus-central phone-key export); the systemd "
            "credential phone-key takes its place when the unit passes one."
        ),
    )
    till_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Per-till bearer tokens by register id; empty = no token required.",
    )
    central_url: str = Field(
        "http://127.0.0.1:8780", description="Base address of the central bonus server."
    )
    central_token: SecretStr = Field(
        SecretStr(""), description="This store's secret token at the central server."
    )
    central_ca_file: Path | None = Field(
        None,
        description=(
            "CA certificates (PEM) the central server's certificate must chain to; "
            "none = the system's trust store."
        ),
    )
    allow_plain_http: bool = Field(
        False,
        description="Allow an http:// central_url to a non-loopback address (token and phones in clear).",
    )
    central_timeout_s: float = Field(10.0, gt=0, le=120, description="Timeout of one sync request.")
    online_authorization_timeout_s: float = Field(
        1.5,
        gt=0,
        le=10,
        description="How long a redemption waits for central authorisation before falling back.",
    )
    sync_interval_s: float = Field(
        600.0, ge=5, le=3600, description="Time between full sync rounds (at most hourly)."
    )
    sync_jitter_s: float = Field(
        60.0, ge=0, le=600, description="Random extra delay before each scheduled round."
    )
    sync_backoff_max_s: float = Field(
        300.0, ge=1, le=3600, description="Cap of the retry backoff after failed rounds."
    )
    sync_quick_round_timeout_s: float = Field(
        3.0, gt=0, le=30, description="Time a quick round before a staleness refusal may take."
    )
    sync_batch_ops_max: int = Field(
        500, ge=1, le=10000, description="Most operations in one upload batch."
    )
    request_body_bytes_max: int = Field(
        256 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest till request body accepted."
    )
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        le=120,
        description="Longest time one till request may take before it is answered with an error.",
    )
    metrics_token: SecretStr = Field(
        SecretStr(""),
        description=(
            "Bearer token GET /metrics asks of clients elsewhere than this machine; "
            "empty = anybody who reaches the listener may read the metrics."
        ),
    )
    log_level: LogLevel = Field("INFO", description="Log level.")
    log_json: bool = Field(
        False, description="Write logs as JSON lines (for the journal) instead of text."
    )
    provider: ProviderConfig = Field(
        default_factory=ProviderConfig, description="Message provider for codes."
    )

    @property
    def db_path(self) -> Path:
        """The local journal database file."""
        return self.data_dir / "agent.sqlite3"

    @model_validator(mode="after")
    def _central_link(self) -> AgentConfig:
        problem = central_url_problem(self.central_url, allow_plain_http=self.allow_plain_http)
        if problem is not None:
            raise ValueError(problem)
        if self.central_ca_file is not None:
            central_ssl_context(self.central_ca_file)  # CaFileError (a ValueError) when unusable
        return self

    def sync_warnings(self) -> list[str]:
        """What keeps this configuration from syncing at all (it still serves tills)."""
        warnings = []
        if not self.central_token.get_secret_value():
            warnings.append(
                "central_token is empty: this store does not sync at all (no uploads, no card "
                "states from other stores; redemption is refused as stale)"
            )
        if not self.central_url.strip():
            warnings.append("central_url is empty: this store does not sync at all")
        return warnings


#: Host names that always mean this machine.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 without brackets) is this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def central_url_problem(url: str, *, allow_plain_http: bool) -> str | None:
    """Why ``url`` cannot be the central server's address; None when it can (or is empty: no
    sync, which ``sync_warnings`` reports).

    Plain HTTP carries the store's token and the registrations' phones in clear, so it is
    refused beyond this machine unless ``allow_plain_http`` says otherwise.
    """
    if not url.strip():
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"central_url {url!r} must be an https:// (or http://) address with a host"
    if parts.scheme == "http" and not allow_plain_http and not is_loopback(parts.hostname):
        return (
            f"central_url {url!r} is plain HTTP to another machine: the store's token and "
            "customers' phones would travel in clear. Use https:// (see docs/central.md, "
            '"TLS"), or set allow_plain_http = true for a link that is protected otherwise'
        )
    return None


#: Settings applied at run time when the file changes; every other change needs a restart.
HOT_RELOADABLE = frozenset(
    {
        "till_tokens",
        "provider",
        "log_level",
        "log_json",
        "central_timeout_s",
        "online_authorization_timeout_s",
        "sync_interval_s",
        "sync_jitter_s",
        "sync_backoff_max_s",
        "sync_quick_round_timeout_s",
        "sync_batch_ops_max",
        "request_body_bytes_max",
        "request_timeout_s",
        "central_token",
        "metrics_token",
    }
)


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read the TOML file (if any) and apply environment overrides; refuse anything invalid
    (``service/config.py`` holds the one rule of both services)."""
    return load_settings(AgentConfig, path, os.environ if environ is None else environ, ENV_PREFIX)


def config_diff(old: AgentConfig, new: AgentConfig) -> tuple[set[str], set[str]]:
    """The changed settings split into (applied at run time, needing a restart)."""
    changed = {
        name for name in AgentConfig.model_fields if getattr(old, name) != getattr(new, name)
    }
    return changed & HOT_RELOADABLE, changed - HOT_RELOADABLE
