"""Acting on existing boxes: start, stop, restart, pause, resume, set, delete, connect.

Every function takes a reconciled record and refuses, with the recovery
command, when the box's state does not allow the action.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

from microbox.agent.channel import Channel
from microbox.core import lifecycle, shim, vm
from microbox.core.lifecycle import box_dir
from microbox.core.reconcile import CRASHED, ended_by_main, require
from microbox.errors import AgentError, MicroboxError, StateError, VMError
from microbox.store import boxes
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.vmm import process, qmp

CONNECT_TIMEOUT = 10.0


def start(db: Database, record: BoxRecord, log: vm.Log = vm._quiet) -> BoxRecord:
    """Boot a created, stopped or crashed box, detached from this process."""
    require(record, "created", "stopped", "error")
    d = box_dir(record)
    lock = d.take_lock()
    if lock is None:
        raise StateError(f"box '{record.name}' is being started or stopped by another "
                         "command")
    started = lifecycle.start(db, record, lock, attached=False, log=log)
    started.channel.close()
    return started.record


def connect(record: BoxRecord, timeout: float = CONNECT_TIMEOUT) -> Channel:
    """A new agent session with a running box (through its shim). When the
    session ends because the box died, its errors say so, with the recovery."""
    require(record, "running")
    d = box_dir(record)
    try:
        channel = shim.connect(d, time.monotonic() + timeout, record.spec.ports)
    except AgentError as exc:
        lost = _lost(record, exc)
        if lost is not exc:
            raise lost from None
        raise VMError(f"box '{record.name}' does not answer: {exc.message}") from None
    channel.on_lost = lambda exc: _lost(record, exc)
    return channel


LOST_GRACE = 2.0  # the VMM closes its sockets as it exits: give it that long to be gone


def _lost(record: BoxRecord, error: AgentError) -> MicroboxError:
    """What a lost agent connection means: the box ended (its main process
    exited, or its VM crashed), or, if it still runs, the error itself."""
    if record.pid is None or not process.wait_exit(record.pid, LOST_GRACE):
        return error
    n = record.name
    if ended_by_main(record):
        return StateError(f"box '{n}' stopped: its main process exited")
    return StateError(f"box '{n}' is not running — {CRASHED}", f"microbox delete {n}",
                      "to clear it")


def stop(db: Database, record: BoxRecord, timeout: float = 10.0) -> BoxRecord:
    """Graceful stop: the agent syncs the disk and powers off; then SIGTERM, SIGKILL."""
    if record.status in ("stopped", "created"):
        return record
    require(record, "running", "paused")
    if record.status == "paused":
        record = resume(db, record)
    channel = None
    with contextlib.suppress(VMError):  # no agent to ask: lifecycle.stop goes to SIGTERM
        channel = connect(record, timeout=min(timeout, CONNECT_TIMEOUT))
    return lifecycle.stop(db, record, None, channel, timeout)


def restart(db: Database, record: BoxRecord, timeout: float = 10.0,
            log: vm.Log = vm._quiet) -> BoxRecord:
    record = stop(db, record, timeout)
    return start(db, record, log)


def pause(db: Database, record: BoxRecord) -> BoxRecord:
    """Freeze the vCPUs (QMP stop)."""
    return _set_vcpus(db, record, "running", "stop", "paused")


def resume(db: Database, record: BoxRecord) -> BoxRecord:
    """Thaw the vCPUs (QMP cont)."""
    return _set_vcpus(db, record, "paused", "cont", "running")


def _set_vcpus(db: Database, record: BoxRecord, from_: str, command: str,
               to: str) -> BoxRecord:
    require(record, from_)
    d = box_dir(record)
    qmp.command(d.qmp, d.qmp_lock, command)
    record = record.with_(status=to)
    boxes.update(db, record)
    return record


def set_resources(db: Database, record: BoxRecord, *, cpus: int | None,
                  memory_mib: int | None) -> BoxRecord:
    """Change CPUs or memory of a stopped box; applied at its next start."""
    require(record, "created", "stopped")
    changed = replace(record.spec,
                      cpus=record.spec.cpus if cpus is None else cpus,
                      memory_mib=record.spec.memory_mib if memory_mib is None else memory_mib)
    record = record.with_(spec=changed.validate())
    boxes.update(db, record)
    return record


def delete(db: Database, record: BoxRecord, force: bool = False) -> None:
    if record.status in ("running", "paused", "starting") and not force:
        raise StateError(f"box '{record.name}' is {record.status}",
                         f"microbox delete -f {record.name}", "to kill and delete it")
    lifecycle.destroy(db, record)
