"""Fixtures for every test: a throwaway PostgreSQL cluster and the central database URL.

The cluster is started once per session, only when a test asks for PostgreSQL, and each test gets
a fresh database in it.  Without the server binaries the PostgreSQL tests are skipped on a
developer's machine and fail in CI (``CI=true``), so CI never passes without them.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.missing import missing as tool_missing

#: Makes a fresh database in the session's cluster and returns its SQLAlchemy URL.
NewDatabase = Callable[[], str]

_PG_START_TIMEOUT_S = 60


def _pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, or where Debian's packages put it."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def pg_tool(name: str) -> str:
    """A PostgreSQL client program (``pg_dump``, ``pg_restore``…) of the installed server."""
    found = _pg_bin(name)
    assert found is not None, f"PostgreSQL's {name} is not installed"
    return found


def _as_postgres(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; the tests run as root in CI containers.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _run(argv: list[str], *, as_postgres: bool = True) -> None:
    done = subprocess.run(
        _as_postgres(argv) if as_postgres else argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_PG_START_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[NewDatabase]:
    """A PostgreSQL cluster on a Unix socket for this session; yields a database factory."""
    tools = {name: _pg_bin(name) for name in ("initdb", "pg_ctl", "createdb")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        tool_missing(f"PostgreSQL server binaries not found: {', '.join(missing)}")
    initdb, pg_ctl, createdb = (str(tools[name]) for name in ("initdb", "pg_ctl", "createdb"))
    # A short path: the socket's path must fit in sockaddr_un (about 100 bytes).
    base = Path(tempfile.mkdtemp(prefix="pgt"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = _free_port()
    started = False
    try:
        _run([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        _run(
            [
                pg_ctl,
                "-D",
                str(data),
                "-o",
                f"-k {base} -p {port} -c listen_addresses='' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off",
                "-l",
                str(base / "log"),
                "-w",
                "-t",
                str(_PG_START_TIMEOUT_S),
                "start",
            ]
        )
        started = True
        names = itertools.count(1)

        def new_database() -> str:
            name = f"bonus_{os.getpid()}_{next(names)}"
            # Trust authentication over the socket: any OS user may create it.
            _run(
                [createdb, "-h", str(base), "-p", str(port), "-U", "postgres", name],
                as_postgres=False,
            )
            return f"postgresql+asyncpg://postgres@/{name}?host={base}&port={port}"

        yield new_database
    finally:
        if started:
            # The cluster is thrown away: no shutdown checkpoint needed.
            _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def central_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty central database: SQLite in the test's directory, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite3'}"
    new_database: NewDatabase = request.getfixturevalue("pg_cluster")
    return new_database()
