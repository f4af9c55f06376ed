"""gc, cleanup and kill: removing what no live box owns, never a live box."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from microbox import paths, volumes
from microbox.artifacts import agent
from microbox.core import orphans, snapshots, templates, vm
from microbox.core.boxdir import BoxDir, creating
from microbox.core.orphans import VMM
from microbox.core.reconcile import reconcile, vanishes
from microbox.core.templates import Template
from microbox.errors import StateError
from microbox.net import tap
from microbox.store import boxes
from microbox.store import images as image_rows
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.status import DOWN
from microbox.vmm import process


@dataclass
class GcReport:
    rows: list[str] = field(default_factory=list)  # ids of --rm boxes whose VM is gone
    dirs: list[str] = field(default_factory=list)  # box dirs that belong to no box
    templates: list[str] = field(default_factory=list)  # stale ones that no box uses
    snapshots: list[str] = field(default_factory=list)  # removed or fork's own, unused
    shims: list[int] = field(default_factory=list)  # pids of shims that outlived their VM
    networks: list[str] = field(default_factory=list)  # --net tap pieces no live box owns
    staging: list[str] = field(default_factory=list)  # work of killed pulls, builds, volumes


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
        with creating(shared=False):  # no create is between mkdir and flock now
            for d in sorted(root.iterdir()):
                if d.name not in known and d.is_dir() and _remove_unowned(db, BoxDir(d), dry_run):
                    report.dirs.append(str(d))
    report.snapshots, report.templates = _sweep_templates(db, dry_run)
    for stray in orphans.stray_shims():
        report.shims.append(stray.pid)
        if not dry_run:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stray.pid, signal.SIGKILL)
            process.wait_exit(stray.pid, 5.0)
    if os.geteuid() == 0:  # only root makes (and can remove) box networks
        report.networks = tap.sweep(dry_run)
    from microbox.images import filestore

    report.staging = filestore.sweep_abandoned(dry_run) + volumes.sweep_abandoned(dry_run)
    return report


def _backings() -> set[str]:
    """What box disks and snapshots are backed by (`templates/K`, `snapshots/I`)."""
    found = set()
    root = paths.boxes_dir()
    if root.is_dir():
        for d in root.iterdir():
            name = templates.used_by(BoxDir(d))
            if name is not None:
                found.add(name)
    for snap in snapshots.all_snapshots():
        backing = Template(snap.path).meta.get("backing")
        if isinstance(backing, str):
            found.add(backing)
    return found


def _sweep_templates(db: Database, dry_run: bool) -> tuple[list[str], list[str]]:
    """Templates that are stale (or discarded) and back no box's disk.

    Under the boxes lock, shared by commands making a box: none can start
    using a template while the sweep decides.
    """
    with creating(shared=False):
        snaps = snapshots.sweep(_backings(), dry_run)
        referenced = _backings()  # without the snapshots just removed
        digests = {image.digest for image in image_rows.all_images(db)}
        current = templates.current_names(digests, shutil.which("qemu-system-x86_64"),
                                          vm.default_kernel(), agent.initramfs_path())
        return snaps, templates.sweep(referenced, current, dry_run)


def _remove_unowned(db: Database, d: BoxDir, dry_run: bool) -> bool:
    """Remove `d` if no process holds it and no row names it, both checked under its lock.

    The row is read again after taking the lock: a create that finished after
    gc listed the rows has released the lock by now, and its row is visible.
    """
    lock = d.take_lock()
    if lock is None:
        return False  # a VMM, or a command making or starting this box
    with lock:
        if boxes.get(db, d.path.name) is not None:
            return False
        if not dry_run:
            d.remove()
        return True


def cleanup_candidates(records: list[BoxRecord], include_running: bool) -> list[BoxRecord]:
    """Stopped and crashed boxes; with include_running, every box but a pool's
    waiting ones (`pool rm` removes those)."""
    if include_running:
        return [r for r in records if r.pool is None]
    return [r for r in records if r.status in DOWN]


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
    process.wait_exit(target.pid, 10.0)
    d = BoxDir(Path(target.box_dir))
    if not d.alive():  # no owner left: its sockets and client locks are stale
        d.remove_runtime_files()
    return True
