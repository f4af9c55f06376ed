"""Reading the database without changing it (for `doctor` and `kill`): no
migration, no WAL checkpoint, nothing created. A database that cannot be read
raises what store.db.database_error makes of SQLite's error (DiskFull,
CorruptDatabase or HostError)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from microbox.store.db import database_error
from microbox.store.status import Status


@contextmanager
def _open(path: Path) -> Iterator[sqlite3.Connection]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            yield conn
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise database_error(exc, path) from None


def health(path: Path) -> tuple[str, int]:
    """SQLite's quick_check verdict ("ok" or the first problem) and the schema version."""
    with _open(path) as conn:
        ok = str(conn.execute("PRAGMA quick_check").fetchone()[0])
        version = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        return ok, int(version or 0)


def box_summaries(path: Path) -> list[tuple[str, str, str]]:
    """(id, name, status) of every box row."""
    with _open(path) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute("SELECT id, name, status FROM boxes")]


def pool_summaries(path: Path) -> list[tuple[str, dict[str, object], int, list[str]]]:
    """(id, shape, size, ids of its spare boxes) of every pool; none before schema 3."""
    with _open(path) as conn:
        try:
            rows = conn.execute("SELECT id, spec, size FROM pools ORDER BY created_at").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return []  # a database from before pools
        # before schema 4 (doctor reads without migrating) a spare's pool was in its spec
        columns = {r[1] for r in conn.execute("PRAGMA table_info(boxes)")}
        pool = "pool" if "pool" in columns else "json_extract(spec, '$._pool')"
        spares: dict[str, list[str]] = {}
        for box_id, pid in conn.execute(f"SELECT id, {pool} FROM boxes WHERE status=?",
                                        (Status.SPARE,)):
            spares.setdefault(pid, []).append(box_id)
        return [(r[0], json.loads(r[1]), int(r[2]), spares.get(r[0], [])) for r in rows]
