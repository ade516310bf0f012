"""Message providers: the gateways that deliver confirmation codes to customers.

Each provider turns one ``send_code`` call into one gateway request and maps every failure to a
:class:`ProviderError` with a coarse ``reason`` the till can show.  The gateways' protocols are
described in ``docs/providers.md``; their parameters are kept in this module only.

Secrets (the Stream Telecom password, the SMS-profi token) and the codes themselves never reach a
log line or an exception: failure details are built from the gateway's answer with every secret
masked, and third-party exceptions are not chained because their text may carry the request URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, quote_plus

import aiohttp
import yarl

from agent.config import ProviderConfig
from service.logs import mask_phones

logger = logging.getLogger(__name__)

Channel = Literal["sms", "call"]
ErrorReason = Literal["unavailable", "no_balance", "rejected"]

#: Longest part of a gateway's answer kept in a failure detail.
DETAIL_CHARS_MAX = 200
#: Largest gateway answer read; anything longer is cut (the answers we expect are tiny).
ANSWER_BYTES_MAX = 64 * 1024
#: What a Stream Telecom message id looks like: one token without spaces, with a digit in it
#: (so that a one-word answer such as ``ERROR`` or ``Unauthorized`` is not taken for an id).
_MESSAGE_ID = re.compile(r"(?=[^0-9]*[0-9])[A-Za-z0-9_.:-]{1,128}")
#: The flash call's code: the last four digits of the calling number.
_CALL_CODE = re.compile(r"[0-9]{4}")
#: Words with which gateways report an empty or insufficient balance (Russian and English).
_NO_BALANCE = re.compile(
    r"баланс|средств|недостаточно|balance|insufficient|not enough|no funds|credits?\b",
    re.IGNORECASE,
)
_MASK = "***"


class ProviderError(Exception):
    """A message provider could not deliver a code."""

    def __init__(self, reason: ErrorReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: ErrorReason = reason
        #: Safe for logs: never holds a password, a token or a code.
        self.detail = detail


class MessageProvider(ABC):
    """A gateway that delivers confirmation codes by SMS or by a flash call."""

    channel: Channel
    #: The provider's kind, as in ``ProviderConfig.kind``.
    name: str

    def __init__(self) -> None:
        #: The safe detail of the latest failed send, cleared by a successful one.
        self.last_error: str | None = None
        self.last_error_reason: ErrorReason | None = None

    @abstractmethod
    async def send_code(self, phone10: str, code: str, purpose: str, request_id: str) -> str:
        """Deliver a code to ``7`` + ``phone10``; return the code the customer will receive."""

    def _succeeded(self) -> None:
        self.last_error = None
        self.last_error_reason = None

    def _failed(
        self, reason: ErrorReason, detail: str, secrets: tuple[str, ...] = ()
    ) -> ProviderError:
        """Record and log a failure; return the error for the caller to raise."""
        # A gateway may echo its request: no secret, and no phone, in the log or the status.
        detail = mask_phones(_mask(detail, secrets))
        self.last_error = detail
        self.last_error_reason = reason
        logger.warning("%s provider failed (%s): %s", self.name, reason, detail)
        return ProviderError(reason, detail)


def make_provider(cfg: ProviderConfig, session: aiohttp.ClientSession) -> MessageProvider:
    """The provider ``cfg.kind`` names; the session stays owned (and closed) by the caller."""
    match cfg.kind:
        case "file":
            return FileProvider(cfg)
        case "stream_telecom":
            return StreamTelecomProvider(cfg, session)
        case "smsprofi_call":
            return SmsProfiCallProvider(cfg, session)
        case "smsprofi_sms":
            return SmsProfiSmsProvider(cfg, session)


# --- file ------------------------------------------------------------------------------------


class FileProvider(MessageProvider):
    """Appends one JSON line per message to a file: for the demo, tests and debugging."""

    channel: Channel = "sms"
    name = "file"

    def __init__(self, cfg: ProviderConfig) -> None:
        super().__init__()
        self._cfg = cfg
        self._path: Path = cfg.file_path
        # Serialises appends so that concurrent sends never interleave their lines.
        self._lock = asyncio.Lock()

    async def send_code(self, phone10: str, code: str, purpose: str, request_id: str) -> str:
        recipient = _recipient(phone10)
        record = {
            "time": datetime.now().astimezone().isoformat(),
            "channel": self.channel,
            "phone": recipient,
            "purpose": purpose,
            "request_id": request_id,
            "text": render_text(self._cfg.code_text, code),
            "code": code,
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        async with self._lock:
            try:
                await asyncio.to_thread(_append_line, self._path, line)
            except OSError as exc:
                raise self._failed(
                    "unavailable", f"cannot append to {self._path}: {exc.strerror}"
                ) from None
        self._succeeded()
        return code


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(line)


# --- Stream Telecom --------------------------------------------------------------------------


class StreamTelecomProvider(MessageProvider):
    """Stream Telecom's HTTPS GET gateway: one SMS per request, the answer is a message id."""

    channel: Channel = "sms"
    name = "stream_telecom"

    def __init__(self, cfg: ProviderConfig, session: aiohttp.ClientSession) -> None:
        super().__init__()
        self._cfg = cfg
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=cfg.sms_timeout_s)

    async def send_code(self, phone10: str, code: str, purpose: str, request_id: str) -> str:
        password = self._cfg.stream_telecom_password.get_secret_value()
        params = {
            "user": self._cfg.stream_telecom_login,
            "pwd": password,
            "sadr": self._cfg.stream_telecom_sender,
            "dadr": _recipient(phone10),
            "text": render_text(self._cfg.code_text, code),
        }
        secrets = (password, code)
        status, body = await self._get(params, secrets)
        answer = body.strip()
        if 200 <= status < 300 and _is_message_id(answer):
            logger.info("stream_telecom sent request %s as message %s", request_id, answer)
            self._succeeded()
            return code
        raise self._failed(_reason_from_text(body), _answer_detail(status, body, secrets), secrets)

    async def balance(self) -> str:
        """The account balance as the gateway words it, such as ``100.01 RUR``."""
        password = self._cfg.stream_telecom_password.get_secret_value()
        params = {"user": self._cfg.stream_telecom_login, "pwd": password, "balance": "1"}
        status, body = await self._get(params, (password,))
        answer = body.strip()
        if 200 <= status < 300 and answer:
            return answer
        # A failed balance look-up says nothing about sending, so last_error is left alone.
        detail = _answer_detail(status, body, (password,))
        logger.warning("stream_telecom balance look-up failed: %s", detail)
        raise ProviderError("unavailable", detail)

    async def _get(self, params: dict[str, str], secrets: tuple[str, ...]) -> tuple[int, str]:
        try:
            async with self._session.get(
                self._cfg.stream_telecom_url, params=params, timeout=self._timeout
            ) as resp:
                return resp.status, await _read_text(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Not chained: the exception's text may hold the URL, and the URL the password.
            raise self._failed("unavailable", _transport_detail(exc), secrets) from None


# --- SMS-profi -------------------------------------------------------------------------------


class _SmsProfiProvider(MessageProvider):
    """What the SMS-profi JSON API's calls share: the token header and the answer format."""

    def __init__(
        self, cfg: ProviderConfig, session: aiohttp.ClientSession, timeout_s: float
    ) -> None:
        super().__init__()
        self._cfg = cfg
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _post(
        self, path: str, payload: dict[str, Any], secrets: tuple[str, ...]
    ) -> dict[str, Any]:
        """POST ``payload``; the ``result`` of a successful answer, or a raised failure."""
        token = self._cfg.smsprofi_token.get_secret_value()
        secrets = (token, *secrets)
        url = self._cfg.smsprofi_url.rstrip("/") + path
        try:
            async with self._session.post(
                url, json=payload, headers={"X-Token": token}, timeout=self._timeout
            ) as resp:
                status, body = resp.status, await _read_text(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failed("unavailable", _transport_detail(exc), secrets) from None

        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise self._failed("unavailable", _answer_detail(status, body, secrets), secrets)
        if answer.get("success") is True and 200 <= status < 300:
            result = answer.get("result")
            return result if isinstance(result, dict) else {}
        error = answer.get("error")
        if isinstance(error, dict):
            error_code, descr = error.get("code"), str(error.get("descr", ""))
            # The error codes are not published, so a zero balance is recognised by its wording
            # (in the description or in a symbolic code such as ``NO_BALANCE``).
            reason = _reason_from_text(f"{error_code} {descr}")
            if reason == "unavailable" and status < 500:
                reason = "rejected"
            shown = _truncate(_mask(f"{error_code}: {descr}", secrets))
            detail = f"HTTP {status}, error {shown}"
            raise self._failed(reason, detail, secrets)
        raise self._failed("unavailable", _answer_detail(status, body, secrets), secrets)


class SmsProfiCallProvider(_SmsProfiProvider):
    """SMS-profi's flash call: the customer is called and reads out the caller's last 4 digits."""

    channel: Channel = "call"
    name = "smsprofi_call"

    def __init__(self, cfg: ProviderConfig, session: aiohttp.ClientSession) -> None:
        # The gateway answers only after the call is placed, hence the longer timeout.
        super().__init__(cfg, session, cfg.call_timeout_s)

    async def send_code(self, phone10: str, code: str, purpose: str, request_id: str) -> str:
        # ``code`` is not ours to choose (the gateway picks the calling number); it is only masked.
        payload = {"recipient": _recipient(phone10), "id": request_id, "validate": False}
        result = await self._post("/callpassword/send", payload, (code,))
        call_code = result.get("code")
        if not isinstance(call_code, str) or not _CALL_CODE.fullmatch(call_code):
            # The answer is not echoed: it may hold a code, if one of another shape.
            raise self._failed("unavailable", "the answer has no 4-digit code")
        logger.info("smsprofi_call placed request %s as call %s", request_id, result.get("id"))
        self._succeeded()
        return call_code


class SmsProfiSmsProvider(_SmsProfiProvider):
    """SMS-profi's SMS: the code is sent in the configured text."""

    channel: Channel = "sms"
    name = "smsprofi_sms"

    def __init__(self, cfg: ProviderConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(cfg, session, cfg.sms_timeout_s)

    async def send_code(self, phone10: str, code: str, purpose: str, request_id: str) -> str:
        message = {
            "recipient": _recipient(phone10),
            "id": request_id,
            "source": self._cfg.smsprofi_sender,
            "text": render_text(self._cfg.code_text, code),
        }
        await self._post("/sms/send/text", {"messages": [message]}, (code,))
        logger.info("smsprofi_sms sent request %s", request_id)
        self._succeeded()
        return code


# --- helpers ---------------------------------------------------------------------------------


def render_text(template: str, code: str) -> str:
    """The SMS text: ``{code}`` in the template replaced by the code (appended if absent)."""
    # Plain replacement, not str.format: other braces in a store's text must not break sending,
    # and a text without the placeholder must still carry the code.
    if "{code}" not in template:
        return f"{template} {code}".strip()
    return template.replace("{code}", code)


def _recipient(phone10: str) -> str:
    if len(phone10) != 10 or not phone10.isascii() or not phone10.isdigit():
        raise ValueError("phone10 must be 10 digits")
    return "7" + phone10


async def _read_text(resp: aiohttp.ClientResponse) -> str:
    data = bytearray()
    while len(data) < ANSWER_BYTES_MAX:
        chunk = await resp.content.read(ANSWER_BYTES_MAX - len(data))
        if not chunk:
            break
        data += chunk
    return data.decode(resp.charset or "utf-8", errors="replace")


def _is_message_id(answer: str) -> bool:
    return bool(_MESSAGE_ID.fullmatch(answer)) and not answer.lower().startswith(("err", "fail"))


def _reason_from_text(text: str) -> ErrorReason:
    return "no_balance" if _NO_BALANCE.search(text) else "unavailable"


def _answer_detail(status: int, body: str, secrets: tuple[str, ...]) -> str:
    # Masked before it is cut, so that no secret survives half-cut at the end.
    shown = _truncate(_mask(body.strip(), secrets))
    return f"HTTP {status}, answer {shown!r}" if shown else f"HTTP {status}, empty answer"


def _transport_detail(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    return f"connection failed ({type(exc).__name__})"


def _truncate(text: str) -> str:
    return text if len(text) <= DETAIL_CHARS_MAX else text[:DETAIL_CHARS_MAX] + "…"


def _mask(text: str, secrets: tuple[str, ...]) -> str:
    # A gateway that echoes its request may echo a secret URL-encoded (as aiohttp or as urllib
    # encode it) or JSON-escaped, so every such form is masked, longest first.
    for secret in secrets:
        if not secret:
            continue
        forms = {
            secret,
            quote(secret, safe=""),
            quote_plus(secret, safe=""),
            yarl.URL.build(query={"x": secret}).raw_query_string[2:],
            json.dumps(secret)[1:-1],
        }
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, _MASK)
    return text
