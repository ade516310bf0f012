"""The docs are tested: every program setting is documented, with its real default."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from central.config import CentralConfig
from shared.settings import ProgramSettings

DOCS = Path(__file__).resolve().parent.parent / "docs"
SETTINGS_DOC = DOCS / "settings.md"
#: A row of the settings table: | `name` | `default` ... | allowed | description |
SETTING_ROW = re.compile(r"^\|\s*`(?P<name>[a-z0-9_]+)`\s*\|\s*`(?P<default>[^`]*)`")


def documented_settings() -> dict[str, str]:
    """The settings table of docs/settings.md: name → the default as written (JSON)."""
    rows = {}
    for line in SETTINGS_DOC.read_text(encoding="utf-8").splitlines():
        match = SETTING_ROW.match(line)
        if match:
            rows[match["name"]] = match["default"]
    return rows


@pytest.mark.parametrize("name", list(ProgramSettings.model_fields))
def test_docs_every_setting_is_in_settings_md(name: str) -> None:
    assert name in SETTINGS_DOC.read_text(encoding="utf-8")
    assert name in documented_settings(), f"{name} has no row in docs/settings.md's table"


def test_docs_settings_md_documents_no_unknown_setting() -> None:
    unknown = set(documented_settings()) - set(ProgramSettings.model_fields)
    assert not unknown


@pytest.mark.parametrize("name", list(ProgramSettings.model_fields))
def test_docs_settings_md_shows_the_real_default(name: str) -> None:
    written = documented_settings().get(name)
    if written is None:
        pytest.fail(f"{name} has no row in docs/settings.md's table")
    documented = ProgramSettings.model_validate({name: json.loads(written)})
    assert getattr(documented, name) == getattr(ProgramSettings(), name)


def test_docs_domain_rules_name_functions_that_exist() -> None:
    modules = [
        importlib.import_module(f"shared.{name}")
        for name in ("money", "phones", "cards", "receipts", "lots", "returns", "errors")
    ]
    named = 0
    for line in (DOCS / "domain-rules.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3:
            continue
        for dotted in re.findall(r"`([A-Za-z_][\w.]*)`", cells[1]):
            head, *rest = dotted.split(".")
            owner = next((m for m in modules if hasattr(m, head)), None)
            assert owner is not None, f"domain-rules.md names {dotted}, which shared/ lacks"
            target = getattr(owner, head)
            for attr in rest:
                assert hasattr(target, attr), f"domain-rules.md names {dotted}"
                target = getattr(target, attr)
            named += 1
    assert named > 20


CENTRAL_DOC = DOCS / "central.md"
#: A row of the central server's configuration table: | `name` | `default` … | meaning |
CENTRAL_ROW = re.compile(
    r"^\|\s*`(?P<name>[a-z0-9_]+)`\s*\|\s*`(?P<default>[^`]*)`[^|]*\|(?P<meaning>[^|]+)\|"
)


def documented_central_config() -> dict[str, re.Match[str]]:
    rows = {}
    for line in CENTRAL_DOC.read_text(encoding="utf-8").splitlines():
        match = CENTRAL_ROW.match(line)
        if match:
            assert match["name"] not in rows, f"{match['name']} is documented twice"
            rows[match["name"]] = match
    return rows


@pytest.mark.parametrize("name", list(CentralConfig.model_fields))
def test_docs_every_central_setting_is_in_central_md_with_its_default(name: str) -> None:
    row = documented_central_config().get(name)
    assert row is not None, f"{name} has no row in docs/central.md's configuration table"
    text = row["default"]
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text  # a bare string: a URL, an address, a log level
    documented = CentralConfig.model_validate({name: value})
    assert getattr(documented, name) == getattr(CentralConfig(), name)
    assert row["meaning"].strip()


def test_docs_central_md_documents_no_unknown_setting() -> None:
    assert set(documented_central_config()) - set(CentralConfig.model_fields) == set()
