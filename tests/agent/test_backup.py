"""``bonus-agent backup`` and ``bonus-agent restore`` with real agent processes.

A backup taken while tills sell is one consistent moment of the journal; a restore refuses to
run under a serving agent, replaces the database with nothing of the old log left to replay into
it, keeps the old one aside, and — killed at any moment — leaves the old database or the new one.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest

from agent import backup as backup_module
from tests.agent.conftest_process import AgentProcess
from tests.e2e.till import Till

pytestmark = pytest.mark.timeout(180)

PHONE = "9161112233"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    (tmp_path / "store").mkdir()
    process = AgentProcess(tmp_path / "store", log_level="INFO")
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def till_of(agent: AgentProcess, session: aiohttp.ClientSession) -> Till:
    return Till(session, agent.base_url, agent.messages_path, name="store")


def sales_in(path: Path) -> int:
    """Sales in a database file's journal (with its log, if one lies beside it)."""
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT count(*) FROM journal WHERE kind = 'sale'").fetchone()
    return int(row[0])


def consistent(path: Path) -> tuple[int, int]:
    """A database file that is whole and self-consistent: SQLite's check passes, the journal's
    numbers have no gap, and every sale has its receipt (they commit together). Its journal's
    length and its sales."""
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        seqs = [row[0] for row in conn.execute("SELECT seq FROM journal ORDER BY seq")]
        assert seqs == list(range(1, len(seqs) + 1))
        sales = conn.execute("SELECT idem_key FROM journal WHERE kind = 'sale'").fetchall()
        receipts = conn.execute("SELECT receipt_id FROM receipts").fetchall()
        assert sorted(sales) == sorted(receipts)
    return len(seqs), len(sales)


