"""Failure texts for logs and the status are never empty."""

from __future__ import annotations

import ssl

import pytest

from service.failures import describe


def test_a_timeout_without_text_says_what_was_expected() -> None:
    assert describe(TimeoutError(), timeout_s=1.5) == "TimeoutError: no answer within 1.5 s"
    assert describe(TimeoutError()) == "TimeoutError: no answer in time"


def test_type_and_text() -> None:
    assert describe(ConnectionResetError(104, "Connection reset by peer")) == (
        "ConnectionResetError: [Errno 104] Connection reset by peer"
    )


def test_an_empty_exception_takes_its_causes_text() -> None:
    error = RuntimeError()
    error.__cause__ = ValueError("bad answer")
    assert describe(error) == "RuntimeError: ValueError: bad answer"


def test_an_empty_exception_without_cause_still_says_something() -> None:
    assert describe(RuntimeError()) == "RuntimeError: no details given"


@pytest.mark.parametrize(
    "error", [TimeoutError(), OSError(), RuntimeError(""), ValueError("  "), KeyError()]
)
def test_never_empty_never_ending_with_a_colon(error: BaseException) -> None:
    text = describe(error, timeout_s=3)
    assert text.strip()
    assert not text.rstrip().endswith(":")


def test_a_refused_certificate_names_the_check() -> None:
    error = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    )
    error.verify_message = "unable to get local issuer certificate"
    wrapper = OSError("Cannot connect to host bonus.example.ru:443 ssl:True")
    wrapper.__cause__ = error
    assert describe(wrapper) == (
        "TLS certificate refused: unable to get local issuer certificate (OSError)"
    )
