"""The release of this installation, as the package metadata gives it (pyproject.toml)."""

from __future__ import annotations

import importlib.metadata

PACKAGE = "pharmacy-bonus"


def package_version() -> str:
    """The installed release, e.g. ``0.2.0`` (``0+unknown`` when run from a bare checkout)."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
