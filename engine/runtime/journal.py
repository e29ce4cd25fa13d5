"""The journal: SQLite in WAL mode, fsync on every commit, written by one thread.

Holds the audit log (``events``) and small per-service state (``state``: the active site, epoch,
last known primary commit point...). An append returns only after its transaction is durable, so
an acknowledged event survives ``kill -9``. Appends that arrive together share one commit (group
commit): durability per event, throughput per batch.

Reads use their own connection (WAL lets readers run beside the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    service TEXT,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    actor TEXT,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_service_at ON events(service, at);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_service ON operations(service, created_at);
CREATE TABLE IF NOT EXISTS drills (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drills_service ON drills(service, kind, started_at);
CREATE TABLE IF NOT EXISTS state (
    service TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (service, key)
);
"""


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: float
    service: str | None
    kind: str
    message: str
    actor: str | None
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "service": self.service, "kind": self.kind,
                "message": self.message, "actor": self.actor, "data": self.data}


Op = Callable[[sqlite3.Connection], Any]
_STOP = object()


class JournalLost(RuntimeError):
    """The journal cannot be read (gone, truncated, corrupt): the engine refuses to start on it."""


def _unreadable(target: Path) -> str | None:
    """Why the journal at ``target`` cannot be trusted, or None (readable, or never created: a first start)."""
    born = Path(f"{target}.born")
    if not target.exists():
        return (f"the journal is gone (it was created {_born_at(born)}; its birth mark {born.name} is still there)"
                if born.exists() else None)
    if target.stat().st_size == 0:
        return None if not born.exists() else "the journal is empty (truncated)"
    try:
        conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("PRAGMA quick_check").fetchone()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"the journal cannot be read ({exc})"
    if row is None or row[0] != "ok":
        return f"the journal is corrupt (quick_check: {row[0] if row else 'no answer'})"
    if born.exists() and not {"events", "state", "operations"} <= tables:
        return "the journal lacks its tables (truncated or replaced)"
    return None


def _born_at(born: Path) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(born.read_text().split()[0])))
    except (OSError, ValueError, IndexError):
        return "earlier"


class JournalClosed(RuntimeError):
    """The journal was closed; nothing more can be written."""


def _settle(future: Future[Any], value: Any, error: BaseException | None) -> None:
    """Resolve a caller's future; a caller that gave up (cancelled) is simply not told.

    The write itself was already committed: cancellation cannot undo durability, and it must
    never kill the writer thread (every later write would hang).
    """
    if future.cancelled():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except InvalidStateError:
        pass


