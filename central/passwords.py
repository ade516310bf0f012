"""Password hashing off the event loop, with bounded concurrency.

An argon2 hash costs about 150 ms of one CPU and 64 MiB.  On the event loop a few wrong logins a
second held back every store's sync and online authorisation; inside a write transaction they
held SQLite's one writer lock as well.  Here hashes run in a few threads of their own
(argon2-cffi lets go of the GIL while it hashes), niced, so that the event loop and the
database get the CPU first; a login that finds every thread busy waits a little in a short
queue, and beyond it is answered at once (``HashingBusy``) instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class HashingBusy(Exception):
    """Every hashing thread is busy and the queue is full, or the wait for a thread ran out."""


def default_threads() -> int:
    """One hashing thread per two CPUs, at least one.

    Niced threads yield the CPU to the event loop, but not the memory bandwidth that argon2's
    64 MiB passes take: a flood hashing on every CPU slowed store sync and the database more
    than the logins it served were worth (``bench/login_flood.py``).  An office logs in a few
    times a minute; one thread checks six passwords a second.
    """
    return max(1, (os.cpu_count() or 1) // 2)


def _lower_priority(nice: int) -> None:
    # On Linux the niceness belongs to each thread, so this lowers only the hashing thread.
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    thread_id = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, current + nice))
    except OSError as exc:  # a sandbox may forbid it; the hashing still works
        log.warning("could not lower the priority of a password hashing thread: %s", exc)


class PasswordHashing:
    """A few threads for password hashes, and the admission to them.

    At most ``threads`` hashes run at once; at most ``queue_max`` more logins wait, each at most
    ``wait_s``; any other is refused with ``HashingBusy`` without waiting.  Limits are per
    server process.
    """

    def __init__(self, threads: int, queue_max: int, wait_s: float, nice: int) -> None:
        assert threads >= 1, threads
        assert queue_max >= 0, queue_max
        assert wait_s > 0, wait_s
        self.threads = threads
        self.queue_max = queue_max
        self.wait_s = wait_s
        self._slots = asyncio.Semaphore(threads)
        #: Logins holding or waiting for a slot.
        self._admitted = 0
        self._executor = ThreadPoolExecutor(
            max_workers=threads,
            thread_name_prefix="password-hashing",
            initializer=_lower_priority,
            initargs=(nice,),
        )

    @property
    def full(self) -> bool:
        """Whether a login now would be refused without waiting."""
        return self._admitted >= self.threads + self.queue_max

    @property
    def admitted(self) -> int:
        """Hashes running or waiting for a thread (for tests and benchmarks)."""
        return self._admitted

    async def run(self, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` in a hashing thread, or ``HashingBusy`` when there is no room."""
        if self.full:
            raise HashingBusy
        self._admitted += 1
        try:
            try:
                async with asyncio.timeout(self.wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise HashingBusy from None
            try:
                future = asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
            except BaseException:
                self._slots.release()
                raise
            # The slot is free when the thread is, even if this request is cancelled first
            # (a thread cannot be stopped half-way through a hash).
            future.add_done_callback(lambda _: self._slots.release())
            return await asyncio.shield(future)
        finally:
            self._admitted -= 1

    def close(self) -> None:
        """Stop the threads; hashes not started are dropped."""
        with contextlib.suppress(RuntimeError):
            self._executor.shutdown(wait=False, cancel_futures=True)
