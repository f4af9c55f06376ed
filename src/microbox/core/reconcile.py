"""Reconcile a box's stored status with reality before acting on it.

The database holds intent; the box lock says whether a VMM is alive. A box
the database calls running whose lock is free has crashed: it becomes
`error`, and every action on it fails with one sentence naming the way out.
"""

from __future__ import annotations

from microbox import paths
from microbox.core.boxdir import BoxDir
from microbox.errors import StateError
from microbox.store import boxes
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database

LIVE = ("running", "paused")
CRASHED = "its process has exited"


def box_dir(record: BoxRecord) -> BoxDir:
    return BoxDir(paths.boxes_dir() / record.id)


def observe(record: BoxRecord) -> BoxRecord:
    """The record as reality has it (not persisted)."""
    if record.status in LIVE and not box_dir(record).alive():
        return record.with_(status="error", pid=None, pid_start=None, last_error=CRASHED)
    return record


def reconcile(db: Database, record: BoxRecord) -> BoxRecord:
    seen = observe(record)
    if seen != record:
        boxes.update(db, seen)
    return seen


def reconcile_all(db: Database) -> list[BoxRecord]:
    return [reconcile(db, r) for r in boxes.all_boxes(db)]


def require(record: BoxRecord, *allowed: str) -> None:
    """Fail with the recovery command unless the box's status is one of `allowed`."""
    if record.status in allowed:
        return
    n = record.name
    needs_live = bool(set(allowed) & set(LIVE))
    if record.status == "error":
        raise StateError(f"box '{n}' is not running — {record.last_error or CRASHED}",
                         f"microbox delete {n}", "to clear it")
    if record.status in ("stopped", "created") and needs_live:
        raise StateError(f"box '{n}' is not running", f"microbox start {n}")
    if record.status == "paused" and "running" in allowed:
        raise StateError(f"box '{n}' is paused", f"microbox resume {n}")
    if record.status == "running" and "paused" in allowed:
        raise StateError(f"box '{n}' is running, not paused")
    if record.status in LIVE:
        raise StateError(f"box '{n}' is {record.status}", f"microbox stop {n}")
    if record.status == "starting":
        raise StateError(f"box '{n}' is still starting")
    raise StateError(f"box '{n}' is {record.status}")
