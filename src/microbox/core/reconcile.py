"""Reconcile a box's stored status with reality before acting on it.

The database holds intent; the box lock says whether a VMM is alive. A box
the database calls running whose lock is free has crashed: it becomes
`error` (or, for a `--rm` box, is removed), and every action on it fails with
one sentence naming the way out. A `starting` box whose starter died is rolled
back.
"""

from __future__ import annotations

import contextlib
import time

from microbox import locks
from microbox.core.boxdir import box_dir
from microbox.core.states import CRASHED, TRANSITIONS, Action, refusal
from microbox.errors import MicroboxError, NotFound
from microbox.store import boxes, events
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.status import HAS_VM, LIVE, Status
from microbox.vmm import process

# What the agent prints on the console when a box's main process ended it.
MAIN_EXITED = b"microbox-agent: main process exited: "
_TAIL = 4096


def ended_by_main(record: BoxRecord) -> bool:
    """True if the box powered off because its main process exited (run -d CMD),
    as its console says, rather than crashed. The console is the guest's word,
    which decides only between two statuses of the guest's own box."""
    try:
        with open(box_dir(record).console_log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - _TAIL))
            return MAIN_EXITED in f.read()
    except OSError:
        return False


def starter_alive(record: BoxRecord) -> bool:
    return process.same_process(record.pid or 0, record.pid_start)


def vanishes(record: BoxRecord) -> bool:
    """True if reconcile would remove this box: a dead `--rm` box (a pool's
    spare is one), or a pending create whose starter died."""
    if record.status == Status.STARTING:
        return not starter_alive(record) and bool(
            record.pending or record.auto_remove)
    return record.auto_remove and record.status in HAS_VM and (
        not box_dir(record).alive() or owner_gone(record))


def owner_gone(record: BoxRecord) -> bool:
    """True for a `--rm` box taken from a pool by an attached command that died
    while its shim (which kills the VMM when the owner dies) was dead too: the
    box's owner.lock is there and nobody holds it. One stat otherwise."""
    owner = box_dir(record).owner
    return record.auto_remove and owner.exists() and not locks.is_held(owner)


def reconcile(db: Database, record: BoxRecord) -> BoxRecord | None:
    """The record as reality has it, persisted; None if the box no longer exists.
    A live box whose snapshot's saver died with its vCPUs stopped runs again."""
    if record.status == Status.STARTING:
        if starter_alive(record):
            return record  # its starter is still at work
    elif record.status not in HAS_VM:
        return record
    elif box_dir(record).alive() and not owner_gone(record):
        if record.status in LIVE and box_dir(record).frozen.exists():
            from microbox.core import freeze  # only here: exec's path stays light

            freeze.repair(box_dir(record), record.status)
        if record.status == Status.RUNNING and record.spec.ports:
            _serve_ports(record)
        return record
    # Reality differs from the record. lifecycle (VMs, networks, images) is
    # imported only now, so a command on a healthy box (`microbox exec`) does not
    # pay for loading it.
    from microbox.core import lifecycle

    if record.status == Status.STARTING:
        return lifecycle.abandon(db, record)
    lifecycle.end_network(record)
    if record.auto_remove and box_dir(record).alive():
        lifecycle.destroy(db, record)  # its owner is gone: no crash, a delete
        return None
    seen = record.status
    by_main = ended_by_main(record)
    if by_main:
        record = record.with_(status=Status.STOPPED, pid=None, pid_start=None,
                              finished_at=time.time())
        box_dir(record).remove_runtime_files()
    else:
        record = record.with_(status=Status.ERROR, pid=None, pid_start=None,
                              last_error=CRASHED)
    # Every command reconciles: the one whose write finds the row as it was
    # seen records the event, so it is written once.
    if boxes.update_if(db, record, seen):
        if by_main:
            events.of_box("stop", record, reason="its main process exited")
        else:
            events.of_box("crash", record, was=str(seen))
    if record.auto_remove:
        lifecycle.destroy(db, record)
        return None
    return boxes.get(db, record.id)  # as this command or another one left it


def _serve_ports(record: BoxRecord) -> None:
    """A running box's published ports are its shim's listeners: a shim that
    was killed gets a successor now, so the ports answer again after any
    command (a failure is left to the command that needs the shim to say)."""
    d = box_dir(record)
    if locks.is_held(d.shim_lock):
        return
    from microbox.core import shim

    with contextlib.suppress(MicroboxError, OSError):
        shim.ensure(d, record.spec.ports)


def reconcile_all(db: Database) -> list[BoxRecord]:
    seen = (reconcile(db, r) for r in boxes.all_boxes(db))
    return [r for r in seen if r is not None]


def resolve(db: Database, ref: str) -> BoxRecord:
    """A box by name, id or unique id prefix, reconciled."""
    record = reconcile(db, boxes.resolve(db, ref))
    if record is None:
        raise NotFound(f"box {ref!r} is gone: its owner exited and it was removed (--rm)")
    return record


def require(record: BoxRecord, action: Action) -> None:
    """Refuse `action` (a row of core/states.py's table) with the way on, unless
    the box's status is one the action accepts."""
    if record.status not in TRANSITIONS[action].accepts:
        raise refusal(record.name, record.status, action, record.last_error)
