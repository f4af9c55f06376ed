"""Box rows: durable intent about each box (never its liveness)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field, replace
from typing import Any

from microbox.errors import NotFound, UsageError
from microbox.spec import BoxSpec
from microbox.store.db import Database
from microbox.store.status import Status

# Before schema 4 these rode in the spec JSON beside the user's fields, under
# these keys; migration 4 made them columns. A row an older microbox still
# running writes after the migration keeps them there, so reads look there too.
_IN_SPEC = {"_pending_create": "pending", "image_digest": "image_digest", "_pool": "pool",
            "_spare_key": "spare_key"}


@dataclass(frozen=True)
class BoxRecord:
    """One box as the database knows it. `spec` is what the user asked for;
    `pending` marks a create that exists only if its first start succeeds. A
    spare names its pool and the template key its VM was made for."""

    id: str
    name: str
    image: str
    spec: BoxSpec
    status: Status
    auto_remove: bool = False
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    pid_start: float | None = None
    last_error: str | None = None
    image_digest: str | None = None
    pending: bool = False
    pool: str | None = None
    spare_key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):  # a str from a caller; ValueError if no status
            object.__setattr__(self, "status", Status(self.status))

    def with_(self, **changes: Any) -> BoxRecord:
        return replace(self, **changes)


def _from_row(row: sqlite3.Row) -> BoxRecord:
    stored = json.loads(row["spec"])
    old = {field: stored.pop(key) for key, field in _IN_SPEC.items() if key in stored}
    return BoxRecord(
        id=row["id"], name=row["name"], image=row["image"], spec=BoxSpec.from_json(stored),
        image_digest=row["image_digest"] or old.get("image_digest"),
        pending=bool(row["pending"] or old.get("pending")),
        pool=row["pool"] or old.get("pool"), spare_key=row["spare_key"] or old.get("spare_key"),
        status=Status(row["status"]), auto_remove=bool(row["auto_remove"]),
        created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], pid=row["pid"], pid_start=row["pid_start"],
        last_error=row["last_error"],
    )


_COLUMNS = ("id", "name", "image", "spec", "status", "auto_remove", "created_at",
            "started_at", "finished_at", "pid", "pid_start", "last_error", "pending",
            "image_digest", "pool", "spare_key")


def _values(r: BoxRecord) -> tuple[Any, ...]:
    return (r.id, r.name, r.image, json.dumps(r.spec.to_json(), sort_keys=True), r.status,
            int(r.auto_remove), r.created_at, r.started_at, r.finished_at, r.pid,
            r.pid_start, r.last_error, int(r.pending), r.image_digest, r.pool, r.spare_key)


def check_name_free(conn: sqlite3.Connection, name: str) -> None:
    if conn.execute("SELECT 1 FROM boxes WHERE name=?", (name,)).fetchone():
        raise UsageError(f"the name {name!r} is already taken by another box",
                         f"microbox delete {name}")


def get(db: Database, box_id: str) -> BoxRecord | None:
    row = db.conn.execute("SELECT * FROM boxes WHERE id=?", (box_id,)).fetchone()
    return None if row is None else _from_row(row)


def insert(db: Database, record: BoxRecord) -> None:
    with db.tx() as c:
        check_name_free(c, record.name)  # again, inside the transaction: the check that counts
        c.execute(f"INSERT INTO boxes ({','.join(_COLUMNS)}) VALUES "
                  f"({','.join('?' * len(_COLUMNS))})", _values(record))


def update(db: Database, *records: BoxRecord) -> None:
    """Write the records, all in one transaction."""
    sets = ",".join(f"{c}=?" for c in _COLUMNS[1:])
    with db.tx() as c:
        for record in records:
            c.execute(f"UPDATE boxes SET {sets} WHERE id=?", (*_values(record)[1:], record.id))


def update_if(db: Database, record: BoxRecord, status: Status) -> bool:
    """Write the record if its row's status is still `status`; False if another
    command changed it first (so one of them, not both, acts on the change)."""
    sets = ",".join(f"{c}=?" for c in _COLUMNS[1:])
    with db.tx() as c:
        done = c.execute(f"UPDATE boxes SET {sets} WHERE id=? AND status=?",
                         (*_values(record)[1:], record.id, status))
        return done.rowcount == 1


def delete(db: Database, box_id: str) -> bool:
    """Remove the row; False if it was gone already."""
    with db.tx() as c:
        return c.execute("DELETE FROM boxes WHERE id=?", (box_id,)).rowcount == 1


def all_boxes(db: Database) -> list[BoxRecord]:
    rows = db.conn.execute("SELECT * FROM boxes ORDER BY created_at").fetchall()
    return [_from_row(r) for r in rows]


def resolve(db: Database, ref: str) -> BoxRecord:
    """Find a box by name, full id or unique id prefix."""
    row = db.conn.execute("SELECT * FROM boxes WHERE name=? OR id=?", (ref, ref)).fetchone()
    if row is not None:
        return _from_row(row)
    if ref and all(ch in "0123456789abcdef" for ch in ref):
        rows = db.conn.execute("SELECT * FROM boxes WHERE id LIKE ? ORDER BY created_at",
                               (ref + "%",)).fetchall()
        if len(rows) == 1:
            return _from_row(rows[0])
        if len(rows) > 1:
            names = ", ".join(f"{r['name']} ({r['id'][:12]})" for r in rows)
            raise UsageError(f"the id prefix {ref!r} matches {len(rows)} boxes: {names}; "
                             "give more characters")
    raise NotFound(f"no box named or with id {ref!r}", "microbox list --all")


def spares(db: Database, *, pool: str | None = None,
           key: str | None = None) -> list[BoxRecord]:
    """Spare boxes, oldest first: of one pool, or made for one template key."""
    query, args = "SELECT * FROM boxes WHERE status=?", [str(Status.SPARE)]
    if pool is not None:
        query, args = query + " AND pool=?", [*args, pool]
    if key is not None:
        query, args = query + " AND spare_key=?", [*args, key]
    rows = db.conn.execute(query + " ORDER BY created_at", args).fetchall()
    return [_from_row(r) for r in rows]


def any_spare(db: Database) -> bool:
    return db.conn.execute("SELECT 1 FROM boxes WHERE status=? LIMIT 1",
                           (Status.SPARE,)).fetchone() is not None


def take_spare(db: Database, record: BoxRecord, claimed: BoxRecord) -> bool:
    """Turn the spare `record` into `claimed` if no other command took it first
    (and the name is free); False if it was taken."""
    sets = ",".join(f"{c}=?" for c in _COLUMNS[1:])
    with db.tx() as c:
        if claimed.name != record.name:
            check_name_free(c, claimed.name)
        done = c.execute(f"UPDATE boxes SET {sets} WHERE id=? AND status=?",
                         (*_values(claimed)[1:], record.id, Status.SPARE))
        return done.rowcount == 1
