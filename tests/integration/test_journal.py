"""The journal: durable appends (kill -9 loses nothing acknowledged), state, paging and filters."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.runtime.journal import Journal

WRITER = textwrap.dedent("""
    import asyncio, sys, time
    from engine.runtime.journal import Journal

    async def main():
        journal = Journal.open(sys.argv[1])
        i = 0
        while True:
            # a few writers at once, as probes and the decision loop do
            ids = await asyncio.gather(*(journal.append("test", f"event {i}-{j}", service="api",
                                                        at=time.time(), data={"i": i, "j": j})
                                         for j in range(4)))
            for j, event_id in enumerate(ids):
                print(f"ack {event_id} event {i}-{j}", flush=True)
            i += 1

    asyncio.run(main())
""")


def test_kill_9_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """Every event acknowledged before SIGKILL is in the journal afterwards."""
    db = tmp_path / "journal.db"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True,
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    acked: dict[int, str] = {}
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            _, event_id, message = line.rstrip("\n").split(" ", 2)
            acked[int(event_id)] = message
            if len(acked) >= 400:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    async def read_back() -> dict[int, str]:
        journal = Journal.open(db)
        try:
            return {e.id: e.message for e in journal.events(limit=1000)}
        finally:
            await journal.close()

    stored = asyncio.run(read_back())
    missing = {i: m for i, m in acked.items() if stored.get(i) != m}
    assert not missing, f"{len(missing)} acknowledged events lost"


@pytest.fixture
async def journal(tmp_path: Path):  # type: ignore[no-untyped-def]
    j = Journal.open(tmp_path / "j.db")
    yield j
    await j.close()


async def test_events_filter_and_page(journal: Journal) -> None:
    """Events come newest first, filter by service, kind and time, and page with before_id."""
    for i in range(25):
        await journal.append("signal" if i % 2 else "decision", f"m{i}", service="api" if i < 20 else "db",
                             at=1000.0 + i)
    page1 = journal.events(service="api", limit=10)
    assert [e.message for e in page1] == [f"m{i}" for i in range(19, 9, -1)]
    page2 = journal.events(service="api", limit=10, before_id=page1[-1].id)
    assert [e.message for e in page2] == [f"m{i}" for i in range(9, -1, -1)]
    assert [e.message for e in journal.events(kind="decision", since=1018.0)] == ["m24", "m22", "m20", "m18"]
    assert [e.message for e in journal.events(until=1001.0)] == ["m1", "m0"]


async def test_state_round_trip(journal: Journal) -> None:
    """State values are stored as JSON per service and overwritten in place."""
    await journal.put_state("api", "active", "gcp", at=1.0)
    await journal.put_state("api", "epoch", 3, at=1.0)
    await journal.put_state("api", "active", "azure", at=2.0)
    assert journal.get_state("api", "active") == "azure"
    assert journal.all_state("api") == {"active": "azure", "epoch": 3}
    assert journal.get_state("db", "active", "none") == "none"


async def test_a_failing_write_fails_alone(journal: Journal) -> None:
    """A write that raises fails its own caller; writes batched with it still commit."""

    def bad(_conn: object) -> None:
        raise ValueError("bad op")

    results = await asyncio.gather(journal.write(bad), journal.append("x", "kept", at=1.0),
                                   return_exceptions=True)
    assert isinstance(results[0], ValueError)
    assert [e.message for e in journal.events()] == ["kept"]


async def test_wal_mode(journal: Journal) -> None:
    """The journal runs in WAL mode with full synchronous commits."""
    rows = journal._read("PRAGMA journal_mode")
    assert rows[0][0] == "wal"


async def test_a_cancelled_writer_does_not_break_the_journal(journal: Journal) -> None:
    """A caller cancelled while its write is queued leaves the writer alive; the write still lands."""
    tasks = [asyncio.create_task(journal.append("x", f"m{i}", at=float(i))) for i in range(50)]
    await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert await asyncio.wait_for(journal.append("x", "after", at=99.0), 5) > 0
    assert journal.events(limit=1)[0].message == "after"


@pytest.fixture
def umask_022():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)  # the usual umask, which would leave new files world-readable
    yield
    os.umask(old)


def modes(*paths: Path) -> list[int]:
    return [path.stat().st_mode & 0o777 for path in paths]


@pytest.mark.usefixtures("umask_022")
def test_new_journal_is_private(tmp_path: Path) -> None:
    """A journal created in a new directory: the directories made are 0700, the database and its WAL files 0600."""
    db = tmp_path / "var" / "lib" / "engine" / "journal.db"
    tmp_path.chmod(0o755)

    async def open_and_write() -> list[int]:
        journal = Journal.open(db)
        try:
            await journal.append("test", "one", at=1.0)
            return modes(tmp_path / "var", tmp_path / "var" / "lib", db.parent,
                         db, db.with_name("journal.db-wal"), db.with_name("journal.db-shm"))
        finally:
            await journal.close()

    assert asyncio.run(open_and_write()) == [0o700] * 3 + [0o600] * 3
    assert modes(tmp_path) == [0o755], "a directory that existed is left as it was"


@pytest.mark.usefixtures("umask_022")
def test_existing_journal_is_tightened(tmp_path: Path) -> None:
    """A journal left 0644 by an older engine is made 0600 on open, its WAL file too."""
    db, wal = tmp_path / "journal.db", tmp_path / "journal.db-wal"
    for path in (db, wal):
        path.touch()
        path.chmod(0o644)

    async def open_and_write() -> list[int]:
        journal = Journal.open(db)
        try:
            await journal.append("test", "one", at=1.0)
            return modes(db, wal)
        finally:
            await journal.close()

    assert asyncio.run(open_and_write()) == [0o600, 0o600]


async def test_writable_turns_false_when_the_disk_is_full(journal: Journal) -> None:
    """A write that fails for lack of space marks the journal unwritable; the next committed write clears it."""
    await journal.append("test", "before", at=1.0)
    assert journal.writable is True
    pages = await journal.write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    await journal.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))
    with pytest.raises(sqlite3.OperationalError, match="full"):
        await journal.append("test", "x" * 100_000, at=2.0)
    assert journal.writable is False
    await journal.write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
    await journal.append("test", "after", at=3.0)
    assert journal.writable is True


async def test_one_open_operation_per_service_is_claimed_atomically(tmp_path: Path) -> None:
    """Many claims in one batch: the first wins, the others get its body; once it is final a new claim succeeds."""
    from engine.core.operations import Operation, OpState

    journal = Journal.open(tmp_path / "j.db")
    try:
        ops = [Operation(f"api-e2-{i}", "api", "failover", "gcp", "azure", 1, 2, "manual", created_at=100.0 + i)
               for i in range(8)]
        results = await asyncio.gather(*(journal.claim_operation(op) for op in ops))
        winners = [op for op, r in zip(ops, results, strict=True) if r is None]
        assert len(winners) == 1
        assert {r["id"] for r in results if r is not None} == {winners[0].id}
        other = Operation("web-e2-x", "web", "failover", "gcp", "azure", 1, 2, "auto", created_at=200.0)
        assert await journal.claim_operation(other) is None  # another service is not blocked
        winners[0].state = OpState.DONE
        await journal.save_operation(winners[0])
        later = Operation("api-e3-y", "api", "failback", "azure", "gcp", 2, 3, "manual", created_at=300.0)
        assert await journal.claim_operation(later) is None
    finally:
        await journal.close()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "deleted"])
async def test_a_lost_journal_is_refused_never_reset(tmp_path: Path, damage: str) -> None:
    """A journal that is truncated, corrupt or deleted (its birth mark remains) stops the open with a clear reason;
    with begin_new the bad file is kept aside and a new journal begins, saying why."""
    from engine.runtime.journal import JournalLost

    path = tmp_path / "state" / "journal.db"
    journal = Journal.open(path)
    await journal.put_state("api", "epoch", 7, at=1.0)
    await journal.close()
    for side in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        side.unlink(missing_ok=True)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        path.unlink()
    with pytest.raises(JournalLost) as refused:
        Journal.open(path)
    assert "--new-journal" in str(refused.value) and str(path) in str(refused.value)
    fresh = Journal.open(path, begin_new=True)
    try:
        assert fresh.began_anew is not None and fresh.get_state("api", "epoch") is None
        if damage != "deleted":
            assert any(p.name.startswith("journal.db.lost-") for p in path.parent.iterdir())
    finally:
        await fresh.close()
    again = Journal.open(path)  # the new journal is a journal like any other from now on
    await again.close()


async def test_a_first_start_needs_no_flag(tmp_path: Path) -> None:
    """No journal and no birth mark: a first start creates both; nothing is refused."""
    journal = Journal.open(tmp_path / "new" / "journal.db")
    try:
        assert journal.began_anew is None and (tmp_path / "new" / "journal.db.born").exists()
    finally:
        await journal.close()
