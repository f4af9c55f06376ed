"""Reading the database without changing it (for `doctor`): no migration, no
WAL checkpoint, nothing created. Raises sqlite3.DatabaseError if unreadable."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def _open(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def health(path: Path) -> tuple[str, int]:
    """SQLite's quick_check verdict ("ok" or the first problem) and the schema version."""
    conn = _open(path)
    try:
        ok = str(conn.execute("PRAGMA quick_check").fetchone()[0])
        version = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        return ok, int(version or 0)
    finally:
        conn.close()


def box_summaries(path: Path) -> list[tuple[str, str, str]]:
    """(id, name, status) of every box row."""
    conn = _open(path)
    try:
        return [(r[0], r[1], r[2]) for r in conn.execute("SELECT id, name, status FROM boxes")]
    finally:
        conn.close()


def pool_summaries(path: Path) -> list[tuple[str, dict[str, object], int, list[str]]]:
    """(id, shape, size, ids of its spare boxes) of every pool; none before schema 3."""
    conn = _open(path)
    try:
        try:
            rows = conn.execute("SELECT id, spec, size FROM pools ORDER BY created_at").fetchall()
        except sqlite3.OperationalError:  # no such table: a database from before pools
            return []
        spares: dict[str, list[str]] = {}
        for box_id, pool in conn.execute(
                "SELECT id, json_extract(spec, '$._pool') FROM boxes WHERE status='spare'"):
            spares.setdefault(pool, []).append(box_id)
        return [(r[0], json.loads(r[1]), int(r[2]), spares.get(r[0], [])) for r in rows]
    finally:
        conn.close()
