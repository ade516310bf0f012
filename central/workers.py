"""Several central server processes on one port, for PostgreSQL.

One Python process applies uploads on one core; the database can do more.  With ``workers`` > 1
the ``bonus-central serve`` process migrates the database once, then starts that many worker
processes, each a whole server listening on the same port with ``SO_REUSEPORT`` (the kernel
spreads the stores' connections over them) and sharing the database, as several central
instances may (PostgreSQL's row locks and the feed row keep them consistent).  Only the first
worker runs the daily expiry.  The supervisor forwards SIGTERM and SIGINT, tells systemd when
every worker is up, and stops them all — exiting with an error, for systemd to restart the
service — when one of them dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from central.config import CentralConfig
from central.tls import scheme
from service.notify import SystemdNotifier

log = logging.getLogger(__name__)

#: How long the workers have to answer ``/health`` after they start.
START_TIMEOUT_S = 60.0
#: How long a worker has to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 30.0


def _healthy(config: CentralConfig) -> bool:
    host = "127.0.0.1" if config.listen_host in ("0.0.0.0", "::") else config.listen_host
    url = f"{scheme(config)}://{host}:{config.listen_port}/health"
    # The workers' own certificate, asked for by address: whether it serves is the question here,
    # not whom it names (the stores check that).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=2, context=context):
            return True
    except (urllib.error.URLError, OSError):
        return False


def supervise(
    config: CentralConfig,
    worker: Callable[[CentralConfig, int], None],
    *,
    migrate_first: Callable[[CentralConfig], None],
) -> int:
    """Run ``config.workers`` processes of ``worker(config, index)`` until a signal or a death."""
    migrate_first(config)
    context = multiprocessing.get_context("spawn")
    notifier = SystemdNotifier()
    stopping = False

    def _stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    # The workers must not speak to systemd themselves: only this process does.
    notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
    processes: list[BaseProcess] = []
    try:
        for index in range(config.workers):
            started = context.Process(
                target=worker, args=(config, index), name=f"central-worker-{index}"
            )
            started.start()
            processes.append(started)
        if notify_socket is not None:
            os.environ["NOTIFY_SOCKET"] = notify_socket
        deadline = time.monotonic() + START_TIMEOUT_S
        while not stopping and not _healthy(config):
            if time.monotonic() > deadline or any(not p.is_alive() for p in processes):
                log.error("the central workers did not start")
                return 1
            time.sleep(0.1)
        log.info("%d central workers serving on port %s", len(processes), config.listen_port)
        notifier.ready()
        while not stopping:
            dead = [p for p in processes if not p.is_alive()]
            if dead:
                log.error(
                    "central worker %s ended (exit %s): stopping", dead[0].name, dead[0].exitcode
                )
                return 1
            time.sleep(0.2)
        return 0
    finally:
        notifier.stopping()
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        notifier.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
