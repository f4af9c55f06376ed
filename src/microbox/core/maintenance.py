"""gc, cleanup and kill: removing what no live box owns, never a live box."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from microbox import paths
from microbox.core import vm
from microbox.core.boxdir import BoxDir
from microbox.core.orphans import VMM
from microbox.core.reconcile import reconcile, vanishes
from microbox.errors import StateError
from microbox.store import boxes
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.vmm import process


@dataclass
class GcReport:
    rows: list[str] = field(default_factory=list)  # ids of --rm boxes whose VM is gone
    dirs: list[str] = field(default_factory=list)  # box dirs that belong to no box


def gc(db: Database, dry_run: bool = False) -> GcReport:
    report = GcReport()
    known = set()
    for record in boxes.all_boxes(db):
        known.add(record.id)
        if vanishes(record):
            report.rows.append(record.id)
            if not dry_run:
                reconcile(db, record)
    root = paths.boxes_dir()
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if d.name in known or not d.is_dir() or BoxDir(d).alive():
                continue
            report.dirs.append(str(d))
            if not dry_run:
                BoxDir(d).remove()
    return report


def cleanup_candidates(records: list[BoxRecord], include_running: bool) -> list[BoxRecord]:
    """Stopped and crashed boxes; with include_running, every box."""
    if include_running:
        return list(records)
    return [r for r in records if r.status in ("stopped", "created", "error")]


def kill_vmm(target: VMM) -> bool:
    """SIGKILL the VMM's process group if it is still the process we asked about.

    Returns False (and kills nothing) when the pid now belongs to another process.
    """
    if not process.same_process(target.pid, target.started):
        return False
    try:
        os.killpg(target.pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    except PermissionError:
        raise StateError(f"not allowed to kill process {target.pid}") from None
    vm.wait_exit(target.pid, 10.0)
    d = BoxDir(Path(target.box_dir))
    if not d.alive():  # no owner left: its sockets and client locks are stale
        d.remove_runtime_files()
    return True
