"""How the agent may reach the central server: plain HTTP only on this machine (or where a
setting says so), a CA file that exists, and ``check-config`` saying when a store will not sync.
Refused at load, so ``check-config`` and the service's start say it, not the first sync."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from agent.cli import main
from agent.config import load_config
from service.config import ConfigError


def _load(**env: str) -> object:
    return load_config(None, {f"BONUS_AGENT_{name.upper()}": value for name, value in env.items()})


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5:8780", "http://bonus.example.ru", "http://[2001:db8::1]:8780"],
)
def test_plain_http_to_another_machine_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"plain HTTP to another machine.*allow_plain_http"):
        _load(central_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8780",
        "http://127.0.0.2:8780",
        "http://localhost:8780/",
        "http://[::1]:8780",
        "https://bonus.example.ru",
        "https://10.0.0.5:8443",
    ],
)
def test_loopback_http_and_any_https_are_allowed(url: str) -> None:
    _load(central_url=url)


def test_allow_plain_http_lets_http_to_another_machine_through() -> None:
    _load(central_url="http://10.0.0.5:8780", allow_plain_http="true")


@pytest.mark.parametrize("url", ["ftp://bonus.example.ru", "bonus.example.ru", "https://"])
def test_an_address_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="must be an https://"):
        _load(central_url=url)


def test_a_ca_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"central_ca_file .*missing.pem does not exist"):
        _load(central_url="https://bonus.example.ru", central_ca_file=str(tmp_path / "missing.pem"))


def test_a_ca_file_without_certificates_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no usable CA certificate"):
        _load(central_ca_file=str(garbage))


def test_a_ca_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    _load(central_url="https://bonus.example.ru", central_ca_file=str(path))


def _check_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **env: str
) -> tuple[int, str, str]:
    for name in list(__import__("os").environ):
        if name.startswith("BONUS_AGENT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(f"BONUS_AGENT_{name.upper()}", value)
    code = main(["check-config"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_check_config_warns_that_a_store_without_a_token_does_not_sync(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _check_config(monkeypatch, capsys)
    assert code == 0
    assert '"central_token": ""' in out
    assert "warning: central_token is empty: this store does not sync at all" in err


def test_check_config_warns_about_an_empty_central_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _check_config(monkeypatch, capsys, central_url="", central_token="t0k")
    assert code == 0
    assert "warning: central_url is empty: this store does not sync at all" in err
    assert "central_token is empty" not in err


def test_check_config_is_quiet_when_the_store_can_sync(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _check_config(
        monkeypatch, capsys, central_url="https://bonus.example.ru", central_token="t0k"
    )
    assert (code, err) == (0, "")


def test_check_config_refuses_plain_http_to_another_machine(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _check_config(
        monkeypatch, capsys, central_url="http://10.0.0.5:8780", central_token="t0k"
    )
    assert code == 2
    assert out == ""
    assert "plain HTTP to another machine" in err
