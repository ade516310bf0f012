"""The chain's phone key at a store: read from outside the database, and hashes off the loop.

The key never enters the store's database, so no copy of the database (a backup, a support dump,
a stolen disk) can give a phone away: it comes from the systemd credential ``phone-key``
(``$CREDENTIALS_DIRECTORY/phone-key``, loaded by systemd from a root-only file) or, without
systemd, from the file ``phone_key_file`` names. ``bonus-central phone-key export`` writes it.

Without a usable key the agent still serves the tills by card number and keeps syncing, but
refuses what needs the phone (lookup by phone, registration, codes) with a clear reason, shown in
its status too: a store whose key went missing must not stop uploading the sales it holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from shared.phones import PhoneKey, PhoneKeyError

log = logging.getLogger(__name__)

#: The name of the systemd credential (``LoadCredential=phone-key:…`` in the unit).
CREDENTIAL_NAME: Final = "phone-key"
#: What the unit's ``SetCredential=`` passes when the key file is not installed (systemd 252
#: refuses an empty value).
NOT_INSTALLED: Final = b"not-installed"
#: A key file is a few hundred bytes; anything much larger is not one.
KEY_FILE_BYTES_MAX: Final = 4096
#: Hashes computed at once: argon2 releases the GIL, so each thread has a core of its own.
PHONE_HASH_THREADS: Final = 2
#: Hashes waiting at most (a store has a few tills); more are refused as busy.
PHONE_HASH_WAITING_MAX: Final = 32


class PhoneHashBusy(Exception):
    """Too many phone hashes are waiting."""


@dataclass(frozen=True)
class PhoneKeySource:
    """The key found, or why there is none; and where it was looked for."""

    key: PhoneKey | None
    problem: str | None
    path: Path | None


def key_path(configured: Path, environ: Mapping[str, str]) -> Path:
    """Where the key is read from: systemd's credential if the unit passes one, else the file."""
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        candidate = Path(credentials) / CREDENTIAL_NAME
        if candidate.exists():
            return candidate
    return configured


def load_phone_key(configured: Path, environ: Mapping[str, str] | None = None) -> PhoneKeySource:
    """Read the phone key; a missing, empty or damaged one is a ``problem``, never an exception."""
    path = key_path(configured, os.environ if environ is None else environ)
    try:
        with path.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            data = file.read(KEY_FILE_BYTES_MAX + 1)
    except FileNotFoundError:
        return PhoneKeySource(None, f"no phone key file at {path}", path)
    except OSError as exc:
        return PhoneKeySource(None, f"cannot read the phone key file {path}: {exc}", path)
    if data.strip() in (b"", NOT_INSTALLED):
        # The unit's SetCredential= fallback: the file is not installed.
        return PhoneKeySource(None, f"the phone key file {path} is empty or not installed", path)
    if len(data) > KEY_FILE_BYTES_MAX:
        return PhoneKeySource(None, f"{path} is too large to be a phone key file", path)
    try:
        key = PhoneKey.from_text(data.decode("utf-8"))
    except (PhoneKeyError, UnicodeDecodeError) as exc:
        return PhoneKeySource(None, f"{path}: {exc}", path)
    if mode & stat.S_IROTH:
        log.warning("the phone key file %s is readable by every user: chmod o-r it", path)
    if key.params.cheap:
        log.warning(
            "the phone key %s has a test cost (%d KiB, %d passes): not for customers' phones",
            key.key_id,
            key.params.memory_kib,
            key.params.time_cost,
        )
    return PhoneKeySource(key, None, path)


class PhoneHasher:
    """Phone hashes in a few threads of their own: each takes tens of milliseconds, which the
    event loop (and every till waiting on it) must not spend."""

    def __init__(
        self,
        key: PhoneKey,
        threads: int = PHONE_HASH_THREADS,
        waiting_max: int = PHONE_HASH_WAITING_MAX,
    ) -> None:
        self.key = key
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="phone-hash")
        self._waiting_max = waiting_max
        self._waiting = 0

    async def hash(self, phone10: str) -> str:
        """The phone's tagged hash; ``PhoneHashBusy`` when too many are waiting already."""
        if self._waiting >= self._waiting_max:
            raise PhoneHashBusy(f"{self._waiting} phone hashes are waiting")
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, self.key.hash, phone10
            )
        finally:
            self._waiting -= 1

    async def hash_many(self, phones: Iterable[str]) -> dict[str, str]:
        """Each distinct phone's hash, computed by all the threads; the caller bounds how many."""
        loop = asyncio.get_running_loop()
        distinct = sorted(set(phones))
        hashes = await asyncio.gather(
            *(loop.run_in_executor(self._pool, self.key.hash, phone) for phone in distinct)
        )
        return dict(zip(distinct, hashes, strict=True))

    def close(self) -> None:
        """Stop the threads (a hash under way finishes; nothing waits for it)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
