"""Box lifecycle as transactions: every step is undone if a later one fails."""

from __future__ import annotations

import os
import secrets
import time
import uuid
from dataclasses import dataclass

from microbox.core import vm
from microbox.core.reconcile import box_dir
from microbox.core.spec import BoxSpec
from microbox.errors import NotFound
from microbox.guest.channel import Channel
from microbox.images import busybox, store
from microbox.store import boxes
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database

BUILTIN_IMAGES = {busybox.NAME: busybox.build}


def resolve_image(db: Database, name: str) -> store.Image:
    image = store.find(db, name)
    if image is not None:
        return image
    builder = BUILTIN_IMAGES.get(name)
    if builder is None:
        raise NotFound(f"no image named {name!r}", "microbox image list")
    return builder(db)


def create(db: Database, spec: BoxSpec, *, name: str | None = None,
           auto_remove: bool = False, status: str = "created") -> tuple[BoxRecord, int]:
    """Validate, then make the dir, the disk and the row; or nothing at all.

    Returns the record and the fd of the box lock, held so that no other
    process mistakes the half-made box for a dead one. Pass it to start(), or
    close it to release the box.
    """
    spec.validate()
    image = resolve_image(db, spec.image)
    box_id = uuid.uuid4().hex
    record = BoxRecord(id=box_id, name=name or f"box-{secrets.token_hex(4)}", image=image.name,
                       spec={**spec.to_json(), "image_digest": image.digest},
                       status=status, auto_remove=auto_remove)
    d = box_dir(record)
    d.create()
    lock_fd = -1
    try:
        lock_fd = d.take_lock()
        vm.create_disk(image.path, d.disk)
        boxes.insert(db, record)
    except BaseException:
        if lock_fd >= 0:
            os.close(lock_fd)
        d.remove()
        raise
    return record, lock_fd


@dataclass
class Started:
    record: BoxRecord
    vm: vm.Running | None  # None when this process did not start the VM
    channel: Channel


def start(db: Database, record: BoxRecord, lock_fd: int, *, attached: bool,
          log: vm.Log = vm._quiet) -> Started:
    """Boot the box; `lock_fd` (the held box lock) passes to the VMM and is closed here."""
    spec = BoxSpec.from_json(record.spec)
    running, channel = vm.boot(box_dir(record), spec, lock_fd, attached=attached,
                               hostname=record.name, log=log)
    record = record.with_(status="running", started_at=time.time(), pid=running.pid,
                          pid_start=running.pid_start, last_error=None)
    try:
        boxes.update(db, record)
    except BaseException:
        channel.close()
        running.kill()
        raise
    return Started(record, running, channel)


def destroy(db: Database, record: BoxRecord, running: vm.Running | None = None) -> None:
    """Kill the VMM if any, remove the box dir and the row. Idempotent."""
    d = box_dir(record)
    if running is not None:
        running.kill()
    elif record.pid is not None and d.alive():
        from microbox.vmm import process

        if process.same_process(record.pid, record.pid_start):
            process.kill_group(record.pid)
    d.remove()
    boxes.delete(db, record.id)


def stop(db: Database, record: BoxRecord, running: vm.Running | None,
         channel: Channel | None, timeout: float = 10.0) -> BoxRecord:
    """Graceful first (the agent syncs and powers off), then SIGTERM, then SIGKILL."""
    pid = running.pid if running is not None else record.pid
    alive = pid is not None and box_dir(record).alive()
    if alive and pid is not None and not vm.stop_gracefully(pid, channel, timeout):
        vm.terminate(pid, grace=timeout / 2)
    if channel is not None:
        channel.close()
    if running is not None and running.proc is not None:
        running.proc.wait()
    record = record.with_(status="stopped", finished_at=time.time(), pid=None, pid_start=None)
    boxes.update(db, record)
    return record


def sweep(db: Database) -> list[str]:
    """Remove `--rm` boxes whose owner died (their VM is gone): reconcile's cleanup."""
    removed = []
    for record in boxes.all_boxes(db):
        orphaned = record.auto_remove and record.status in ("starting", "running", "paused")
        if orphaned and not box_dir(record).alive():
            destroy(db, record)
            removed.append(record.id)
    return removed
