"""Configuration loading for both services: a TOML file, then environment overrides, validated
by the service's settings model; one error type and one rule for the environment.

The rule: ``{PREFIX}NAME`` sets ``name`` (``{PREFIX}PROVIDER__LOGIN`` sets ``provider.login``);
a setting whose type is text (a string, a secret, a path) takes the value as written, any other
reads it as JSON (``8765``, ``true``, ``["127.0.0.1"]``, ``{"till-1": "…"}``) and, when it is
not JSON, as written (the model then says what is wrong with it).
"""

from __future__ import annotations

import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

SettingsT = TypeVar("SettingsT", bound=BaseModel)

_TEXT_TYPES = (str, SecretStr, Path)


class ConfigError(ValueError):
    """The configuration cannot be used; the message says why."""


def _is_text(annotation: Any) -> bool:
    """Whether a field of this type takes an environment value as written."""
    if annotation in _TEXT_TYPES:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return bool(kinds) and all(_is_text(arg) for arg in kinds)
    if origin is typing.Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(annotation))
    return False


def _field_type(model: type[BaseModel], path: list[str]) -> Any:
    """The annotation of the setting at ``path`` (None when there is no such setting)."""
    current: Any = model
    for part in path:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = field.annotation
    return current


def env_overrides(
    model: type[BaseModel], environ: Mapping[str, str], prefix: str
) -> dict[str, Any]:
    """The settings the environment gives, nested as in the TOML file."""
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(prefix) or name == prefix + "CONFIG":
            continue
        path = name[len(prefix) :].lower().split("__")
        target = overrides
        for part in path[:-1]:
            target = target.setdefault(part, {})
        value: Any = raw
        if not _is_text(_field_type(model, path)):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        target[path[-1]] = value
    return overrides


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    model: type[SettingsT], path: Path | None, environ: Mapping[str, str], prefix: str
) -> SettingsT:
    """Read the TOML file (if any), apply the environment's overrides, validate; anything
    unusable is a ``ConfigError`` naming the file or the setting."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {path} does not exist") from exc
        except OSError as exc:
            raise ConfigError(f"configuration file {path} cannot be read: {exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
    data = _merge(data, env_overrides(model, environ, prefix))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
