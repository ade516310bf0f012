"""The audit of refused office requests without a session, counted instead of a row each.

Every mutating office request is audited.  Those of a logged-in worker get a row each in
``audit`` (a worker is accountable, and their requests are few).  Refused requests of nobody —
wrong passwords, logins over their limits or refused for a busy server, requests without a
token — would let anybody grow that table and take a write transaction (on SQLite the one
writer lock that store sync needs) per request.  They are counted instead in ``audit_refusals``:
one row per window (``window_s``), client address, action, login name and error code, with the
number of attempts and the first and last time.

Bounded: at most ``rows_per_window_max`` rows per window count sources apart; attempts of
further sources in that window add to one row whose address and login are ``*``.  Rows older than
``keep_days`` are pruned.  The counts wait in memory (``RefusalCounter``, itself bounded) and are
written together every few seconds, in one transaction of a few statements, so that a flood
adds no write of its own to the one writer lock; a crash loses those seconds of counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from central import schema
from central.db import Database

#: The address and login of the row that counts the sources beyond a window's limit.
OVERFLOW = "*"
#: Distinct counters one process keeps between two writes (every few seconds); more are counted
#: under ``*``.  Small, so that a flood from ever new addresses makes a small write.
PENDING_MAX = 100


@dataclass(frozen=True)
class RefusalKey:
    """What one counter counts: refusals in one window from one source."""

    window_start: datetime
    address: str
    action: str
    login: str
    code: str
    #: Follows from the code; not part of what is counted apart (the table's key).
    status: int = field(compare=False)


@dataclass
class Count:
    attempts: int
    first_at: datetime
    last_at: datetime


def window_start(moment: datetime, window_s: int) -> datetime:
    """The start of the counting window that ``moment`` falls in (UTC, whole seconds)."""
    epoch = int(moment.astimezone(UTC).timestamp())
    return datetime.fromtimestamp(epoch - epoch % window_s, UTC)


def refusal_key(
    moment: datetime,
    window_s: int,
    address: str,
    action: str,
    login: str | None,
    code: str,
    status: int,
) -> RefusalKey:
    """The counter of one refused request (texts cut to the columns' widths)."""
    return RefusalKey(
        window_start(moment, window_s),
        address[:64],
        action[:64],
        (login or "")[:64],
        code[:32],
        status,
    )


def _overflow(key: RefusalKey) -> RefusalKey:
    return RefusalKey(key.window_start, OVERFLOW, key.action, OVERFLOW, key.code, key.status)


def _merge(into: dict[RefusalKey, Count], key: RefusalKey, count: Count) -> None:
    found = into.get(key)
    if found is None:
        into[key] = Count(count.attempts, count.first_at, count.last_at)
    else:
        found.attempts += count.attempts
        found.first_at = min(found.first_at, count.first_at)
        found.last_at = max(found.last_at, count.last_at)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def write_counts(
    conn: AsyncConnection, counts: dict[RefusalKey, Count], rows_per_window_max: int
) -> None:
    """Add counts to ``audit_refusals`` inside the caller's write transaction."""
    table = schema.audit_refusals
    by_window: dict[datetime, dict[RefusalKey, Count]] = {}
    for key, count in counts.items():
        by_window.setdefault(key.window_start, {})[key] = count
    for start, window in sorted(by_window.items()):
        existing = int(
            await conn.scalar(
                sa.select(sa.func.count()).select_from(table).where(table.c.window_start == start)
            )
            or 0
        )
        final: dict[RefusalKey, Count] = {}
        if existing + len(window) <= rows_per_window_max:
            final = window
        else:
            # Near the limit: sources already counted keep their rows, new ones fill the rest
            # (the busiest first), and the others go to the overflow row.
            present = {
                tuple(row)
                for row in await conn.execute(
                    sa.select(table.c.address, table.c.action, table.c.login, table.c.code).where(
                        table.c.window_start == start
                    )
                )
            }
            room = max(0, rows_per_window_max - existing)
            for key, count in sorted(window.items(), key=lambda item: -item[1].attempts):
                if (key.address, key.action, key.login, key.code) in present:
                    _merge(final, key, count)
                elif room > 0 and key.address != OVERFLOW:
                    room -= 1
                    _merge(final, key, count)
                else:
                    _merge(final, _overflow(key), count)
        rows = [
            {
                "window_start": key.window_start,
                "address": key.address,
                "action": key.action,
                "login": key.login,
                "code": key.code,
                "status": key.status,
                "attempts": count.attempts,
                "first_at": count.first_at,
                "last_at": count.last_at,
            }
            # One lock order for every process.
            for key, count in sorted(
                final.items(),
                key=lambda item: (item[0].address, item[0].action, item[0].login, item[0].code),
            )
        ]
        # One statement for any number of rows (executemany): compiled once, cached.
        await conn.execute(_upsert(conn), rows)


def _upsert(conn: AsyncConnection) -> Any:
    table = schema.audit_refusals
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    return statement.on_conflict_do_update(
        index_elements=["window_start", "address", "action", "login", "code"],
        set_={
            "attempts": table.c.attempts + statement.excluded.attempts,
            "last_at": statement.excluded.last_at,
        },
    )


class RefusalCounter:
    """Refusals of one process not written yet; ``flush`` writes them in one transaction."""

    def __init__(self, window_s: int, rows_per_window_max: int) -> None:
        self.window_s = window_s
        self.rows_per_window_max = rows_per_window_max
        self._pending: dict[RefusalKey, Count] = {}

    @property
    def pending(self) -> int:
        """Counters waiting to be written."""
        return len(self._pending)

    def key(
        self, moment: datetime, address: str, action: str, login: str | None, code: str, status: int
    ) -> RefusalKey:
        return refusal_key(moment, self.window_s, address, action, login, code, status)

    def count(self, key: RefusalKey, moment: datetime) -> None:
        """One more refusal; no I/O."""
        if key not in self._pending and len(self._pending) >= PENDING_MAX:
            key = _overflow(key)
        _merge(self._pending, key, Count(1, moment, moment))

    async def flush(self, db: Database) -> None:
        """Write the pending counts (they stay pending if the write fails)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            async with db.write() as conn:
                await write_counts(conn, pending, self.rows_per_window_max)
        except BaseException:
            for key, count in pending.items():
                _merge(self._pending, key, count)
            raise


async def prune(conn: AsyncConnection, keep_days: int, now: datetime) -> int:
    """Delete the oldest window older than ``keep_days``; the rows deleted."""
    table = schema.audit_refusals
    oldest: Any = await conn.scalar(
        sa.select(sa.func.min(table.c.window_start)).where(
            table.c.window_start < now - timedelta(days=keep_days)
        )
    )
    if oldest is None:
        return 0
    result = await conn.execute(table.delete().where(table.c.window_start == _aware(oldest)))
    return int(result.rowcount)
