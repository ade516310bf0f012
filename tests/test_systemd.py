"""The systemd units in systemd/: their hardening, `systemd-analyze verify` and `security`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD_DIR = ROOT / "systemd"
UNITS = ["bonus-agent.service", "bonus-central.service"]
EXPOSURE_MAX = 3.0
ANALYZE_TIMEOUT_S = 60

#: Directives every unit must set, with their values, in [Service].
REQUIRED_SERVICE = {
    "Type": "notify",
    "NotifyAccess": "main",
    "WatchdogSec": "30",
    "Restart": "always",
    "RestartSec": "2",
    "TimeoutStopSec": "20",
    "KillSignal": "SIGTERM",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "StateDirectoryMode": "0750",
    "UMask": "0027",
}


def directives(text: str) -> dict[str, dict[str, list[str]]]:
    """Every value of every key, by section; systemd allows a key to repeat."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a directive outside any section: {line!r}"
        assert not line.endswith("\\"), "continuation lines are not used in these units"
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service_name(unit: str) -> str:
    return unit.removesuffix(".service")


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (it comes with the systemd package)")
    return path


@pytest.fixture(params=UNITS)
def unit(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def runnable_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists on this machine.

    `systemd-analyze verify` fails when ExecStart's program is missing, and the real one
    (/opt/pharmacy-bonus/.venv/bin/...) exists only on an installed host. The copy runs this
    test's Python with the same arguments instead; nothing else changes, and the file keeps its
    name because systemd takes the unit's name from it.
    """
    assert not re.search(r"\s", sys.executable), "ExecStart would need quoting"
    original = (SYSTEMD_DIR / unit).read_text(encoding="utf-8")
    pattern = re.compile(r"^ExecStart=/opt/pharmacy-bonus/\.venv/bin/\S+", re.MULTILINE)
    copied, count = pattern.subn(f"ExecStart={sys.executable}", original)
    assert count == 1, "expected exactly one ExecStart= of the installed virtualenv"
    path = tmp_path / unit
    path.write_text(copied, encoding="utf-8")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=ANALYZE_TIMEOUT_S,
        check=False,
        env={"PATH": "/usr/bin:/bin", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""},
    )


def test_hardening_directives(unit: str) -> None:
    sections = directives((SYSTEMD_DIR / unit).read_text(encoding="utf-8"))
    service = sections["Service"]
    name = service_name(unit)

    for key, value in REQUIRED_SERVICE.items():
        assert service.get(key) == [value], (
            f"{unit}: {key}={value} expected, got {service.get(key)}"
        )
    assert "@system-service" in service["SystemCallFilter"]
    # A stable, dedicated owner of the state directory; DynamicUser= would change it.
    assert service["User"] == [name]
    assert service["Group"] == [name]
    assert "DynamicUser" not in service
    assert service["StateDirectory"] == [name]
    # StateDirectory= is the one writable path; nothing else is opened up.
    assert "ReadWritePaths" not in service
    assert int(service["LimitNOFILE"][0]) >= 1024
    assert "network-online.target" in sections["Unit"]["After"][0].split()
    assert sections["Unit"]["Wants"] == ["network-online.target"]
    assert sections["Install"]["WantedBy"] == ["multi-user.target"]


def test_exec_start_runs_the_installed_entry_point(unit: str) -> None:
    name = service_name(unit)
    service = directives((SYSTEMD_DIR / unit).read_text(encoding="utf-8"))["Service"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert name in scripts, f"{name} is not a console script of the package"
    short = name.removeprefix("bonus-")
    assert service["ExecStart"] == [
        f"/opt/pharmacy-bonus/.venv/bin/{name} serve --config /etc/pharmacy-bonus/{short}.toml"
    ]


def test_central_waits_for_local_postgresql() -> None:
    unit = directives((SYSTEMD_DIR / "bonus-central.service").read_text(encoding="utf-8"))["Unit"]
    assert "postgresql.service" in unit["After"][0].split()
    # Ordering only: the database may be on another host.
    assert unit["Wants"] == ["network-online.target"]
    assert "Requires" not in unit


def test_agent_data_dir_is_the_state_directory() -> None:
    service = directives((SYSTEMD_DIR / "bonus-agent.service").read_text(encoding="utf-8"))[
        "Service"
    ]
    assert "BONUS_AGENT_DATA_DIR=/var/lib/bonus-agent" in service["Environment"]


def test_verify(systemd_analyze: str, runnable_copy: Path) -> None:
    result = run(systemd_analyze, "verify", str(runnable_copy))
    output = result.stdout + result.stderr
    # verify also loads the units ours depend on and may complain about the host's own units;
    # only lines naming our file or unit count. Unknown directives and bad values are reported
    # as warnings with a zero exit status, so the output is checked, not just the status.
    ours = [line for line in output.splitlines() if runnable_copy.name in line]
    assert ours == [], output
    assert result.returncode == 0, output


def test_security_exposure(systemd_analyze: str, runnable_copy: Path) -> None:
    help_text = run(systemd_analyze, "security", "--help").stdout
    if "--offline" not in help_text:
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 250)")
    result = run(systemd_analyze, "security", "--offline=yes", "--no-pager", str(runnable_copy))
    output = result.stdout + result.stderr
    match = re.search(
        rf"Overall exposure level for {re.escape(runnable_copy.name)}: (\d+(?:\.\d+)?)", output
    )
    assert match is not None, output
    exposure = float(match.group(1))
    print(f"{runnable_copy.name}: exposure {exposure}")
    assert exposure <= EXPOSURE_MAX, output


def test_readme_covers_each_unit() -> None:
    readme = (SYSTEMD_DIR / "README.md").read_text(encoding="utf-8")
    assert "systemctl daemon-reload" in readme
    for unit in UNITS:
        name = service_name(unit)
        creates_user = re.compile(rf"useradd --system .*?(?:\\\n.*?)*\b{name}$", re.MULTILINE)
        assert creates_user.search(readme), f"README.md does not create the user {name}"
        for command in (
            f"systemctl enable --now {unit}",
            f"systemctl status {unit}",
            f"journalctl -u {unit}",
            f"/var/lib/{name}",
            f"/etc/pharmacy-bonus/{name.removeprefix('bonus-')}.toml",
        ):
            assert command in readme, f"README.md does not mention `{command}`"


def test_the_agent_gets_the_phone_key_as_a_credential_from_outside_its_state() -> None:
    from agent.config import AgentConfig
    from service.phonekey import CREDENTIAL_NAME, NOT_INSTALLED

    service = directives((SYSTEMD_DIR / "bonus-agent.service").read_text(encoding="utf-8"))[
        "Service"
    ]
    default_file = str(AgentConfig().phone_key_file)
    assert service["LoadCredential"] == [f"{CREDENTIAL_NAME}:{default_file}"]
    # Without the file the service still starts (a placeholder the agent knows), by card number.
    assert service["SetCredential"] == [f"{CREDENTIAL_NAME}:{NOT_INSTALLED.decode()}"]
    # Never in the state directory, which is backed up with the database.
    assert not default_file.startswith("/var/lib/")
