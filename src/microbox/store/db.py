"""The SQLite database: WAL, a busy timeout, numbered migrations.

It holds durable intent only (what boxes and images exist and what the user
asked for). Whether a box's VM is alive is read from the OS, never from here.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from microbox.errors import HostError
from microbox.store.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.conn = _connect(path)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise HostError(
                f"the database {path} is unreadable ({exc})",
                "microbox doctor",
            ) from None

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent writers queue on the lock."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

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
        self.conn.close()
