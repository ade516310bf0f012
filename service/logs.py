"""Logging set-up: plain text for a terminal, JSON lines for the journal; no phone numbers.

Both services use it (``log_level``, ``log_json``).  Customers' phones never belong in a log:
the code logs none, the libraries that would log query parameters at DEBUG (aiosqlite,
SQLAlchemy, asyncpg) are kept at WARNING, and as a last guard every rendered line has anything
shaped like a Russian mobile number (``+7 9XX XXX-XX-XX`` in any spelling) replaced.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

#: Loggers that write SQL statements with their parameters (phones among them) below WARNING.
QUIET_LOGGERS = ("aiosqlite", "sqlalchemy", "asyncpg", "alembic")
#: A mobile number as a cashier or a gateway might write it, not part of a longer number (a
#: card number has 13 digits).
_PHONE = re.compile(
    r"(?<![0-9])(?:(?:\+?7|8)[\s\-(]{0,2})?9[0-9]{2}[\s\-)]{0,2}[0-9]{3}[\s\-]?[0-9]{2}[\s\-]?[0-9]{2}"
    r"(?![0-9])"
)
PHONE_MASK = "<phone>"


def mask_phones(text: str) -> str:
    """``text`` with every phone-shaped number replaced by ``<phone>``."""
    return _PHONE.sub(PHONE_MASK, text)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` with phones masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return mask_phones(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, phones masked."""

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_phones(record.getMessage()),
        }
        if record.exc_info:
            body["exception"] = mask_phones(self.formatException(record.exc_info))
        return json.dumps(body, ensure_ascii=False)


def setup_logging(level: str, *, as_json: bool) -> None:
    """Configure the root logger once."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log repeats every till request; keep it out of INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
