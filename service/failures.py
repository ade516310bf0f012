"""Exceptions as log and status text that is never empty.

``str(TimeoutError())`` is ``""``: a line such as ``central server unreachable: TimeoutError: ``
tells store IT nothing.  :func:`describe` always gives the exception's type and its text, or,
where the exception has none, what was expected (``no answer within 1.5 s``) or the text of its
cause.  A refused TLS certificate is named as such, with the reason the check gave.
"""

from __future__ import annotations

import ssl


def describe(exc: BaseException, *, timeout_s: float | None = None) -> str:
    """``Type: text`` for a log line or a status field; never empty, never ends with ``: ``.

    ``timeout_s`` is the limit the failed wait had, named when a timeout carries no text.
    """
    certificate = _certificate_error(exc)
    if certificate is not None:
        reason = getattr(certificate, "verify_message", None) or str(certificate)
        return f"TLS certificate refused: {reason} ({type(exc).__name__})"
    text = str(exc).strip()
    if not text and isinstance(exc, TimeoutError):
        text = f"no answer within {timeout_s:g} s" if timeout_s is not None else "no answer in time"
    if not text:
        cause = exc.__cause__ or exc.__context__
        text = describe(cause, timeout_s=timeout_s) if cause is not None else "no details given"
    return f"{type(exc).__name__}: {text}"


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed under ``exc`` (aiohttp's error is one too, and keeps
    the check's own as ``certificate_error``)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        nested = getattr(item, "certificate_error", None)
        if isinstance(item, ssl.SSLCertVerificationError) and nested is None:
            return item
        pending.extend(
            [
                nested if isinstance(nested, BaseException) else None,
                item.__cause__,
                item.__context__,
            ]
        )
    return None
