"""Acting on existing boxes: start, stop, restart, pause, resume, set, delete, connect.

Every function takes a reconciled record and refuses, with the recovery
command, when the box's state does not allow the action. The functions that
make or end a VM import lifecycle (QEMU, networks, images) when they run, so
opening a session with a running box (`microbox exec`) does not load it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from microbox.agent.channel import Channel
from microbox.core import shim
from microbox.core.boxdir import box_dir
from microbox.core.reconcile import ended_by_main, require
from microbox.core.states import CRASHED, TRANSITIONS, Action
from microbox.errors import (
    AgentError,
    InvalidSpec,
    MicroboxError,
    StateError,
    UsageError,
    VMError,
)
from microbox.store import boxes, events
from microbox.store.boxes import BoxRecord
from microbox.store.db import Database
from microbox.store.status import Status
from microbox.vmm import process, qmp

if TYPE_CHECKING:
    from microbox.core.log import Log

CONNECT_TIMEOUT = 10.0


def start(db: Database, record: BoxRecord, log: Log) -> BoxRecord:
    """Boot a created, stopped or crashed box, detached from this process."""
    from microbox.core import lifecycle

    require(record, "start")
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
    require(record, "exec")
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
    n = record.name
    if record.pid is None or not process.wait_exit(record.pid, LOST_GRACE):
        if error.recovery:
            return error
        # The box runs on: its shim (every client's way in) or the agent's
        # session went away. The next command starts a new shim if need be.
        return AgentError(f"box '{n}' is still running, but {error.message}",
                          f"microbox exec {n} -- true", "to reconnect and check it answers")
    if ended_by_main(record):
        return StateError(f"box '{n}' stopped: its main process exited")
    return StateError(f"box '{n}' is not running — {CRASHED}", f"microbox delete {n}",
                      "to clear it")


def stop(db: Database, record: BoxRecord, timeout: float = 10.0) -> BoxRecord:
    """Graceful stop: the agent syncs the disk and powers off; then SIGTERM, SIGKILL."""
    from microbox.core import lifecycle

    if record.status in TRANSITIONS["stop"].idle:
        return record
    require(record, "stop")
    if record.status == Status.PAUSED:
        record = resume(db, record)
    channel = None
    with contextlib.suppress(VMError):  # no agent to ask: lifecycle.stop goes to SIGTERM
        channel = connect(record, timeout=min(timeout, CONNECT_TIMEOUT))
    return lifecycle.stop(db, record, None, channel, timeout)


def pause(db: Database, record: BoxRecord) -> BoxRecord:
    """Freeze the vCPUs (QMP stop)."""
    return _set_vcpus(db, record, "pause", "stop")


def resume(db: Database, record: BoxRecord) -> BoxRecord:
    """Thaw the vCPUs (QMP cont)."""
    return _set_vcpus(db, record, "resume", "cont")


def _set_vcpus(db: Database, record: BoxRecord, action: Action, command: str) -> BoxRecord:
    """Pause or resume: the QMP `command`, then the status the table gives `action`."""
    require(record, action)
    d = box_dir(record)
    qmp.command(d.qmp, d.qmp_lock, command)
    record = record.with_(status=TRANSITIONS[action].to)
    boxes.update(db, record)
    events.of_box(action, record)
    return record


SETTABLE = ("cpus", "memory_mib", "net", "allow_hosts", "allow_cidrs", "deny_all",
            "allow_private", "add_hosts")


POLICY: dict[str, Any] = {"allow_hosts": (), "allow_cidrs": (), "deny_all": False,
                          "allow_private": False, "add_hosts": ()}


def set_spec(db: Database, record: BoxRecord, *, reset_policy: bool = False,
             **changes: Any) -> BoxRecord:
    """Change a stopped box's CPUs, memory or network (None leaves a value as
    it is; reset_policy first drops its egress policy); applied at its next
    start. The result is validated whole."""
    require(record, "set")
    unknown = sorted(set(changes) - set(SETTABLE))
    if unknown:
        raise UsageError(f"set cannot change {unknown[0]}; it changes "
                         f"{', '.join(SETTABLE)}")
    given = {k: v for k, v in changes.items() if v is not None}
    base = replace(record.spec, **POLICY) if reset_policy else record.spec
    changed = replace(base, **given)
    kept = [k for k, v in POLICY.items() if getattr(changed, k) != v and k not in given]
    if changed.net == "none" and kept:
        raise InvalidSpec(f"box '{record.name}' has an egress policy ({kept[0]}), which "
                          "--net none would drop; add --reset-policy to drop it")
    if changed.validate().net == "tap":
        from microbox.net import tap

        tap.available()  # root, /dev/net/tun, nftables
    record = record.with_(spec=changed)
    boxes.update(db, record)
    return record


def delete(db: Database, record: BoxRecord, force: bool = False) -> None:
    from microbox.core import lifecycle

    if not force:
        require(record, "delete")
    lifecycle.destroy(db, record)
