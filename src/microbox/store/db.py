"""The SQLite database: WAL, a busy timeout, numbered migrations.

It holds durable intent only (what boxes and images exist and what the user
asked for). Whether a box's VM is alive is read from the OS, never from here.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from microbox import diskspace
from microbox.errors import CorruptDatabase, DiskFull, HostError
from microbox.store.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


def database_error(exc: sqlite3.Error, path: Path) -> HostError:
    """What SQLite's `exc` on the database `path` means, said one way for every
    command, doctor and the read-only readers. A full disk is not a corrupt
    file: SQLITE_FULL, or an I/O error on a filesystem with next to no room (a
    WAL open that cannot size its -shm file), is DiskFull; only SQLITE_CORRUPT
    and SQLITE_NOTADB say the file is damaged."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        fs = diskspace.of(path.parent)
        if primary == sqlite3.SQLITE_FULL or fs.nearly_full:
            return DiskFull(f"the disk holding {path.parent} is full "
                            f"({fs.free // diskspace.MIB} MiB free)")
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return CorruptDatabase(f"the database {path} is corrupt ({exc})", "microbox doctor")
    return HostError(f"the database {path} is unreadable ({exc}, {name})", "microbox doctor")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class _Held:
    """A thread's connection; closed when the thread ends (its locals are freed).

    Not in a forked child: fork copies SQLite's mutexes as other threads held
    them, and the child frees those threads' locals, so closing there can wait
    for ever (seen: a VMM fork hung in sqlite3_finalize while 20 boxes booted).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()

    def __del__(self) -> None:
        if os.getpid() != self.pid:
            return
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


class Database:
    """One database file, safe to use from any number of threads.

    Each thread gets its own connection: a sqlite3 connection carries one
    transaction at a time, so sharing one between threads interleaves their
    BEGIN/COMMITs ("cannot start a transaction within a transaction") and loses
    writes. Writers queue on SQLite's own lock (BEGIN IMMEDIATE, busy timeout).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._held: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._held_lock = threading.Lock()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise database_error(exc, path) from None

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is None:
            held = _Held(_connect(self.path))
            self._local.held = held
            with self._held_lock:
                self._held.add(held)
        return held.conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent writers queue on the
        lock. A full disk or a corrupt file comes out as database_error says."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            err = database_error(exc, self.path)
            if isinstance(err, (DiskFull, CorruptDatabase)):
                raise err from None
            raise

    def _migrate(self) -> None:
        with self.tx() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            row = c.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        current = row[0] or 0
        if current > len(MIGRATIONS):
            raise HostError(
                f"the database {self.path} was written by a newer microbox "
                f"(schema {current}, this one knows {len(MIGRATIONS)})",
                "pip install --upgrade microbox",
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            with self.tx() as c:
                again = c.execute("SELECT 1 FROM schema_migrations WHERE version=?",
                                  (version,)).fetchone()
                if again:  # another process applied it while we waited
                    continue
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))

    @property
    def schema_version(self) -> int:
        row = self.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        """Close every thread's connection (a thread that uses it again reopens)."""
        with self._held_lock:
            held = list(self._held)
            self._held.clear()
        for h in held:
            with contextlib.suppress(sqlite3.Error):
                h.conn.close()
        self._local = threading.local()
