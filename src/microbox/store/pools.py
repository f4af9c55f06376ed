"""Pool rows: the shape of a pool's spare boxes and how many to keep (core/pool.py)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field

from microbox.spec import BoxSpec
from microbox.store.db import Database


@dataclass(frozen=True)
class PoolRow:
    id: str
    spec: BoxSpec  # the shape: image, cpus, memory, accelerator, kernel, network mode
    size: int
    created_at: float = field(default_factory=time.time)


def _from_row(row: sqlite3.Row) -> PoolRow:
    return PoolRow(id=row["id"], spec=BoxSpec.from_json(json.loads(row["spec"])),
                   size=row["size"], created_at=row["created_at"])


def put(db: Database, pool: PoolRow) -> None:
    """Add the pool, or set the size of the one with its id."""
    with db.tx() as c:
        c.execute("INSERT INTO pools (id, spec, size, created_at) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT(id) DO UPDATE SET size=excluded.size",
                  (pool.id, json.dumps(pool.spec.to_json(), sort_keys=True), pool.size,
                   pool.created_at))


def get(db: Database, pool_id: str) -> PoolRow | None:
    row = db.conn.execute("SELECT * FROM pools WHERE id=?", (pool_id,)).fetchone()
    return None if row is None else _from_row(row)


def all_pools(db: Database) -> list[PoolRow]:
    rows = db.conn.execute("SELECT * FROM pools ORDER BY created_at").fetchall()
    return [_from_row(r) for r in rows]


def delete(db: Database, pool_id: str) -> None:
    with db.tx() as c:
        c.execute("DELETE FROM pools WHERE id=?", (pool_id,))