def _private_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parents with mode 0700 (the umask could only widen nothing)."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        new.mkdir(mode=0o700)
        new.chmod(0o700)  # mkdir's mode is masked by the umask; make it exact


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class Journal:
    """Durable events and state. Create with :meth:`open`; ``await close()`` at the end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer = _connect(path)
        self._writer.executescript(SCHEMA)
        with contextlib.suppress(sqlite3.IntegrityError):  # a journal written before the rule: the claim still holds
            self._writer.execute("CREATE UNIQUE INDEX IF NOT EXISTS operations_one_open ON operations(service) "
                                 "WHERE state IN ('running', 'halted')")
        self._reader = _connect(path)
        self._read_lock = threading.Lock()
        self._closed = False
        self.began_anew: str | None = None  # set by open(begin_new=True): why the previous journal was unreadable
        self.writable = True  # False after a batch failed to commit, True again after the next one commits
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: str | Path, *, begin_new: bool = False) -> Journal:
        """Open (or create) the journal at ``path``. Private by default: a directory made here is 0700 and
        the database 0600 (SQLite gives its -wal and -shm files the database's mode); an existing database
        is tightened to 0600, an existing directory is left as it is (it may be shared, e.g. a working dir).

        A journal is never reset silently: one that cannot be read (truncated, corrupt, not a database) or one
        that is gone while its birth mark (``<path>.born``) is still there raises :class:`JournalLost`, unless
        ``begin_new`` (``failover-engine run --new-journal``): the unreadable file is kept aside as
        ``<path>.lost-<time>`` and a new journal begins (``began_anew`` says why, for the event)."""
        target = Path(path)
        began_anew: str | None = None
        if str(target) != ":memory:":
            _private_dirs(target.parent)
            problem = _unreadable(target)
            if problem is not None and not begin_new:
                raise JournalLost(f"journal.path {target}: {problem}; the engine does not start on a journal it "
                                  "cannot read (its epoch, pause, breaker and operations would be forgotten). "
                                  "Restore it from a backup, or start with --new-journal to begin a new one "
                                  "(the epoch is then taken from DNS and the peers before any move)")
            if problem is not None:
                aside = target.with_name(f"{target.name}.lost-{int(time.time())}")
                if target.exists():
                    target.rename(aside)
                for side in (Path(f"{target}-wal"), Path(f"{target}-shm")):
                    side.unlink(missing_ok=True)
                began_anew = f"{problem}; the old file is kept as {aside.name}" if aside.exists() else problem
            born = Path(f"{target}.born")
            if not born.exists():
                born.write_text(f"{time.time()}\n")
                born.chmod(0o600)
            fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)  # created 0600 whatever the umask allows
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
            for side in (Path(f"{target}-wal"), Path(f"{target}-shm")):  # left by an older engine, maybe 0644
                if side.exists():
                    side.chmod(0o600)
        journal = cls(str(target))
        journal.began_anew = began_anew
        return journal

    # -- writing ---------------------------------------------------------------------------------
    def _run(self) -> None:
        conn = self._writer
        while True:
            item = self._queue.get()
            batch = [item]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(i is _STOP for i in batch)
            work = [i for i in batch if i is not _STOP]
            if work:
                try:
                    self.writable = self._commit(conn, work)
                except Exception as exc:  # the writer must outlive any one bad batch
                    self.writable = False
                    for _, future in work:
                        _settle(future, None, exc)
            if stop:
                conn.close()
                return

    @staticmethod
    def _commit(conn: sqlite3.Connection, work: list[tuple[Op, Future[Any]]]) -> bool:
        """Run a batch in one transaction; False when the journal could not write (commit failed, disk full...)."""
        results: list[tuple[Future[Any], Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for op, future in work:
            conn.execute("SAVEPOINT op")
            try:
                results.append((future, op(conn), None))
                conn.execute("RELEASE op")
            except Exception as exc:  # one bad op fails alone, the batch commits
                if not conn.in_transaction:  # SQLite rolled the whole batch back itself (disk full, I/O error)
                    raise
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                results.append((future, None, exc))
        try:
            conn.execute("COMMIT")
        except Exception as exc:
            conn.execute("ROLLBACK")
            for future, _, _ in results:
                _settle(future, None, exc)
            return False
        for future, value, error in results:
            _settle(future, value, error)
        # a bad op (a constraint) is the caller's problem; disk full, I/O error or read-only is the journal's
        return not any(isinstance(error, sqlite3.OperationalError) for _, _, error in results)

    def submit(self, op: Op) -> Future[Any]:
        """Queue a write; the future resolves once it is committed and fsynced."""
        if self._closed:
            raise JournalClosed("journal is closed")
        future: Future[Any] = Future()
        self._queue.put((op, future))
        return future

    async def write(self, op: Op) -> Any:
        return await asyncio.wrap_future(self.submit(op))

    async def append(self, kind: str, message: str, *, service: str | None = None, at: float,
                     actor: str | None = None, data: dict[str, Any] | None = None) -> int:
        """Record an event durably; returns its id."""
        payload = json.dumps(data or {}, default=str, sort_keys=True)

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO events(at, service, kind, message, actor, data) VALUES (?,?,?,?,?,?)",
                (at, service, kind, message, actor, payload))
            return int(cur.lastrowid or 0)

        return int(await self.write(op))

    async def put_state(self, service: str, key: str, value: Any, *, at: float) -> None:
        payload = json.dumps(value, default=str, sort_keys=True)
        await self.write(lambda conn: conn.execute(
            "INSERT INTO state(service, key, value, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT(service, key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (service, key, payload, at)))

    async def save_operation(self, op: Any) -> None:
        """Store a runbook operation (its steps included) durably; see :mod:`engine.runtime.runner`."""
        body = json.dumps(op.to_dict(), default=str, sort_keys=True)
        now = op.finished_at or op.created_at
        await self.write(lambda conn: conn.execute(
            "INSERT INTO operations(id, service, state, created_at, updated_at, body) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET state=excluded.state, updated_at=excluded.updated_at, "
            "body=excluded.body", (op.id, op.service, str(op.state), op.created_at, now, body)))

    async def claim_operation(self, op: Any) -> dict[str, Any] | None:
        """The one atomic claim per service: in one transaction, find no open operation (running or halted) of
        ``op.service`` and insert ``op``; None when it was claimed, else the body of the open one that won.
        Every starter goes through here (API, scheduler, drills, automatic decisions), so two requests at once
        can never both start a runbook; a partial unique index backs the rule in the schema itself."""
        body = json.dumps(op.to_dict(), default=str, sort_keys=True)

        def claim(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT body FROM operations WHERE service = ? AND state IN ('running', 'halted') "
                               "ORDER BY created_at LIMIT 1", (op.service,)).fetchone()
            if row is not None:
                return dict(json.loads(row[0]))
            conn.execute("INSERT INTO operations(id, service, state, created_at, updated_at, body) "
                         "VALUES (?,?,?,?,?,?)", (op.id, op.service, str(op.state), op.created_at, op.created_at,
                                                  body))
            return None

        result: dict[str, Any] | None = await self.write(claim)
        return result

    async def save_step(self, op: Any, _name: str, _record: dict[str, Any]) -> None:
        """A step changed: the whole operation is rewritten in one durable transaction."""
        await self.save_operation(op)

    def operation(self, op_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT body FROM operations WHERE id=?", (op_id,))
        return json.loads(rows[0][0]) if rows else None

    def operations(self, *, service: str | None = None, state: str | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:
        return self._bodies("operations", "created_at", limit, service=service, state=state)

    async def save_drill(self, drill: dict[str, Any]) -> None:
        """Store a drill report (see :mod:`engine.runtime.drills`) durably; rewritten as the drill goes on."""
        body = json.dumps(drill, default=str, sort_keys=True)
        await self.write(lambda conn: conn.execute(
            "INSERT INTO drills(id, service, kind, state, started_at, body) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET state=excluded.state, body=excluded.body",
            (drill["id"], drill["service"], drill["kind"], drill["state"], drill["started_at"], body)))

    def drill(self, drill_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT body FROM drills WHERE id=?", (drill_id,))
        return json.loads(rows[0][0]) if rows else None

    def drills(self, *, service: str | None = None, kind: str | None = None, state: str | None = None,
               limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        return self._bodies("drills", "started_at", limit, service=service, kind=kind, state=state)

    def count_operations(self, *, since: float, trigger: str, service: str | None = None) -> int:
        """Operations started at or after ``since`` by ``trigger`` (counted in SQLite, no body is parsed)."""
        sql = "SELECT count(*) FROM operations WHERE created_at >= ? AND json_extract(body, '$.trigger') = ?"
        params: list[Any] = [since, trigger]
        if service is not None:
            sql += " AND service = ?"
            params.append(service)
        return int(self._read(sql, params)[0][0])

    def _bodies(self, table: str, newest: str, limit: int, **equal: str | None) -> list[dict[str, Any]]:
        """The JSON bodies of ``table`` whose columns equal the given values (None: any), newest first."""
        given = {column: value for column, value in equal.items() if value is not None}
        sql = f"SELECT body FROM {table}" + (" WHERE " + " AND ".join(f"{c} = ?" for c in given) if given else "")
        sql += f" ORDER BY {newest} DESC LIMIT ?"
        return [json.loads(r[0]) for r in self._read(sql, [*given.values(), limit])]

    # -- reading ---------------------------------------------------------------------------------
    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            return list(self._reader.execute(sql, tuple(params)).fetchall())

    def get_state(self, service: str, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM state WHERE service=? AND key=?", (service, key))
        return json.loads(rows[0][0]) if rows else default

    def all_state(self, service: str) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._read(
            "SELECT key, value FROM state WHERE service=?", (service,))}

    def events(self, *, service: str | None = None, kind: str | None = None, since: float | None = None,
               until: float | None = None, before_id: int | None = None, limit: int = 100) -> list[Event]:
        """Newest first; page with ``before_id`` (the smallest id of the previous page)."""
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (("service = ?", service), ("kind = ?", kind), ("at >= ?", since),
                              ("at <= ?", until), ("id < ?", before_id)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT id, at, service, kind, message, actor, data FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(1, min(limit, 1000)))
        return [Event(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in self._read(sql, params)]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        with self._read_lock:
            self._reader.close()
