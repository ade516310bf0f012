"""HTTPS served by the central server itself: ``tls_cert_file`` and ``tls_key_file``.

TLS 1.2 at least, the ciphers of Python's defaults for a server.  Each worker process
(``central.workers``) builds its own context from the configuration: a context cannot be
handed to a spawned process.
"""

from __future__ import annotations

import ssl

from central.config import CentralConfig
from service.config import ConfigError


def server_ssl_context(config: CentralConfig) -> ssl.SSLContext | None:
    """The server's context, or None for plain HTTP; ``ConfigError`` for unusable files."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot serve HTTPS with tls_cert_file {config.tls_cert_file} and tls_key_file "
            f"{config.tls_key_file}: {exc}"
        ) from None
    return context


def scheme(config: CentralConfig) -> str:
    """``https`` when the server serves TLS itself, else ``http``."""
    return "https" if config.tls_cert_file is not None else "http"