async def test_a_backup_taken_while_tills_sell_is_one_consistent_moment(
    agent: AgentProcess, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    till = till_of(agent, session)
    card = await till.register(PHONE)
    selling = True

    async def sell() -> int:
        count = 0
        while selling:
            await till.sold(card, "100")
            count += 1
        return count

    sellers = [asyncio.create_task(sell()) for _ in range(3)]
    lengths = []
    try:
        for index in range(3):
            await asyncio.sleep(0.3)
            target = tmp_path / f"backup-{index}.sqlite3"
            done = await asyncio.to_thread(agent.cli, "backup", str(target))
            assert done.returncode == 0, done.stderr
            assert f"written to {target}" in done.stdout
            # One self-contained file: rollback journal mode, no log beside it to forget.
            assert target.read_bytes()[18:20] == b"\x01\x01"
            assert not target.with_name(target.name + "-wal").exists()
            lengths.append(consistent(target))
    finally:
        selling = False
        sold = sum(await asyncio.gather(*sellers))
    assert sold > 0
    # Each backup is a later moment of the same journal, taken while the sales went on.
    assert lengths == sorted(lengths)
    assert lengths[0][1] < lengths[-1][1]


async def test_a_restore_refuses_a_running_agent_and_a_second_agent_refuses_to_start(
    agent: AgentProcess, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    till = till_of(agent, session)
    card = await till.register(PHONE)
    await till.sold(card, "100")
    target = tmp_path / "backup.sqlite3"
    assert agent.cli("backup", str(target)).returncode == 0
    await till.sold(card, "200")

    refused = agent.cli("restore", str(target))
    assert refused.returncode == 1
    assert "stop it first" in refused.stderr
    assert (await till.balance(card))["available"] == 15.0

    second = await asyncio.to_thread(
        subprocess.run,
        agent.cli_command("serve"),
        cwd=agent.work_dir,
        env={**agent._env(), "BONUS_AGENT_LISTEN_PORT": "1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert "bonus-agent is running" in second.stdout + second.stderr


async def test_a_restore_replaces_the_database_and_nothing_of_the_old_log_survives(
    agent: AgentProcess, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    till = till_of(agent, session)
    card = await till.register(PHONE)
    for _ in range(2):
        await till.sold(card, "100")
    target = tmp_path / "backup.sqlite3"
    assert agent.cli("backup", str(target)).returncode == 0
    for _ in range(3):
        await till.sold(card, "100")
    # Killed: the last commits may be in the log only, which must not be replayed into the
    # restored file.
    agent.kill()

    done = agent.cli("restore", str(target))
    assert done.returncode == 0, done.stderr
    assert "journal up to seq" in done.stdout
    assert not agent.db_path.with_name("agent.sqlite3-wal").exists()
    assert consistent(agent.db_path)[1] == 2
    kept = agent.db_path.with_name("agent.sqlite3.before-restore")
    assert sales_in(kept) == 5

    agent.start()
    till = till_of(agent, session)  # a new port each start
    assert (await till.balance(card))["available"] == 10.0
    await till.sold(card, "100")
    assert (await till.balance(card))["available"] == 15.0


#: ``bonus-agent restore`` that dies (``os._exit``, no clean-up of any kind, as under SIGKILL)
#: just before its N-th step on the file system.
DYING_RESTORE = """
import os, shutil, sys
from agent import cli

limit, steps = int(sys.argv[1]), 0

def dying(call):
    def step(*args, **kwargs):
        global steps
        steps += 1
        if steps == limit:
            os._exit(99)
        return call(*args, **kwargs)
    return step

for name in ("replace", "link", "unlink", "fsync", "chmod", "chown", "open"):
    setattr(os, name, dying(getattr(os, name)))
shutil.copyfile = dying(shutil.copyfile)
sys.exit(cli.main(["restore", *sys.argv[2:]]))
"""


async def test_a_restore_killed_at_any_step_leaves_the_old_database_or_the_new(
    agent: AgentProcess, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    till = till_of(agent, session)
    card = await till.register(PHONE)
    for _ in range(2):
        await till.sold(card, "100")
    new = tmp_path / "new.sqlite3"
    assert agent.cli("backup", str(new)).returncode == 0
    for _ in range(3):
        await till.sold(card, "100")
    # Killed, not stopped: the old database's last commits may be in its log.
    agent.kill()

    found = []
    for limit in itertools.count(1):
        dying = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", DYING_RESTORE, str(limit), str(new)],
            cwd=agent.work_dir,
            env=agent._env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        sales = consistent(agent.db_path)[1]
        found.append(sales)
        if dying.returncode == 0:
            assert sales == 2
            break
        assert dying.returncode == 99, dying.stderr
        assert sales in (2, 5), (limit, sales)
        if sales == 2:
            # Killed after the switch, while tidying up: start again from the old database.
            old = agent.db_path.with_name("agent.sqlite3.before-restore")
            shutil.copyfile(old, tmp_path / "old.sqlite3")
            assert agent.cli("restore", str(tmp_path / "old.sqlite3")).returncode == 0
        assert limit < 100, "the restore ends"
    print(f"restores killed before each of {len(found) - 1} steps: databases found {found}")
    assert found[0] == 5
    # What the agent starts on after the last one: the restored database, serving.
    agent.start()
    till = till_of(agent, session)
    assert (await till.balance(card))["available"] == 10.0


def killed_writer(path: Path, sales: int) -> None:
    """A database whose last commits are in its log only: written by a process that dies
    without closing it, as a killed agent does."""
    script = """
import os, sys
from datetime import UTC, datetime
from pathlib import Path
from agent import store
from agent.db import connect, migrate
from datetime import date
from decimal import Decimal
from shared.journal import Sale, SaleLine
line = SaleLine(line_id="1", sku="A", qty=Decimal(1), amount_kop=100, vital=False,
                accrued_kop=5, redeemed_kop=0)
conn = connect(Path(sys.argv[1]))  # never checkpoints by itself
migrate(conn)
conn.execute("BEGIN")
for index in range(int(sys.argv[2])):
    store.append_entry(
        conn, op_id=f"op-{index}", idem_key=f"R-{index}", request_hash="-",
        operation=Sale(card="1", receipt_id=f"R-{index}", day=date(2026, 12, 1), lines=(line,),
                       redeem_kop=0, settings_version=1),
        response={}, created_at=datetime.now(UTC),
    )
conn.execute("COMMIT")
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", script, str(path), str(sales)], check=True, timeout=30)
    assert path.with_name(path.name + "-wal").stat().st_size > 0


def test_a_restore_failing_just_before_its_switch_leaves_the_old_database_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path = tmp_path / "data" / "agent.sqlite3"
    db_path.parent.mkdir()
    source = tmp_path / "backup.sqlite3"
    killed_writer(source, 2)
    killed_writer(db_path, 5)
    replace = backup_module.os.replace

    def fail_at_the_switch(src: str | Path, dst: str | Path) -> None:
        if Path(dst) == db_path:
            raise OSError("the machine went down")
        replace(src, dst)

    monkeypatch.setattr(backup_module.os, "replace", fail_at_the_switch)
    with pytest.raises(OSError, match="went down"):
        backup_module.restore(source, db_path)
    assert not db_path.with_name("agent.sqlite3.restoring").exists()
    assert sales_in(db_path) == 5  # the commits of its log folded in, none lost
    monkeypatch.setattr(backup_module.os, "replace", replace)

    # A reader holding the old database (a backup running): refused, nothing changed.
    monkeypatch.setattr(backup_module, "BUSY_TIMEOUT_MS", 100)
    killed_writer(tmp_path / "busy.sqlite3", 1)
    replace(tmp_path / "busy.sqlite3", db_path)
    replace(tmp_path / "busy.sqlite3-wal", db_path.with_name("agent.sqlite3-wal"))
    with closing(sqlite3.connect(db_path)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM journal").fetchall()
        with pytest.raises(backup_module.BackupError, match="in use"):
            backup_module.restore(source, db_path)
    assert sales_in(db_path) == 1

    backup_module.restore(source, db_path)
    assert sales_in(db_path) == 2
    assert not db_path.with_name("agent.sqlite3-wal").exists()
