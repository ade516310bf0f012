"""The central server's HTTPS settings: TLS 1.2 at least, and files that cannot serve are
refused before it starts."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from central.config import CentralConfig, load_config
from central.tls import server_ssl_context
from service.config import ConfigError


def _files(tmp_path: Path) -> tuple[Path, Path]:
    cert = trustme.CA().issue_cert("bonus.example.ru")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    return chain, key


def test_tls_context_refuses_anything_older_than_tls_1_2(tmp_path: Path) -> None:
    chain, key = _files(tmp_path)
    context = server_ssl_context(CentralConfig(tls_cert_file=chain, tls_key_file=key))
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_tls_without_files_is_plain_http() -> None:
    assert server_ssl_context(CentralConfig()) is None


def test_tls_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    chain, _ = _files(tmp_path)
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file go together"):
        load_config(None, {"BONUS_CENTRAL_TLS_CERT_FILE": str(chain)})


def test_tls_a_missing_file_is_refused_at_load(tmp_path: Path) -> None:
    chain, _ = _files(tmp_path)
    env = {
        "BONUS_CENTRAL_TLS_CERT_FILE": str(chain),
        "BONUS_CENTRAL_TLS_KEY_FILE": str(tmp_path / "nope.pem"),
    }
    with pytest.raises(ConfigError, match=r"tls_key_file .*nope.pem does not exist"):
        load_config(None, env)


def test_tls_a_key_of_another_certificate_is_refused_before_serving(tmp_path: Path) -> None:
    chain, _ = _files(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = _files(tmp_path / "other")
    config = CentralConfig(tls_cert_file=chain, tls_key_file=other_key)
    with pytest.raises(ConfigError, match="cannot serve HTTPS"):
        server_ssl_context(config)
