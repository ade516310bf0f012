"""How the agent checks the central server's certificate.

An ``https://`` central_url is verified against ``central_ca_file`` when one is configured (a
chain's own CA), otherwise against the system's trust store; the host name must match, and
nothing older than TLS 1.2 is spoken.  The context is used for the central server's requests
only: the SMS gateways keep the system's trust store whatever the chain's CA is.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class CaFileError(ValueError):
    """A CA file that cannot be used to check the central server."""


def central_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The client context for the central server: ``ca_file`` (PEM) or the system's trust
    store, host names checked, TLS 1.2 at least; ``CaFileError`` for an unusable file."""
    if ca_file is not None and not ca_file.is_file():
        raise CaFileError(
            f"central_ca_file {ca_file} does not exist (or is not a file): the central "
            "server's certificate could not be checked"
        )
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if ca_file is None else str(ca_file)
        )
    except (OSError, ssl.SSLError) as exc:
        raise CaFileError(
            f"central_ca_file {ca_file} holds no usable CA certificate: {exc}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
