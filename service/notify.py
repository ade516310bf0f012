"""A dependency-free client of systemd's notification protocol (``sd_notify(3)``).

Under ``Type=notify`` systemd passes the address of a datagram socket in ``NOTIFY_SOCKET`` and
waits for ``READY=1`` before it considers the service started; with ``WatchdogSec=`` it also
expects ``WATCHDOG=1`` at least that often and restarts the service when the pings stop.  Outside
systemd (development, tests, ``make run``) the variable is unset and every call here does nothing.

Notifications are best effort: a failure to send one is logged once and never raised, because a
till must not lose a sale over a status message.  The socket is non-blocking, so a stalled
service manager cannot stall the event loop either.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends state changes to the service manager named by ``NOTIFY_SOCKET``, if any."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw)
        if raw and self._address is None:
            logger.warning("NOTIFY_SOCKET=%r is not a socket path; not notifying systemd", raw)
        self._socket: socket.socket | None = None
        self._error_logged = False

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening (``NOTIFY_SOCKET`` is set and usable)."""
        return self._address is not None

    def ready(self) -> None:
        """Tell systemd that start-up is finished and the service is serving."""
        self.send("READY=1")

    def watchdog(self) -> None:
        """Reset the service's watchdog timer (``WatchdogSec=``)."""
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell systemd that an orderly shutdown has begun."""
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        """Set the one-line status shown by ``systemctl status``."""
        # A newline would end the assignment and start another one, so the text stays one line.
        self.send("STATUS=" + " ".join(text.splitlines()))

    def send(self, state: str) -> bool:
        """Send raw ``KEY=value`` lines; return whether the datagram was handed to the kernel."""
        if self._address is None:
            return False
        try:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._socket = sock
            self._socket.sendto(state.encode(), self._address)
        except OSError as exc:
            # Logged once: with the watchdog pinging every few seconds, a persistent failure
            # (a restarted manager, a full queue) would otherwise flood the journal.
            if not self._error_logged:
                self._error_logged = True
                logger.warning("Cannot notify systemd (%s): %s", state.split("\n", 1)[0], exc)
            else:
                logger.debug("Cannot notify systemd (%s): %s", state.split("\n", 1)[0], exc)
            return False
        return True

    def close(self) -> None:
        """Close the socket; a later notification opens a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _socket_address(raw: str) -> bytes | None:
    """The ``sendto`` address of a ``NOTIFY_SOCKET`` value, or None when it names no socket."""
    if raw.startswith("@") and len(raw) > 1:
        # An abstract-namespace socket: the leading '@' stands for a NUL byte.
        return b"\0" + os.fsencode(raw[1:])
    if raw.startswith("/"):
        return os.fsencode(raw)
    # Empty, relative, or a transport this client does not speak (systemd 254's "vsock:").
    return None


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """How often to ping the watchdog: half of ``WATCHDOG_USEC``, or None when it is off.

    The watchdog is meant for this process only when ``WATCHDOG_PID`` is unset or is our pid
    (a child started by the service inherits the variables but must not ping for it).
    """
    env = os.environ if environ is None else environ
    usec_text = env.get("WATCHDOG_USEC")
    if usec_text is None:
        return None
    pid_text = env.get("WATCHDOG_PID")
    try:
        usec = int(usec_text)
        if pid_text is not None and int(pid_text) != os.getpid():
            return None
    except ValueError:
        logger.warning(
            "Ignoring a malformed watchdog setting: WATCHDOG_USEC=%r WATCHDOG_PID=%r",
            usec_text,
            pid_text,
        )
        return None
    if usec <= 0:
        return None
    # Half the timeout, as sd_watchdog_enabled(3) advises, so one late ping is not yet fatal.
    return usec / 2 / 1_000_000


async def watchdog_loop(
    notifier: SystemdNotifier,
    interval_s: float,
    healthy: Callable[[], Awaitable[bool]],
) -> None:
    """Ping ``WATCHDOG=1`` every ``interval_s`` while ``healthy()`` says so; run until cancelled.

    A check that returns False, raises, or takes longer than ``interval_s`` skips that ping, so
    a wedged service (a stuck event loop, a database that never answers) stops pinging and
    systemd restarts it.  Pings resume if the check recovers before the watchdog expires.
    """
    assert interval_s > 0, interval_s
    loop = asyncio.get_running_loop()
    was_healthy = True
    next_ping_at = loop.time()
    while True:
        problem = await _check(healthy, interval_s)
        if problem is None:
            notifier.watchdog()
            if not was_healthy:
                logger.info("Health check passes again; watchdog pings resumed")
        elif was_healthy:
            # Only the change is logged: the check repeats every interval until systemd acts.
            logger.warning("Service is unhealthy (%s); withholding watchdog pings", problem)
        was_healthy = problem is None
        # A fixed rate rather than a fixed pause, so slow checks do not stretch the interval.
        next_ping_at = max(next_ping_at + interval_s, loop.time())
        await asyncio.sleep(next_ping_at - loop.time())


async def _check(healthy: Callable[[], Awaitable[bool]], timeout_s: float) -> str | None:
    """Run one health check; None when it passed, else why it did not."""
    try:
        async with asyncio.timeout(timeout_s):
            if await healthy():
                return None
    except TimeoutError:
        return f"the check took longer than {timeout_s:g} s"
    except Exception as exc:
        # Any failure of the check means "not healthy"; cancellation still propagates.
        return f"the check raised {exc!r}"
    return "the check returned False"
